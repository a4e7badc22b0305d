"""Calibration: seeded token windows and the per-layer input second moments Sigma_l = sum_t x_t x_t^T.

As in the GPTQ / SVD-LLM reference codes, forward pre-hooks on the target modules stream the
statistic over the calibration batches of the *uncompressed* model (no normalization by the token
count), and as GPTQ's per-layer object, one ``InputMoments`` per module owns its sum
(``add_batch``); ``CrossMoments`` is the same sum over two streams of the same tokens. Every float64
moment sum of the model layer is one of these two. Long runs are resumable: partial sums are
checkpointed atomically to a cache file keyed by the model, targets and tokens.
"""
from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm import tqdm

from experiments.cache import atomic_write, cache_key, code_version
from experiments.errors import GbdError
from experiments.model.loading import device_of

CALIBRATION_LIBRARIES = ("torch", "transformers")   # the model's forward pass; with this file, the cache's code
STATE_TYPES = {"key": str, "rows_done": int, "complete": bool, "moments": dict}


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


class _TokenSum:
    """A float64 matrix summed over the tokens of streamed batches, with the number of tokens in it.

    The sum lives on the device of the batches; ``state_dict`` / ``load_state_dict`` carry it
    (on the CPU) and the count through a checkpoint."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.tokens = 0

    def _add(self, product: torch.Tensor, tokens: int) -> None:
        """sum += product (one batch's token sum), tokens += its token count."""
        if self.sum is None:
            self.sum = product
        elif self.sum.shape != product.shape:
            raise GbdError(f"a batch's moment is {tuple(product.shape)}, "
                           f"the sum so far {tuple(self.sum.shape)}")
        else:
            self.sum = self.sum.to(product.device).add_(product)
        self.tokens += tokens

    def state_dict(self) -> dict[str, Any]:
        """{"sum": the float64 sum on the CPU (a copy; None before any batch), "tokens": count}."""
        total = None if self.sum is None else self.sum.to("cpu", copy=True)
        return {"sum": total, "tokens": self.tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict`` (ValueError unless ``is_state``)."""
        if not self.is_state(state):
            raise ValueError(f"not a moment state: {state!r:.200}")
        self.sum = None if state["sum"] is None else state["sum"].clone()
        self.tokens = state["tokens"]

    @staticmethod
    def is_state(state: Any) -> bool:
        """Whether ``state`` is what ``state_dict`` writes: a count >= 0 and a float64 matrix
        (None before any batch)."""
        if not isinstance(state, Mapping) or set(state) != {"sum", "tokens"}:
            return False
        total, tokens = state["sum"], state["tokens"]
        if not isinstance(tokens, int) or tokens < 0:
            return False
        if total is None:
            return tokens == 0
        return isinstance(total, torch.Tensor) and total.dtype == torch.float64 and total.dim() == 2


class InputMoments(_TokenSum):
    """The input statistic of one module, owned by one object as GPTQ's per-layer ``H`` and
    ``nsamples`` are: Sigma = sum_t x_t x_t^T (float64, n x n, not divided by the count) over every
    token t of every batch added."""

    def add_batch(self, x: torch.Tensor) -> None:
        """Sigma += X^T X, X = ``x`` (..., n) as (tokens, n) rows."""
        rows = token_rows(x)
        self._add(gram_float64(rows), len(rows))

    def hook(self, module: nn.Module) -> RemovableHandle:
        """A forward pre-hook on ``module`` that adds every input it receives (its first argument,
        or the ``hidden_states`` keyword a block may be called with); remove it by the handle."""
        def add_input(_: nn.Module, args: tuple, kwargs: dict) -> None:
            self.add_batch(module_input(args, kwargs))
        return module.register_forward_pre_hook(add_input, with_kwargs=True)


class CrossMoments(_TokenSum):
    """C = sum_t x_t y_t^T (float64, n_x x n_y) over the tokens of paired batches: two streams of
    the same tokens (e.g. a layer's inputs in the original and in a compressed model)."""

    def add_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """C += X^T Y, X and Y = ``x`` (..., n_x) and ``y`` (..., n_y) as rows of the same
        tokens."""
        rows_x, rows_y = token_rows(x), token_rows(y)
        if len(rows_x) != len(rows_y):
            raise GbdError(f"paired batches hold {len(rows_x)} and {len(rows_y)} tokens")
        self._add(gram_float64(rows_x, rows_y), len(rows_x))


def token_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (..., n) as a float64 (tokens, n) matrix, detached from autograd."""
    return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)


def module_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The tensor a module was called on: its first argument, or the ``hidden_states`` keyword."""
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        raise GbdError("a captured module received no tensor input")
    return x


def gram_float64(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """X^T Y (X^T X when ``y`` is None) in float64 for X, Y (tokens, n), by torch's matmul on the
    model's own thread pool.

    numpy's ``a.T @ a`` (a symmetric rank-k update) is 1.5x faster alone, but called between
    torch's layers its BLAS threads compete with torch's spinning OpenMP threads: on 2 cores the
    hooks then cost 1.92x a plain forward pass, against 1.09x with torch's product (attention
    outputs of SmolLM2, 2 x 2048 tokens)."""
    x = x.to(torch.float64)
    return x.T @ (x if y is None else y.to(torch.float64))


def second_moments(model: nn.Module, names: list[str], input_ids: torch.Tensor, batch_size: int = 1,
                   progress: bool = True, cache: Path | None = None,
                   checkpoint_every: int = 8) -> dict[str, np.ndarray]:
    """Sigma[name] = sum over every token of the batch of x x^T, x the input of module ``name``
    (float64): one ``InputMoments`` per module, fed by its pre-hook, over batches of ``batch_size``
    rows.

    With ``cache``, partial sums are saved every ``checkpoint_every`` batches and at the end, and a run
    restarted with the same model, names and tokens resumes after the rows already done.
    """
    key = None if cache is None else cache_key(
        code_version([Path(__file__)], CALIBRATION_LIBRARIES),
        model_fingerprint(model), device_of(model), "\n".join(names),
        str(tuple(input_ids.shape)), input_ids.cpu().to(torch.long).numpy().tobytes())
    state = (_load_cache(cache, key)
             or {"key": key, "rows_done": 0, "complete": False, "moments": {}})
    moments = {name: InputMoments() for name in names}
    for name, saved in state["moments"].items():
        moments[name].load_state_dict(saved)
    if not state["complete"]:
        _accumulate(model, input_ids, moments, state, batch_size, progress, cache, checkpoint_every)
    return _checked(moments)


def _accumulate(model: nn.Module, input_ids: torch.Tensor, moments: dict[str, InputMoments],
                state: dict[str, Any], batch_size: int, progress: bool, cache: Path | None,
                checkpoint_every: int) -> None:
    """Run the remaining batches with each module's ``InputMoments`` hooked on; checkpoint to
    ``cache``."""
    device = next(model.parameters()).device
    starts = range(state["rows_done"], len(input_ids), batch_size)
    handles = [m.hook(model.get_submodule(name)) for name, m in moments.items()]
    try:
        with torch.no_grad():
            batches = tqdm(starts, desc="calibration", unit="batch", disable=not progress)
            for i, start in enumerate(batches):
                model(input_ids[start:start + batch_size].to(device), use_cache=False)
                state["rows_done"] = min(start + batch_size, len(input_ids))
                state["complete"] = state["rows_done"] == len(input_ids)
                if cache is not None and (state["complete"] or (i + 1) % checkpoint_every == 0):
                    _save_cache(cache, state, moments)
    finally:
        for handle in handles:
            handle.remove()


def _checked(moments: dict[str, InputMoments]) -> dict[str, np.ndarray]:
    """The sums as float64 numpy arrays, after checking every target was reached and is finite."""
    for name, m in moments.items():
        if m.sum is None:
            raise GbdError(f"calibration never reached module {name} "
                           "(no batch, or the module is not called)")
        if not torch.isfinite(m.sum).all():
            raise GbdError(f"the input second moment of {name} is not finite "
                           "(NaN/inf activations)")
    return {name: m.sum.cpu().numpy() for name, m in moments.items()}


def _load_cache(cache: Path | None, key: str | None) -> dict[str, Any] | None:
    """The cached state if ``cache`` exists, is readable and has ``key``; else None (with a warning)."""
    if cache is None or not Path(cache).exists():
        return None
    try:
        state = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: recompute rather than fail
        warnings.warn(f"ignoring unreadable calibration cache {cache} ({type(exc).__name__}: {exc})")
        return None
    if not _well_formed(state):
        warnings.warn(f"ignoring calibration cache {cache}: not a calibration state "
                      "(a file of another kind or an older format)")
        return None
    if state["key"] != key:
        warnings.warn(f"ignoring calibration cache {cache}: made for another model, target list, batch or code "
                      "version")
        return None
    return state


def _well_formed(state: Any) -> bool:
    """A dict with the keys and types ``_save_cache`` writes, its moments a dict of name ->
    ``InputMoments`` state (so a file of the older format, name -> bare float64 sum, is not one)."""
    return (isinstance(state, dict)
            and all(isinstance(state.get(k), t) for k, t in STATE_TYPES.items())
            and all(isinstance(n, str) and _TokenSum.is_state(s)
                    for n, s in state["moments"].items()))


def _save_cache(cache: Path, state: dict[str, Any], moments: dict[str, InputMoments]) -> None:
    """Atomically write ``state`` (key, rows_done, complete) with each module's ``InputMoments``
    state to ``cache``."""
    snapshot = {**state, "moments": {name: m.state_dict() for name, m in moments.items()}}
    atomic_write(cache, lambda f: torch.save(snapshot, f))
