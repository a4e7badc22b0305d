"""The intervals and tests of experiments.audit.statistics against known cases: coverage of a known mean,
closed-form binomial tails, a paired comparison whose pairing removes the shared noise, the finite-population
correction, simulated power, and the coverage of every procedure measured on the committed full-size run."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.audit.statistics import (CONFIDENCE, FULL_RUN, accuracy, coverage, coverage_record, full_run,
                                          items_to_detect, paired_accuracy, perplexity_interval, perplexity_ratio,
                                          spearman_interval, windows_to_detect)


def test_perplexity_interval_covers_the_true_perplexity_about_95_percent_of_the_time():
    """Windows of 50 tokens with per-token NLL ~ N(mu, 1): the true perplexity is exp(mu)."""
    rng = np.random.default_rng(1)
    mu, windows, tokens, reps = 3.0, 30, 50, 200
    covered = 0
    for _ in range(reps):
        nll = rng.normal(mu, 1.0, size=(windows, tokens)).sum(axis=1)
        iv = perplexity_interval(nll, [tokens] * windows)
        covered += iv.low <= math.exp(mu) <= iv.high
    assert 0.88 <= covered / reps <= 0.99


def test_perplexity_interval_point_estimate_is_the_token_weighted_perplexity_and_drops_nonfinite_windows():
    iv = perplexity_interval([10.0, 20.0, float("nan"), 30.0], [10, 10, 10, 20])
    assert iv.estimate == pytest.approx(math.exp(60.0 / 40)) and iv.n == 3 and iv.low <= iv.estimate <= iv.high


def test_one_window_has_no_interval():
    iv = perplexity_interval([12.0], [10])
    assert not iv.defined and not iv.above(0) and not iv.below(1e9)


def test_paired_ratio_removes_the_shared_variation_between_windows():
    """Windows differ a lot (text difficulty), model a is worse than b by a constant 0.1 nats per token plus
    small noise: the paired interval is tight around exp(0.1); resampling a and b apart would not be."""
    rng = np.random.default_rng(2)
    tokens = np.full(12, 100)
    difficulty = rng.normal(3.0, 1.0, size=12) * tokens
    b = difficulty + rng.normal(0, 0.5, size=12)
    a = difficulty + 0.1 * tokens + rng.normal(0, 0.5, size=12)
    iv = perplexity_ratio(a, b, tokens)
    assert iv.estimate == pytest.approx(math.exp((a.sum() - b.sum()) / tokens.sum()))
    assert iv.low > 1 and iv.high - iv.low < 0.01
    assert iv.low <= math.exp(0.1) <= iv.high + 0.005


def test_an_interval_over_fewer_than_five_windows_is_shown_but_never_decides():
    tokens = [100] * 3
    iv = perplexity_ratio([900.0, 800.0, 700.0], [300.0, 250.0, 200.0], tokens)    # a large, steady effect
    assert iv.low > 1 and not iv.above(1) and "too few to decide" in iv.text()
    assert perplexity_ratio([900.0, 800.0, 700.0, 650.0, 600.0], [300.0, 250.0, 200.0, 150.0, 100.0],
                            [100] * 5).above(1)


def test_paired_ratio_of_identical_models_is_exactly_one():
    nll = [300.0, 250.0, 410.0]
    iv = perplexity_ratio(nll, nll, [100, 100, 100])
    assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_exact_mcnemar_against_the_hand_computed_binomial_tail():
    """n01 = 1 (only b right), n10 = 7 (only a right), 12 concordant items: p = 2 (C(8,0) + C(8,1)) / 2^8."""
    a = [1] * 7 + [0] * 1 + [1] * 6 + [0] * 6
    b = [0] * 7 + [1] * 1 + [1] * 6 + [0] * 6
    pair = paired_accuracy(a, b)
    assert (pair.b_only, pair.a_only) == (1, 7)
    assert pair.mcnemar_p == pytest.approx(2 * (1 + 8) / 256)
    assert pair.difference.estimate == pytest.approx(np.mean(b) - np.mean(a))
    diff = np.asarray(b, float) - np.asarray(a, float)
    assert pair.difference.high - pair.difference.estimate == pytest.approx(
        stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size), rel=1e-9)


def test_clopper_pearson_at_zero_successes_is_the_closed_form():
    iv, se = accuracy([0] * 10)
    assert iv.low == 0 and iv.high == pytest.approx(1 - ((1 - CONFIDENCE) / 2) ** (1 / 10)) and se == 0


def test_items_to_detect_gives_80_percent_power_in_simulation():
    p1, p2 = 0.435, 0.303
    n = items_to_detect(p1, p2)
    rng = np.random.default_rng(3)
    k1, k2 = rng.binomial(n, p1, 4000) / n, rng.binomial(n, p2, 4000) / n
    pooled = (k1 + k2) / 2
    z = (k1 - k2) / np.sqrt(2 * pooled * (1 - pooled) / n)
    assert 0.76 <= np.mean(np.abs(z) > 1.959964) <= 0.86


def test_windows_to_detect_scales_with_the_variance_over_windows():
    rng = np.random.default_rng(4)
    tokens = np.full(8, 100)
    noise = rng.normal(0, 1, 8) * 100
    base = np.full(8, 300.0)
    n1 = windows_to_detect(base + 0.1 * noise, base, tokens, 1.05)
    n2 = windows_to_detect(base + 0.2 * noise, base, tokens, 1.05)
    assert n2 == pytest.approx(4 * n1, rel=0.05)


def test_spearman_interval_of_a_monotone_relation_and_of_noise():
    x = np.arange(10.0)
    iv = spearman_interval(x, np.exp(x))
    assert (iv.estimate, iv.low, iv.high, iv.n) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0), 10)
    rng = np.random.default_rng(5)
    noise = spearman_interval(rng.normal(size=40), rng.normal(size=40))
    assert noise.low < 0 < noise.high


def test_finite_population_correction_shrinks_the_interval_by_sqrt_of_one_minus_the_sampled_share():
    """The t interval's half-width (log scale) is t_{n-1} sd / sqrt(n) without the correction, times
    sqrt(1 - n/N) with it; a sample of the whole set has no sampling error left."""
    rng = np.random.default_rng(6)
    a, b, tokens = rng.normal(300, 30, 10), rng.normal(280, 30, 10), np.full(10, 100)
    half = stats.t.ppf(0.975, 9) * np.std((a - b) / 100, ddof=1) / math.sqrt(10)
    infinite, forty = perplexity_ratio(a, b, tokens), perplexity_ratio(a, b, tokens, population=40)
    assert math.log(infinite.high) - math.log(infinite.estimate) == pytest.approx(half, rel=1e-9)
    assert math.log(forty.high) - math.log(forty.estimate) == pytest.approx(half * math.sqrt(1 - 10 / 40), rel=1e-9)
    whole = perplexity_interval(a, tokens, population=10)
    assert whole.low == whole.estimate == whole.high and whole.defined
    assert paired_accuracy([1, 0, 1, 1, 0], [0, 0, 1, 1, 1], population=5).difference.high == pytest.approx(0.0)
    with pytest.raises(ValueError, match="population"):
        perplexity_interval(a, tokens, population=9)


DRAWS = 300      # simulated samples per procedure: a coverage of 95 % is estimated with a standard error of 1.3 points


@pytest.fixture(scope="module")
def run():
    return full_run()


def test_the_committed_full_size_run_has_every_window_and_item_of_both_models(run):
    assert run.nll_a.size == run.nll_b.size == run.tokens.size == 148
    assert run.correct_a.size == run.correct_b.size == 10_042
    assert 0.33 < run.correct_a.mean() < 0.34      # the original model's accuracy on all items, as the report says


def test_random_windows_at_standard_size_cover_the_whole_test_set_and_contiguous_windows_do_not(run):
    """Standard draws 30 random windows: measured at 2,000 draws the PPL and paired-ratio intervals cover the
    whole-set value in 94.7 % of samples; 93 % is 1.3 standard errors of this 300-draw estimate below 95 %. The
    first 30 windows (contiguous, lag-1 autocorrelation about 0.47) cover the ratio in about 74 %: 0.88 lies more
    than 10 standard errors away on either side."""
    random = {c.procedure: c for c in coverage(run, 30, 0, "random", DRAWS)}
    first = {c.procedure: c for c in coverage(run, 30, 0, "first", DRAWS)}
    assert set(random) == {"PPL", "PPL ratio (paired)"} and all(c.draws == DRAWS for c in random.values())
    assert random["PPL"].fraction >= 0.93 and random["PPL ratio (paired)"].fraction >= 0.93
    assert first["PPL ratio (paired)"].fraction < 0.88


def test_random_items_at_standard_size_cover_the_accuracy_difference_on_all_items(run):
    """1,000 of 10,042 items: the paired difference's t interval with finite-population correction (measured
    94.4 % at 2,000 draws) and the Clopper-Pearson accuracy (conservative, 96.8 %); 0.92 is about 2 standard
    errors of a 300-draw estimate below 94.4 %."""
    cov = {c.procedure: c for c in coverage(run, 0, 1000, "random", DRAWS)}
    assert cov["accuracy difference (paired)"].fraction >= 0.92 and cov["HellaSwag accuracy"].fraction >= 0.93
    assert "finite-population correction (n = 1000 of N = 10042)" in cov["accuracy difference (paired)"].method


def test_the_whole_set_is_not_simulated_and_a_missing_full_run_is_said(run, tmp_path):
    whole = coverage(run, None, 0, "random", DRAWS)
    assert [c.draws for c in whole] == [0, 0] and all(math.isnan(c.fraction) for c in whole)
    assert "missing" in coverage_record([("surgery", 2, 40)], "random", tmp_path / "none.json")
    assert FULL_RUN.is_file()
