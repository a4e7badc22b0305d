"""WikiText-2 perplexity by the SVD-LLM protocol (SPEC sections 3 and 7).

The corpus is tokenized once, cut into ``W = len(ids) // T`` non-overlapping windows of ``T`` tokens (the last
partial window is dropped), and
    PPL = exp( sum_w sum_{t=1}^{T-1} -log p(x_{w,t} | x_{w,<t}) / (W (T - 1)) ),
a token-weighted mean over the ``T - 1`` next-token predictions of every window; ``window_index`` evaluates a
drawn subset of the windows (``experiments.sampling``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from experiments.errors import GbdError

DEFAULT_SEQ_LEN = 2048  # SVD-LLM's evaluation window


CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")  # lm-eval's order


def model_context(model: nn.Module) -> int | None:
    """The model's maximum context length from its config (first of n_positions, max_position_embeddings, n_ctx)."""
    config = getattr(model, "config", None)
    for attr in CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenize_corpus(tokenizer, text: str) -> torch.LongTensor:
    """Token ids of the whole corpus, 1-D, exactly as the SVD-LLM code makes them.

    SVD-LLM calls ``tokenizer(text, return_tensors='pt').input_ids`` with the tokenizer's default
    ``add_special_tokens=True``; this is kept. For GPT-NeoX/Pythia nothing is added, and neither for the
    SmolLM2 GGUF tokenizer (BOS defined but not added: 304,986 WikiText-2 test tokens either way). A
    tokenizer that does add BOS would put exactly one at position 0 of the corpus (first window only).
    """
    if tokenizer is None:
        raise GbdError("no tokenizer given: the model needs its tokenizer to tokenize the corpus")
    if not text or not text.strip():
        raise GbdError("the corpus to tokenize is empty")
    return tokenizer(text, return_tensors="pt").input_ids[0].to(torch.long)


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and what it was computed over.

    ``ppl = exp(nll_sum / n_tokens)`` over the finite windows; ``nonfinite_windows`` counts the evaluated
    windows whose NLL was NaN/inf (excluded from ``nll_sum`` and ``n_tokens``, never silently).
    ``window_nll`` / ``window_tokens``: each evaluated window's summed NLL (non-finite ones as they came) and
    its number of predictions, in window order, for the intervals of ``experiments.audit.statistics``.
    """

    ppl: float
    nll_sum: float
    n_tokens: int
    n_windows: int
    windows_available: int
    seq_len: int
    nonfinite_windows: int
    protocol: str
    dtype: str = "float32"
    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()


def _resolve_seq_len(model: nn.Module, seq_len: int | None) -> int:
    """``seq_len`` if given, else min(2048, model context)."""
    if seq_len is None:
        context = model_context(model)
        seq_len = DEFAULT_SEQ_LEN if context is None else min(DEFAULT_SEQ_LEN, context)
    if seq_len < 2:
        raise GbdError(f"seq_len must be at least 2 (one prediction per window), got {seq_len}")
    return seq_len


def windows_available(model: nn.Module, ids: torch.Tensor, seq_len: int | None = None) -> int:
    """W = len(ids) // seq_len, the number of full windows of the protocol (``seq_len`` as in ``perplexity``)."""
    return ids.numel() // _resolve_seq_len(model, seq_len)


def _windows(ids: torch.Tensor, seq_len: int, max_windows: int | None,
             window_index: Sequence[int] | None = None) -> tuple[torch.Tensor, int]:
    """The windows ``window_index`` (indices into the ``len // seq_len`` full windows) or else the first
    ``min(max_windows, len // seq_len)``, as a (W, seq_len) tensor, and ``len // seq_len``."""
    if ids.dim() != 1:
        raise GbdError(f"token ids must be 1-D, got shape {tuple(ids.shape)}")
    available = ids.numel() // seq_len
    if available == 0:
        raise GbdError(f"corpus of {ids.numel()} tokens is shorter than one window of {seq_len} tokens")
    if max_windows is not None and max_windows < 1:
        raise GbdError(f"max_windows must be at least 1, got {max_windows}")
    every = ids[: available * seq_len].view(available, seq_len)
    if window_index is not None:
        if not window_index or min(window_index) < 0 or max(window_index) >= available:
            raise GbdError(f"window indices must be a non-empty subset of 0..{available - 1}")
        return every[torch.as_tensor(list(window_index), dtype=torch.long)], available
    return every[: available if max_windows is None else min(max_windows, available)], available


