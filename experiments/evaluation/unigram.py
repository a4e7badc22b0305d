"""A unigram language model fitted on token counts: the baseline "near-random language modeling" is judged
against (the tie-bs claim). It predicts every token with p(v) = (count(v) + 1) / (N + |V|) (add-one smoothing
over the vocabulary, N the number of counted tokens), whatever came before.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from experiments.errors import GbdError


def unigram_log_probs(train_ids: torch.Tensor, vocab_size: int) -> np.ndarray:
    """log p(v) for every v < ``vocab_size``: add-one smoothed relative frequencies of ``train_ids``."""
    ids = train_ids.reshape(-1).to(torch.long)
    if ids.numel() and int(ids.max()) >= vocab_size:
        raise GbdError(f"token id {int(ids.max())} is outside the vocabulary of {vocab_size}")
    counts = np.bincount(ids.numpy(), minlength=vocab_size).astype(float)
    return np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)


def unigram_window_nll(log_probs: np.ndarray, test_ids: torch.Tensor, seq_len: int, windows: int) -> list[float]:
    """Per window of the perplexity protocol (the first ``windows`` non-overlapping windows of ``seq_len``
    tokens), the summed -log p of its next-token predictions: tokens 1..seq_len-1 of the window."""
    ids = test_ids.reshape(-1)[: windows * seq_len].view(windows, seq_len)[:, 1:].numpy()
    return [float(-log_probs[w].sum()) for w in ids]


def unigram_baseline(train_ids: torch.Tensor, vocab_size: int, test_ids: torch.Tensor, seq_len: int, windows: int,
                     fitted_on: str) -> dict[str, Any]:
    """The unigram model's perplexity on the windows the rows were evaluated on, with its per-window NLLs."""
    nll = unigram_window_nll(unigram_log_probs(train_ids, vocab_size), test_ids, seq_len, windows)
    tokens = windows * (seq_len - 1)
    return {"ppl": math.exp(sum(nll) / tokens), "window_nll": nll, "window_tokens": [seq_len - 1] * windows,
            "fitted_on": f"{fitted_on}, {int(train_ids.numel())} tokens, add-one smoothing over {vocab_size} types"}
