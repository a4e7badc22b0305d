"""Measure a compressed model: per-window perplexity with intervals, HellaSwag, activation and Frobenius error.

Perplexity follows the SVD-LLM protocol (experiments.evaluation.perplexity: non-overlapping windows of
min(2048, context) tokens, last partial window dropped). Every window has the same number of predictions, so
ppl = exp(mean_k m_k), m_k the mean NLL of window k; its 95 % interval is exp(mean +- t_{0.975, n-1} sd / sqrt n)
over windows. Against a baseline evaluated on the SAME windows the paired ratio ppl / ppl_base =
exp(mean_k (m_k - m_k^base)) gets the same t interval on the differences (windows vary far more than methods).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from experiments.compress import Compression, errors
from experiments.errors import GbdError
from experiments.evaluation import hellaswag_lm_eval, model_context, perplexity
from experiments.methods.hooks import swapped
from experiments.surgery import install
from theory.grassmann import Array

MAX_SEQ_LEN = 2048


def window_nlls(model: nn.Module, ids: torch.Tensor, windows: int | None) -> list[float]:
    """Mean next-token NLL of each of the first ``windows`` (None: all) windows of min(2048, context) tokens."""
    seq_len = min(MAX_SEQ_LEN, model_context(model) or MAX_SEQ_LEN)
    available = ids.numel() // seq_len
    windows = available if windows is None else windows
    if windows < 1 or available < windows:
        raise GbdError(f"asked for {windows} perplexity windows of {seq_len} tokens; the corpus has {available}")
    out = []
    for k in range(windows):
        r = perplexity(model, ids[k * seq_len:(k + 1) * seq_len], seq_len=seq_len, progress=False)
        out.append(r.nll_sum / r.n_tokens if r.n_tokens else float("nan"))
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; NaN bounds with fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def ppl_with_interval(nlls: Sequence[float]) -> dict[str, float]:
    """ppl and its 95 % interval from per-window mean NLLs."""
    mean, lo, hi = t_interval(nlls)
    return {"ppl": math.exp(mean), "ppl_low": math.exp(lo), "ppl_high": math.exp(hi)}


def paired_ratio(nlls: Sequence[float], base: Sequence[float]) -> dict[str, float]:
    """ppl / ppl_base on the same windows and its paired 95 % interval."""
    if len(nlls) != len(base):
        raise GbdError(f"paired ratio needs the same windows, got {len(nlls)} and {len(base)}")
    mean, lo, hi = t_interval(np.subtract(nlls, base))
    return {"ratio": math.exp(mean), "ratio_low": math.exp(lo), "ratio_high": math.exp(hi)}


def evaluate_model(model: nn.Module, tokenizer: Any, test_ids: torch.Tensor, windows: int | None,
                   items: int | None) -> dict[str, Any]:
    """Per-window NLLs and perplexity with interval; HellaSwag acc, acc_norm and stderr on the first ``items``
    (None: all; 0: skipped)."""
    nlls = window_nlls(model, test_ids, windows)
    row: dict[str, Any] = {"window_nlls": nlls, "windows": len(nlls), **ppl_with_interval(nlls)}
    if items != 0:
        hs = hellaswag_lm_eval(model, tokenizer, limit=items)
        row.update({"hellaswag_acc": hs.acc, "hellaswag_acc_stderr": hs.acc_stderr, "hellaswag_acc_norm":
                    hs.acc_norm, "hellaswag_acc_norm_stderr": hs.acc_norm_stderr, "hellaswag_n": hs.n})
    return row


def measure(model: nn.Module, tokenizer: Any, names: Sequence[str], weights: Sequence[Array],
            sigmas: Sequence[Array], compression: Compression, test_ids: torch.Tensor, windows: int | None,
            items: int | None) -> dict[str, Any]:
    """Errors on the calibration moments, then the model evaluated with ``compression`` installed (restored after)."""
    err = errors(weights, sigmas, compression)
    with swapped(model, {name: model.get_submodule(name) for name in names}):   # restores the originals
        install(model, list(names), compression)
        row = evaluate_model(model, tokenizer, test_ids, windows, items)
    return {**row, "frobenius_fraction": err["frobenius_fraction"], "activation_fraction": err["activation_fraction"],
            "ranks": compression.ranks, "notes": compression.notes}
