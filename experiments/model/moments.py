"""Calibration: seeded token windows and the per-layer input second moments Sigma_l = sum_t x_t x_t^T.

As in the GPTQ / SVD-LLM reference codes, forward pre-hooks on the target modules stream the statistic over
the calibration batches of the *uncompressed* model (no normalization by the token count). Long runs are
resumable: partial sums are checkpointed atomically to a cache file keyed by the model, targets and tokens.
"""
from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from experiments.cache import atomic_write, cache_key, code_version
from experiments.errors import GbdError
from experiments.model.loading import device_of

CALIBRATION_LIBRARIES = ("torch", "transformers")   # the model's forward pass; with this file, the cache's code
STATE_TYPES = {"key": str, "rows_done": int, "complete": bool, "sums": dict}


def check_windows(n: int, T: int, seed: int) -> None:
    """n >= 1 windows of T >= 1 tokens and a seed >= 0, else a GbdError."""
    if n < 1 or T < 1:
        raise GbdError(f"calibration needs n >= 1 sequences of T >= 1 tokens, got n={n}, T={T}")
    if seed < 0:
        raise GbdError(f"the calibration seed must be >= 0, got {seed}")


def calibration_batch(tokenizer: Any, text: str, n: int, T: int, seed: int) -> torch.LongTensor:
    """(n, T) windows ids[s_j : s_j + T] of the tokenized text, s_j ~ U{0..len-T} from default_rng(seed)."""
    check_windows(n, T, seed)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    if len(ids) < T:
        raise GbdError(f"calibration text has {len(ids)} tokens, fewer than the window length T={T}")
    starts = np.random.default_rng(seed).integers(0, len(ids) - T + 1, size=n)
    return torch.stack([ids[s:s + T] for s in starts])


def svd_llm_batch(tokenizer: Any, text: str, n: int, T: int, seed: int) -> torch.LongTensor:
    """(n, T) windows as SVD-LLM's get_calib_train_data draws them: with Python's ``random.seed(seed)``, for each
    window a character offset i ~ U{0..len(text) - T - 1} (``random.randint``), then the first T tokens of
    ``tokenizer(text[i : i + 10 T])``. A window shorter than T tokens is an error (SVD-LLM skips it)."""
    check_windows(n, T, seed)
    if len(text) <= T + 1:
        raise GbdError(f"calibration text has {len(text)} characters, too few for windows of T={T} tokens")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        i = rng.randint(0, len(text) - T - 1)
        ids = tokenizer(text[i:i + 10 * T])["input_ids"][:T]
        if len(ids) < T:
            raise GbdError(f"a calibration window at character {i} has {len(ids)} tokens, fewer than T={T}")
        rows.append(torch.tensor(ids, dtype=torch.long))
    return torch.stack(rows)


def calibration_windows(tokenizer: Any, source: Any, n: int, T: int, seed: int) -> torch.LongTensor:
    """The (n, T) calibration batch of an ``experiments.data.TextSource``, drawn as its ``windows`` says:
    "svd-llm" (``svd_llm_batch``) or token offsets (``calibration_batch``)."""
    draw = svd_llm_batch if source.windows == "svd-llm" else calibration_batch
    return draw(tokenizer, source.text, n, T, seed)


