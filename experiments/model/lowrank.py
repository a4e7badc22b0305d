"""Install compressed layers into a torch model as two factors, and save / load such models.

A layer y = W x + b compressed to W_hat = B A becomes ``LowRankLinear``: x -> B (A x) + b_hat, i.e.
``first`` (weight A, d x n_in, no bias) then ``second`` (weight B, n_out x d, bias b_hat). A D x D layer at
rank d keeps 2 d D parameters (+ D for a bias) instead of D^2. Layers of a Basis-Sharing group share one
``first`` module, so the model's parameter count counts the shared factor once.

On disk: ``save_pretrained`` output plus ``gbd_lowrank.json`` (MANIFEST), one entry per replaced module:
name, n_in, d, n_out, has_bias and ``shares_first_with`` (the module whose ``first`` it reuses, or null).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from experiments.errors import GbdError
from experiments.methods.factors import Compression, LowRankFactors
from experiments.methods.registry import compress
from experiments.model.adapters import adapter_for

MANIFEST = "gbd_lowrank.json"
ENTRY_KEYS = frozenset({"name", "n_in", "d", "n_out", "has_bias", "shares_first_with"})


class LowRankLinear(nn.Module):
    """x -> second(first(x)) = B A x + b_hat: ``first`` = Linear(n_in, d, no bias), ``second`` = Linear(d, n_out)."""

    def __init__(self, n_in: int, d: int, n_out: int, bias: bool, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.first = nn.Linear(n_in, d, bias=False, dtype=dtype, device=device)
        self.second = nn.Linear(d, n_out, bias=bias, dtype=dtype, device=device)

    @property
    def in_features(self) -> int:
        return self.first.in_features

    @property
    def out_features(self) -> int:
        return self.second.out_features

    @property
    def rank(self) -> int:
        return self.first.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def from_factors(cls, factors: LowRankFactors, dtype: torch.dtype,
                     device: torch.device | str) -> "LowRankLinear":
        """Module with first.weight = A, second.weight = B, second.bias = b_hat (cast to dtype/device)."""
        d, n_in = factors.A.shape
        module = cls(n_in, d, factors.B.shape[0], factors.bias is not None, dtype, device)
        with torch.no_grad():
            module.first.weight.copy_(torch.as_tensor(factors.A))
            module.second.weight.copy_(torch.as_tensor(factors.B))
            if factors.bias is not None:
                module.second.bias.copy_(torch.as_tensor(factors.bias))
        return module


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        raise GbdError(f"model has no module {name!r}") from e


def read_targets(model: nn.Module, kind: str = "attn_out") -> tuple[list[str], list[np.ndarray],
                                                                  list[np.ndarray | None]]:
    """The ``kind`` targets of every block (depth order): names, weights (n_out x n_in, float64), biases.

    A weight or bias with NaN or inf entries is an error naming its module."""
    adapter = adapter_for(model)
    names = adapter.target_names(model, kind)
    modules = [_module(model, n) for n in names]
    weights, biases = [adapter.weight(m) for m in modules], [adapter.bias(m) for m in modules]
    for name, W, b in zip(names, weights, biases):
        if not np.all(np.isfinite(W)) or (b is not None and not np.all(np.isfinite(b))):
            raise GbdError(f"the weight or bias of {name} has NaN or infinite entries")
    return names, weights, biases


def module_parameters(model: nn.Module, names: Sequence[str]) -> int:
    """Parameters stored by the named modules, a tensor shared between them (Basis Sharing's A) counted once."""
    unique = {id(p): p for n in names for p in _module(model, n).parameters()}
    return sum(p.numel() for p in unique.values())


def _low_rank_modules(model: nn.Module, names: list[str],
                      compression: Compression) -> dict[str, LowRankLinear]:
    """Name -> LowRankLinear of its factors (in compression order), in the replaced weight's dtype
    and device.

    Shapes are checked through the adapter, which reads every target as (n_out, n_in) (GPT-2's
    Conv1D included). Layers of a shared group reuse the first layer's ``first`` module.
    """
    if len(names) != len(compression.layers):
        raise GbdError(f"{len(names)} module names for {len(compression.layers)} compressed layers")
    adapter = adapter_for(model)
    new: list[LowRankLinear] = []
    for name, factors in zip(names, compression.layers):
        old = _module(model, name)
        shape = tuple(adapter.weight(old).shape)
        if shape != (factors.B.shape[0], factors.A.shape[1]):
            raise GbdError(f"{name} is {shape} (out, in) but its factors give "
                           f"{(factors.B.shape[0], factors.A.shape[1])}")
        new.append(LowRankLinear.from_factors(factors, old.weight.dtype, old.weight.device))
    for group in compression.shared or []:
        for i in group[1:]:
            new[i].first = new[group[0]].first
    return dict(zip(names, new))


def install(model: nn.Module, names: list[str], compression: Compression) -> None:
    """Replace each named linear map (in compression order) by a LowRankLinear of its factors, for
    good."""
    adapter = adapter_for(model)
    for name, module in _low_rank_modules(model, names, compression).items():
        adapter.replace(model, name, module)


@contextmanager
def swapped(model: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[nn.Module]:
    """Install ``replacements`` (module name -> module, through the adapter's ``replace``) for the
    duration of the block, then put the original modules back, also when the block raises: the
    model leaves as it came. An unknown name is refused before anything is replaced."""
    adapter = adapter_for(model)
    originals = {name: _module(model, name) for name in replacements}
    try:
        for name, module in replacements.items():
            adapter.replace(model, name, module)
        yield model
    finally:
        for name, module in originals.items():
            adapter.replace(model, name, module)


def installed(model: nn.Module, names: list[str],
              compression: Compression) -> ContextManager[nn.Module]:
    """``install`` the compression for the duration of the block (``swapped``): the model leaves as
    it came."""
    return swapped(model, _low_rank_modules(model, names, compression))


def compress_model(model: nn.Module, kind: str, sigmas_by_name: Mapping[str, Any], method: str, d: int,
                   **kw: Any) -> tuple[Compression, list[str]]:
    """Read the ``kind`` targets (``read_targets``), ``compress`` them, ``install`` the result (permanently)."""
    names, weights, biases = read_targets(model, kind)
    missing = [n for n in names if n not in sigmas_by_name]
    if missing:
        raise GbdError(f"no second moment for {missing}")
    sigmas = [np.asarray(torch.as_tensor(sigmas_by_name[n]).to(torch.float64).cpu()) for n in names]
    compression = compress(weights, sigmas, biases, method, d, **kw)
    install(model, names, compression)
    return compression, names


# ----------------------------------------------------------------------------------------------- save / load

def _manifest(model: nn.Module) -> list[dict[str, Any]]:
    """One entry per LowRankLinear, with the earlier module whose ``first`` it shares, if any."""
    owner: dict[int, str] = {}
    entries = []
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            entries.append({"name": name, "n_in": module.in_features, "d": module.rank,
                            "n_out": module.out_features, "has_bias": module.second.bias is not None,
                            "shares_first_with": owner.get(id(module.first))})
            owner.setdefault(id(module.first), name)
    return entries


def save_compressed(model: nn.Module, tokenizer: Any | None, path: str | Path) -> None:
    """save_pretrained (a shared ``first`` stored once) + MANIFEST (+ the tokenizer when given).

    Keys are saved as this model names them (``save_original_format=False``: no renaming back to legacy
    checkpoint names such as GPT-NeoX's ``embed_out``), so ``load_compressed`` can load them verbatim.
    """
    path = Path(path)
    entries = _manifest(model)
    state = model.state_dict()
    for e in entries:
        if e["shares_first_with"] is not None:
            del state[f"{e['name']}.first.weight"]
    model.save_pretrained(path, state_dict=state, save_original_format=False)  # keys as in this model
    (path / MANIFEST).write_text(json.dumps({"format": 1, "modules": entries}, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads((path / MANIFEST).read_text())["modules"]
        for e in entries:
            if ENTRY_KEYS - set(e):
                raise ValueError(f"entry {e} lacks {sorted(ENTRY_KEYS - set(e))}")
            if not all(isinstance(e[k], int) and e[k] > 0 for k in ("n_in", "d", "n_out")):
                raise ValueError(f"bad shape in {e}")
        return entries
    except FileNotFoundError as e:
        raise GbdError(f"{path} has no {MANIFEST}: not a model saved by save_compressed") from e
    except (ValueError, KeyError, TypeError) as e:
        raise GbdError(f"{path / MANIFEST} is corrupt: {e}") from e


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The saved tensors: model.safetensors, or every shard of model.safetensors.index.json."""
    index = path / "model.safetensors.index.json"
    try:
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard))
        return state
    except FileNotFoundError as e:
        raise GbdError(f"{path} lacks saved weights ({e.filename})") from e
    except (SafetensorError, ValueError, KeyError, OSError) as e:
        raise GbdError(f"saved weights in {path} are corrupt: {e}") from e


def _check_load(model: nn.Module, state: Mapping[str, torch.Tensor], missing: list[str],
                unexpected: list[str]) -> None:
    """Missing keys are allowed only when their tensor is shared with a loaded one (tied embeddings)."""
    full = model.state_dict()
    loaded_ptrs = {full[k].data_ptr() for k in state if k in full}
    untied = [k for k in missing if full[k].data_ptr() not in loaded_ptrs]
    if untied or unexpected:
        raise GbdError(f"saved weights do not match the architecture: missing {untied}, unexpected {unexpected}")


def load_compressed(path: str | Path) -> tuple[nn.Module, Any | None]:
    """Rebuild the architecture from config, install LowRankLinear modules per MANIFEST, load the weights.

    Returns (model in eval mode on CPU, tokenizer or None when none was saved).
    """
    path = Path(path)
    if not path.is_dir():
        raise GbdError(f"no saved compressed model at {path}")
    entries = _read_manifest(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise GbdError(f"cannot read the config in {path}: {e}") from e
    dtype = config.dtype if isinstance(config.dtype, torch.dtype) else getattr(torch, str(config.dtype), None)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    adapter = adapter_for(model)
    for e in entries:
        old = _module(model, e["name"])
        module = LowRankLinear(e["n_in"], e["d"], e["n_out"], e["has_bias"], old.weight.dtype, old.weight.device)
        if e["shares_first_with"] is not None:
            module.first = _module(model, e["shares_first_with"]).first
        adapter.replace(model, e["name"], module)
    state = _read_state(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise GbdError(f"saved weights do not match the architecture: {e}") from e
    _check_load(model, state, missing, unexpected)
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return model.eval(), tokenizer


__all__ = ["LowRankLinear", "read_targets", "module_parameters", "install", "installed", "swapped",
           "compress_model", "save_compressed", "load_compressed", "MANIFEST"]
