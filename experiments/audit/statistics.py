"""Uncertainty of every measured number: intervals, paired comparisons, tests and sample sizes.

Perplexity over windows w = 1..W with summed next-token NLL s_w and token count t_w:
    PPL = exp(sum_w s_w / sum_w t_w).
Its 95 % interval is a percentile bootstrap over windows (windows resampled with replacement, the
statistic recomputed on each resample; the percentile method because the bias-corrected one is unstable
with the few windows of the quick and standard modes). Two configurations a, b evaluated on the same
windows give the ratio
    PPL(a) / PPL(b) = exp((sum_w s_w^a - sum_w s_w^b) / sum_w t_w),
whose interval resamples the SAME windows for both (a paired bootstrap): the window-to-window variation
of the text cancels and only the difference between the models is left.

HellaSwag, items i = 1..n with c_i in {0, 1} (the chosen ending is the gold one): acc = mean c_i with the
standard error sd(c, ddof=1) / sqrt(n) and an exact (Clopper-Pearson) interval. Two configurations on the
same items: the paired difference mean(c^b - c^a) with a normal interval from sd(c^b - c^a) / sqrt(n), and
the exact McNemar test: under "no difference" each of the n01 + n10 discordant items is equally likely to
favour either, so p = two-sided binomial test of n01 successes in n01 + n10 trials at 1/2.

Spearman rho over configurations: a percentile bootstrap over configurations (resamples whose ranks are
constant have no rho and are dropped; the count kept is reported).

Sample sizes for a two-sided test at level alpha with power 1 - beta (z the standard normal quantiles):
    items to tell accuracies p1, p2 apart    n = (z_{1-alpha/2} + z_{1-beta})^2 (p1 (1-p1) + p2 (1-p2)) / (p1-p2)^2
    (the unpaired normal approximation: a paired test needs fewer when the models agree on most items);
    windows to resolve a perplexity ratio r  n = ((z_{1-alpha/2} + z_{1-beta}) sd_w / ln r)^2,
    sd_w the standard deviation over windows of the per-window log ratio (s_w^a - s_w^b) / t_w.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MIN_BOOTSTRAP_UNITS = 5     # below this many windows / configurations a bootstrap interval is shown, not used to decide
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """An estimate, its ``CONFIDENCE`` interval [low, high] (NaN when it cannot be had), the sample size
    it rests on and the method, in words. ``decisive`` is False for a bootstrap over fewer than
    ``MIN_BOOTSTRAP_UNITS`` units (its percentiles are a few resampled values, far from 95 % coverage): such an
    interval is printed but never called significant."""

    estimate: float
    low: float
    high: float
    n: int
    method: str
    decisive: bool = True

    @property
    def defined(self) -> bool:
        return self.decisive and not (math.isnan(self.low) or math.isnan(self.high))

    def above(self, value: float) -> bool:
        """The whole interval lies above ``value``."""
        return self.defined and self.low > value

    def below(self, value: float) -> bool:
        """The whole interval lies below ``value``."""
        return self.defined and self.high < value

    def within(self, low: float, high: float) -> bool:
        """The whole interval lies inside [low, high]."""
        return self.defined and low <= self.low and self.high <= high

    def text(self, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
        """'estimate [low, high]' (n and the method are printed where the table says them)."""
        def f(x: float) -> str:
            return f"{scale * x:.{digits}g}"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{f(self.estimate)}{unit} [no interval, n = {self.n}]"
        caveat = "" if self.decisive else f" (n = {self.n}: too few to decide)"
        return f"{f(self.estimate)}{unit} [{f(self.low)}, {f(self.high)}]{caveat}"


def _finite_windows(*arrays: Sequence[float]) -> list[np.ndarray]:
    """The arrays restricted to the windows where every one of them is finite."""
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    if len({a.shape for a in arrs}) != 1 or arrs[0].ndim != 1:
        raise ValueError(f"per-window arrays must be 1-D and of one length, got {[a.shape for a in arrs]}")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return [a[keep] for a in arrs]


def _percentile_bootstrap(data: tuple[np.ndarray, ...], statistic, estimate: float, what: str) -> Interval:
    """scipy.stats.bootstrap, paired over the common axis (resampling the same indices in every array)."""
    n = data[0].size
    method = f"percentile bootstrap over {what}, paired, {RESAMPLES} resamples, seed {BOOTSTRAP_SEED}"
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, method)
    res = stats.bootstrap(data, statistic, paired=True, vectorized=True, method="percentile",
                          confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                          rng=np.random.default_rng(BOOTSTRAP_SEED))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), n, method,
                    n >= MIN_BOOTSTRAP_UNITS)


def perplexity_interval(window_nll: Sequence[float], window_tokens: Sequence[int]) -> Interval:
    """PPL = exp(sum s_w / sum t_w) with its percentile-bootstrap interval over the (finite) windows."""
    nll, tokens = _finite_windows(window_nll, window_tokens)

    def ppl(s: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.exp(s.sum(axis=axis) / t.sum(axis=axis))

    return _percentile_bootstrap((nll, tokens), ppl, float(ppl(nll, tokens)), "windows")


def perplexity_ratio(nll_a: Sequence[float], nll_b: Sequence[float], window_tokens: Sequence[int]) -> Interval:
    """PPL(a) / PPL(b) on the same windows, with the paired percentile-bootstrap interval over windows."""
    a, b, tokens = _finite_windows(nll_a, nll_b, window_tokens)

    def ratio(x: np.ndarray, y: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.exp((x.sum(axis=axis) - y.sum(axis=axis)) / t.sum(axis=axis))

    return _percentile_bootstrap((a, b, tokens), ratio, float(ratio(a, b, tokens)), "windows")


def windows_to_detect(nll_a: Sequence[float], nll_b: Sequence[float], window_tokens: Sequence[int],
                      ratio: float) -> int | None:
    """Windows needed to resolve PPL(a)/PPL(b) = ``ratio`` at ALPHA with POWER, from the spread over windows
    of the per-window log ratio (at least ``MIN_BOOTSTRAP_UNITS``, the fewest that decide; None with fewer than
    2 windows)."""
    a, b, tokens = _finite_windows(nll_a, nll_b, window_tokens)
    if a.size < 2 or ratio <= 0 or ratio == 1:
        return None
    sd = float(np.std((a - b) / tokens, ddof=1))
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return max(MIN_BOOTSTRAP_UNITS, math.ceil((z * sd / math.log(ratio)) ** 2))


def accuracy(correct: Sequence[bool]) -> tuple[Interval, float]:
    """acc = mean c_i with its exact (Clopper-Pearson) interval, and the standard error sd(c, ddof=1)/sqrt(n)."""
    c = np.asarray(correct, dtype=float)
    n, k = c.size, int(c.sum())
    if n == 0:
        raise ValueError("accuracy of no items")
    ci = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="exact")
    se = float(c.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Interval(k / n, float(ci.low), float(ci.high), n, "exact binomial (Clopper-Pearson)"), se


@dataclass(frozen=True)
class PairedAccuracy:
    """acc(b) - acc(a) on the same items with its normal interval, and the exact McNemar test."""

    difference: Interval
    b_only: int          # items b gets right and a wrong (n01)
    a_only: int          # items a gets right and b wrong (n10)
    mcnemar_p: float


def paired_accuracy(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedAccuracy:
    """Paired difference of accuracies on the same items and the exact McNemar p on the discordant items."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired accuracies need the same items, got {a.shape} and {b.shape}")
    n, diff = a.size, b - a
    est = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    interval = Interval(est, float(est - z * se), float(est + z * se), n, "paired normal interval, sd of c_b - c_a")
    b_only, a_only = int(np.sum((b == 1) & (a == 0))), int(np.sum((a == 1) & (b == 0)))
    p = 1.0 if b_only + a_only == 0 else float(stats.binomtest(b_only, b_only + a_only, 0.5).pvalue)
    return PairedAccuracy(interval, b_only, a_only, p)


