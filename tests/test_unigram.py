"""The unigram baseline: smoothed frequencies, the perplexity protocol's windows."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.errors import GbdError
from experiments.evaluation.unigram import unigram_baseline, unigram_log_probs


def test_unigram_probabilities_are_add_one_frequencies_and_sum_to_one():
    lp = unigram_log_probs(torch.tensor([0, 0, 0, 1]), 4)          # counts 3, 1, 0, 0 -> (4, 2, 1, 1) / 8
    assert np.exp(lp) == pytest.approx([0.5, 0.25, 0.125, 0.125])
    with pytest.raises(GbdError, match="outside the vocabulary"):
        unigram_log_probs(torch.tensor([5]), 4)


def test_unigram_perplexity_scores_only_the_windows_next_token_predictions():
    """Windows of 3 tokens: the first token of each window is context, never scored; a trailing partial window
    and windows beyond ``windows`` are dropped."""
    train = torch.tensor([0, 0, 0, 1])
    test = torch.tensor([3, 0, 0, 3, 1, 1, 2, 2, 2, 3])             # windows [3,0,0], [3,1,1], [2,2,2]
    base = unigram_baseline(train, 4, test, seq_len=3, windows=2, fitted_on="test")
    assert base["window_nll"] == pytest.approx([-2 * math.log(0.5), -2 * math.log(0.25)])
    assert base["ppl"] == pytest.approx(math.exp((2 * math.log(2) + 2 * math.log(4)) / 4))
