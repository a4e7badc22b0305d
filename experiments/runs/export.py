"""Write a compressed model to disk: two factors per layer, or a standard dense checkpoint any harness loads.

``gbd-audit compress`` calibrates and compresses with the pipeline (``experiments.runs.context.prepare`` and
``compress_config``: the report's options for the method), then writes either

- the factored model (``experiments.model.lowrank.save_compressed``): each target y = W x + b stored as A (d x n_in)
  and B (n_out x d) with b_hat, read back by ``experiments.model.lowrank.load_compressed``; the targets keep
  d (n_in + n_out) parameters instead of n_in n_out; or
- ``dense``: the same architecture with each target's weight replaced by W_hat = B A (and its bias by b_hat),
  saved by ``save_pretrained`` with the tokenizer: plain ``transformers.AutoModelForCausalLM.from_pretrained``
  and lm-eval's ``hf`` model load it without project code. It has the original's parameter count.

Beside either, ``gbd_compress.json`` records the method, ranks, calibration source and parameter counts.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.cache import ensure_writable
from experiments.errors import GbdError
from experiments.methods.factors import Compression
from experiments.methods.ranks import check_ratio, rank_for
from experiments.methods.registry import method_names
from experiments.model.adapters import adapter_for
from experiments.model.loading import LoadedModel
from experiments.model.lowrank import install, module_parameters, save_compressed
from experiments.runs.context import prepare
from experiments.runs.modes import mode as mode_named
from experiments.runs.plan import Config, configs
from experiments.runs.rows import compress_config

RECORD = "gbd_compress.json"


def export_config(method: str) -> Config:
    """The report's main-table configuration of ``method`` (its lambda, tying and convention); a method only
    in the registry (``experiments.methods.registry``) gets the default options. Unknown: a GbdError."""
    for config in configs(mode_named("full")):
        if config.method == method and config.table == "main":
            return config
    if method in method_names():
        return Config(method, method, "export")
    raise GbdError(f"unknown method {method!r}; choose one of {', '.join(method_names())}")


def check_export(method: str, ratio: float, out: Path) -> Config:
    """Everything ``compress_and_save`` can refuse without a model: the method, the ratio, a writable ``out``."""
    config = export_config(method)
    check_ratio(ratio)
    ensure_writable(out, "output folder")
    return config


def densify(model: nn.Module, names: list[str], compression: Compression) -> None:
    """Write W_hat = B A (float64 product, cast to the module's dtype) and b_hat into each named module in place,
    in the module's own layout (GPT-2's Conv1D stores W_hat^T). A bias where the module has none cannot be
    written into the standard architecture: a GbdError."""
    adapter = adapter_for(model)
    for name, factors in zip(names, compression.layers, strict=True):
        module = model.get_submodule(name)
        W_hat = np.asarray(factors.B, dtype=np.float64) @ np.asarray(factors.A, dtype=np.float64)
        if W_hat.shape != adapter.weight(module).shape:
            raise GbdError(f"{name} is {adapter.weight(module).shape} (out, in) but its factors give {W_hat.shape}")
        if factors.bias is not None and module.bias is None:
            raise GbdError(f"{name} has no bias but its compression has one: a dense checkpoint of this "
                           "architecture cannot hold it (write the factored model instead: drop --dense)")
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(W_hat.T if adapter.transposed else W_hat))
            if factors.bias is not None:
                module.bias.copy_(torch.as_tensor(factors.bias))


def without_gguf_quantizer(model: nn.Module) -> None:
    """A model read from a GGUF file holds float weights (dequantized on load) but keeps transformers' GGUF
    quantizer, which refuses ``save_pretrained``; the quantizer and its config are removed here with transformers'
    own ``remove_quantization_config``, so the model saves as an ordinary float checkpoint. Another quantization
    method, or weights that are not floating point: a GbdError."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = getattr(quantizer.quantization_config, "quant_method", None)
    if getattr(method, "value", method) != "gguf" or not all(p.is_floating_point() for p in model.parameters()):
        raise GbdError(f"the model is quantized ({getattr(method, 'value', method)}) and cannot be written as "
                       "float weights: load an unquantized model")
    quantizer.remove_quantization_config(model)


def save_dense(model: nn.Module, tokenizer: Any | None, path: Path) -> None:
    """``save_pretrained`` of the model (safetensors, config, generation config) and of its tokenizer if given."""
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def compress_and_save(loaded: LoadedModel, method: str, ratio: float, mode: str, seed: int, cache_dir: Path,
                      out: Path, kind: str = "attn_out", dense: bool = False,
                      progress: bool = True) -> dict[str, Any]:
    """Calibrate (cached), compress the ``kind`` targets with ``method`` at d = round(ratio D), write the model
    to ``out`` (factored, or ``dense``) and the record ``RECORD``; returns the record. The model in ``loaded`` is
    changed (compressed) in place."""
    config = check_export(method, ratio, out)
    ensure_writable(cache_dir, "cache folder")
    without_gguf_quantizer(loaded.model)              # a quantized model is refused before calibration
    ctx = prepare(loaded, mode_named(mode), seed, cache_dir, kind, progress)
    d = rank_for(ctx.weights, ratio)
    compression = compress_config(ctx, config, d, ctx.budget)
    model = loaded.model
    before = module_parameters(model, ctx.names)
    if dense:
        densify(model, ctx.names, compression)
        save_dense(model, loaded.tokenizer, out)
    else:
        install(model, ctx.names, compression)
        save_compressed(model, loaded.tokenizer, out)
    record = {"model": loaded.name, "method": method, "config": asdict(config), "kind": kind, "ratio": ratio,
              "d": d, "ranks": [int(r) for r in compression.ranks], "format": "dense" if dense else "factored",
              "mode": mode, "seed": seed, "calibration": ctx.sources["calibration"],
              "target_parameters_original": before, "target_parameters_kept": module_parameters(model, ctx.names),
              "notes": list(compression.notes)}
    (out / RECORD).write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record