LOSS_CHUNK = 256  # positions per lm_head + cross-entropy chunk


PLAIN_HEAD_TYPES = ("gpt_neox", "llama", "mistral", "qwen2", "gpt2")  # logits = lm_head(backbone output), no scaling


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _window_nll(model: nn.Module, batch: torch.Tensor, chunk: int | None = LOSS_CHUNK) -> torch.Tensor:
    """Per-window summed next-token NLL, float64: sum_{t>=1} -log softmax(logits_{t-1})[x_t].

    With ``chunk`` and a model of PLAIN_HEAD_TYPES, the logits lm_head(h_t) of the backbone's last hidden
    states h_t are made and reduced ``chunk`` positions at a time, so the (T x vocab) logits never exist at once
    (less memory traffic); otherwise from the model's full logits.
    """
    if chunk is None or getattr(model.config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return _summed_nll(model(input_ids=batch, use_cache=False).logits[:, :-1], batch[:, 1:])
    hidden = model.base_model(input_ids=batch, use_cache=False).last_hidden_state[:, :-1]
    head, targets = model.get_output_embeddings(), batch[:, 1:]
    total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
    for start in range(0, targets.shape[1], chunk):
        total += _summed_nll(head(hidden[:, start:start + chunk]), targets[:, start:start + chunk])
    return total


def _summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_t -log softmax(logits[b, t])[targets[b, t]] per row b, float64 (softmax in float32 over the last dim)."""
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape).double().sum(dim=1)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    seq_len: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    dtype: str = "float32",
    chunk: int | None = LOSS_CHUNK,
    window_index: Sequence[int] | None = None,
) -> PerplexityResult:
    """Token-weighted perplexity over non-overlapping windows (the SVD-LLM protocol, see module docstring).

    ``seq_len`` defaults to min(2048, model context); ``window_index`` evaluates those windows (indices into the
    test set's windows, e.g. an ``experiments.sampling.Sample`` draw), else ``max_windows`` the first k windows.
    A window with non-finite NLL is counted in ``nonfinite_windows`` and left out of the average;
    if every window is non-finite the perplexity is NaN. ``dtype`` "bfloat16" runs the model under bfloat16
    autocast (the loss stays float32); ``chunk``: see ``_window_nll``.
    """
    if dtype not in DTYPES:
        raise GbdError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    seq_len = _resolve_seq_len(model, seq_len)
    windows, available = _windows(ids.to(torch.long), seq_len, max_windows, window_index)
    device = model_device(model)
    per_window: list[float] = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "float32"):
        for batch in tqdm(windows.split(batch_size), desc="perplexity", unit="batch", disable=not progress):
            per_window += _window_nll(model, batch.to(device), chunk).cpu().tolist()
    finite = [x for x in per_window if math.isfinite(x)]
    nll_sum, n_finite, n_bad = float(sum(finite)), len(finite), len(per_window) - len(finite)
    n_tokens = n_finite * (seq_len - 1)
    n = windows.shape[0]
    protocol = (
        f"SVD-LLM: {n} of {available} non-overlapping windows of {seq_len} tokens"
        f"{'' if n == available else ' (chosen windows)' if window_index is not None else ' (first windows only)'}"
        ", last partial window dropped, "
        f"token-weighted mean NLL over {seq_len - 1} next-token predictions per window"
    )
    return PerplexityResult(
        ppl=math.exp(nll_sum / n_tokens) if n_tokens else float("nan"),
        nll_sum=nll_sum,
        n_tokens=n_tokens,
        n_windows=n,
        windows_available=available,
        seq_len=seq_len,
        nonfinite_windows=n_bad,
        protocol=protocol,
        dtype=dtype,
        window_nll=tuple(per_window),
        window_tokens=(seq_len - 1,) * n,
    )