def items_to_detect(p1: float, p2: float) -> int | None:
    """HellaSwag items per configuration to tell accuracies p1 and p2 apart at ALPHA with POWER (unpaired
    normal approximation; None when p1 == p2)."""
    if p1 == p2:
        return None
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return math.ceil(z ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2)


def spearman_interval(x: Sequence[float], y: Sequence[float]) -> Interval:
    """Spearman rho with a percentile-bootstrap interval over the configurations (pairs (x_i, y_i) resampled
    together; resamples with constant ranks are dropped)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = xa.size
    if xa.shape != ya.shape or n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        raise ValueError(f"Spearman rho needs at least 3 non-constant pairs, got {n}")
    estimate = float(stats.spearmanr(xa, ya).statistic)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, n, size=(RESAMPLES, n))
    rx, ry = stats.rankdata(xa[idx], axis=1), stats.rankdata(ya[idx], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    ok = norm > 0
    rhos = (rx * ry).sum(axis=1)[ok] / norm[ok]
    tail = 100 * (1 - CONFIDENCE) / 2
    method = (f"percentile bootstrap over {n} configurations, {int(ok.sum())} of {RESAMPLES} resamples with "
              f"non-constant ranks, seed {BOOTSTRAP_SEED}")
    return Interval(estimate, float(np.percentile(rhos, tail)), float(np.percentile(rhos, 100 - tail)), n, method,
                    n >= MIN_BOOTSTRAP_UNITS)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1), minimum and maximum of a few values (over seeds)."""
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}
