"""Measure a compressed model: perplexity with its per-window data, HellaSwag, activation and Frobenius error.

Perplexity follows the SVD-LLM protocol (``experiments.evaluation.perplexity``: non-overlapping windows of
min(2048, context) tokens, last partial window dropped); each row keeps every window's summed NLL s_w and token
count t_w (``ppl_window_nll``, ``ppl_window_tokens``, as the pipeline's rows do), so its interval and its paired
ratio to any row on the same windows come from ``experiments.audit.measures`` (``ppl_interval``, ``ppl_ratio``:
bootstraps of ``experiments.audit.statistics``, the one home of intervals).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from experiments.compress import Compression, errors
from experiments.evaluation import hellaswag_lm_eval, perplexity
from experiments.surgery import installed
from theory.grassmann import Array


def evaluate_model(model: nn.Module, tokenizer: Any, test_ids: torch.Tensor, windows: int | None,
                   items: int | None) -> dict[str, Any]:
    """Perplexity on the first ``windows`` windows (None: all) with the per-window data; HellaSwag acc, acc_norm
    and their standard errors on the first ``items`` (None: all; 0: skipped)."""
    ppl = perplexity(model, test_ids, max_windows=windows, progress=False)
    row: dict[str, Any] = {"ppl": ppl.ppl, "ppl_protocol": ppl.protocol, "ppl_window_nll": list(ppl.window_nll),
                           "ppl_window_tokens": list(ppl.window_tokens), "windows": len(ppl.window_nll)}
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
    with installed(model, list(names), compression):      # restores the originals
        row = evaluate_model(model, tokenizer, test_ids, windows, items)
    return {**row, "frobenius_fraction": err["frobenius_fraction"], "activation_fraction": err["activation_fraction"],
            "ranks": compression.ranks, "params_kept": compression.n_params, "notes": compression.notes}