def model_fingerprint(model: nn.Module) -> bytes:
    """sha256 of every parameter's name, dtype and bytes: a cache must not outlive a change of weights."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{p.dtype}:{tuple(p.shape)}".encode())
        digest.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.digest()


def second_moments(model: nn.Module, names: list[str], input_ids: torch.Tensor, batch_size: int = 1,
                   progress: bool = True, cache: Path | None = None,
                   checkpoint_every: int = 8) -> dict[str, np.ndarray]:
    """Sigma[name] = sum over every token of the batch of x x^T, x the input of module ``name`` (float64).

    With ``cache``, partial sums are saved every ``checkpoint_every`` batches and at the end, and a run
    restarted with the same model, names and tokens resumes after the rows already done.
    """
    key = cache_key(code_version([Path(__file__)], CALIBRATION_LIBRARIES), model_fingerprint(model), device_of(model),
                    "\n".join(names), str(tuple(input_ids.shape)), input_ids.cpu().to(torch.long).numpy().tobytes())
    state = _load_cache(cache, key) or {"key": key, "rows_done": 0, "complete": False, "sums": {}}
    sums = dict(state["sums"])
    if not state["complete"]:
        _accumulate(model, names, input_ids, sums, state, batch_size, progress, cache, checkpoint_every)
    return _checked(names, sums)


def _accumulate(model: nn.Module, names: list[str], input_ids: torch.Tensor, sums: dict[str, torch.Tensor],
                state: dict[str, Any], batch_size: int, progress: bool, cache: Path | None,
                checkpoint_every: int) -> None:
    """Run the remaining batches with pre-hooks adding X^T X (float64) into ``sums``; checkpoint to ``cache``."""
    device = next(model.parameters()).device
    sums.update({name: s.to(device) for name, s in sums.items()})
    starts = range(state["rows_done"], len(input_ids), batch_size)
    handles = [model.get_submodule(name).register_forward_pre_hook(_adder(sums, name)) for name in names]
    try:
        with torch.no_grad():
            for i, start in enumerate(tqdm(starts, desc="calibration", unit="batch", disable=not progress)):
                model(input_ids[start:start + batch_size].to(device), use_cache=False)
                state["rows_done"] = min(start + batch_size, len(input_ids))
                state["complete"] = state["rows_done"] == len(input_ids)
                if cache is not None and (state["complete"] or (i + 1) % checkpoint_every == 0):
                    _save_cache(cache, state, sums)
    finally:
        for handle in handles:
            handle.remove()


def _adder(sums: dict[str, torch.Tensor], name: str) -> Callable[[nn.Module, tuple], None]:
    """Forward pre-hook: sums[name] += X^T X, X = the module input as (tokens, n_in) in float64."""
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        gram = gram_float64(args[0].detach().reshape(-1, args[0].shape[-1]))
        if name in sums:
            sums[name].add_(gram)
        else:
            sums[name] = gram
    return hook


def gram_float64(x: torch.Tensor) -> torch.Tensor:
    """X^T X in float64 for X (tokens, n), by torch's matmul on the model's own thread pool.

    numpy's ``a.T @ a`` (a symmetric rank-k update) is 1.5x faster alone, but called between torch's layers
    its BLAS threads compete with torch's spinning OpenMP threads: on 2 cores the hooks then cost 1.92x a
    plain forward pass, against 1.09x with torch's product (attention outputs of SmolLM2, 2 x 2048 tokens)."""
    x = x.to(torch.float64)
    return x.T @ x


def _checked(names: list[str], sums: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The sums as float64 numpy arrays, after checking every target was reached and is finite."""
    for name in names:
        if name not in sums:
            raise GbdError(f"calibration never reached module {name} (no batch, or the module is not called)")
        if not torch.isfinite(sums[name]).all():
            raise GbdError(f"the input second moment of {name} is not finite (NaN/inf activations)")
    return {name: sums[name].cpu().numpy() for name in names}


def _load_cache(cache: Path | None, key: str) -> dict[str, Any] | None:
    """The cached state if ``cache`` exists, is readable and has ``key``; else None (with a warning)."""
    if cache is None or not Path(cache).exists():
        return None
    try:
        state = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: recompute rather than fail
        warnings.warn(f"ignoring unreadable calibration cache {cache} ({type(exc).__name__}: {exc})")
        return None
    if not _well_formed(state):
        warnings.warn(f"ignoring calibration cache {cache}: not a calibration state (a file of another kind)")
        return None
    if state["key"] != key:
        warnings.warn(f"ignoring calibration cache {cache}: made for another model, target list, batch or code "
                      "version")
        return None
    return state


def _well_formed(state: Any) -> bool:
    """A dict with the keys and types ``_save_cache`` writes, its sums a dict of name -> float64 square tensor."""
    return (isinstance(state, dict) and all(isinstance(state.get(k), t) for k, t in STATE_TYPES.items())
            and all(isinstance(n, str) and isinstance(s, torch.Tensor) and s.dtype == torch.float64 and s.dim() == 2
                    for n, s in state["sums"].items()))


def _save_cache(cache: Path, state: dict[str, Any], sums: dict[str, torch.Tensor]) -> None:
    """Atomically write ``state`` (key, rows_done, complete) with the current partial sums to ``cache``."""
    snapshot = {**state, "sums": {name: s.cpu() for name, s in sums.items()}}
    atomic_write(cache, lambda f: torch.save(snapshot, f))
