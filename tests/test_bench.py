"""experiments.bench: the quick benchmark's figures are well formed and its cross-checks hold (no speed tested)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.bench import random_problem, run_bench, sweep_distance, top_range_gram
from theory.bca import bca_untied, untied_sweep
from theory.grassmann import check_section, sin_theta_fro, top_range


@pytest.fixture(scope="module")
def bench() -> dict:
    return run_bench(quick=True)


def positive_finite(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_times_and_ratios_are_positive_and_finite(bench):
    bca, cal, ev = bench["bca"], bench["calibration"], bench["evaluation"]
    figures = [*bca["seconds"].values(), bca["naive_over_ours"], bca["gram_over_ours"],
               cal["hooked_s"], cal["plain_s"], cal["hooked_tok_s"], cal["plain_tok_s"], cal["hook_overhead"],
               ev["ours_s"], ev["lm_eval_s"], ev["ours_tok_s"], ev["lm_eval_tok_s"], ev["ours_over_lm_eval"]]
    assert all(positive_finite(x) for x in figures), figures
    assert set(bca["seconds"]) == {"top_range", "naive eigh F F^T", "Gram eigh F^T F"}
    assert bench["machine"]["cpu_count"] >= 1 and bench["machine"]["torch_threads"] >= 1


def test_sweep_methods_reach_the_same_subspaces(bench):
    distances = bench["bca"]["max_sin_theta_to_top_range"]
    assert distances["top_range"] < 1e-12  # the reference against itself: rounding only
    assert max(distances.values()) < 1e-8, distances


def test_evaluation_scores_the_same_windows_as_lm_eval(bench):
    ev, sizes = bench["evaluation"], bench["sizes"]
    assert ev["predictions_ours"] == sizes["windows"] * (sizes["seq_len"] - 1)
    assert ev["exact_round_trips"] == sizes["windows"]  # decoded windows re-encode to the same tokens...
    assert ev["predictions_lm_eval"] == ev["predictions_ours"] + sizes["windows"]  # ...plus each first token
    assert ev["nll_lm_eval"] > ev["nll_ours"] > 0  # the extra first-token terms are positive NLLs
    assert abs(ev["nll_rel_diff"]) < 0.03


def test_calibration_counts_every_window_token(bench):
    sizes, cal = bench["sizes"], bench["calibration"]
    assert cal["tokens"] == sizes["windows"] * sizes["seq_len"]
    assert cal["targets"] == 2  # the tiny GPT-NeoX has 2 attention output projections


def test_untied_sweep_is_one_sweep_of_bca_untied():
    stack, start = random_problem(L=3, n=24, d=5, seed=1)
    ours = untied_sweep(stack, start, 5)
    reference = bca_untied(stack, 5, init=start, max_sweeps=1).sections
    assert all(np.array_equal(a, b) for a, b in zip(ours, reference))
    assert sweep_distance(start, start) < 1e-12 and sweep_distance(ours, start) > 0.1


def test_gram_top_range_matches_svd_on_well_conditioned_factors():
    rng = np.random.default_rng(2)
    F = rng.standard_normal((80, 30)) @ np.diag(np.linspace(3.0, 1.0, 30))
    U = top_range_gram(F, 10)
    check_section(U, 80, 10)
    assert sin_theta_fro(U, top_range(F, 10)) < 1e-10


def test_gram_top_range_falls_back_when_rank_is_below_d():
    rng = np.random.default_rng(3)
    F = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 12))  # rank 3 < d = 6
    U = top_range_gram(F, 6)
    check_section(U, 40, 6)
    assert np.linalg.norm(F - U @ (U.T @ F)) < 1e-10 * np.linalg.norm(F)  # range(F) inside span(U)
    with pytest.raises(ValueError, match="NaN"):
        top_range_gram(np.full((10, 4), np.nan), 2)
