"""Uncertainty of every measured number: intervals for the whole test set, paired comparisons, tests, sample
sizes, and the measured coverage of every interval procedure.

The windows and items of a run are a simple random sample without replacement of n of the N windows of the
test set / items of the validation file (``experiments.sampling``); every interval below is an interval for the
value on ALL N, with the finite-population correction f = n / N (N unknown: f = 0).

Perplexity over windows w with summed next-token NLL s_w and token count t_w: PPL = exp(R), R = sum s_w / sum t_w,
a ratio estimator. Its standard error by linearization (Cochran, Sampling Techniques, 6.9):
    se(R)^2 = (1 - f) sd(s_w - R t_w, ddof=1)^2 / (n tbar^2),
and the 95 % interval exp(R -+ t_{n-1, 0.975} se(R)) (Student t with n - 1 degrees of freedom). Two
configurations a, b on the same windows: PPL(a) / PPL(b) = exp(R_d), R_d = sum (s_w^a - s_w^b) / sum t_w, with
the same interval on the paired differences (the window-to-window variation of the text cancels).

HellaSwag, items i with c_i in {0, 1} (the chosen ending is the gold one): acc = mean c_i with the standard
error sd(c, ddof=1) / sqrt(n) and an exact (Clopper-Pearson) interval (conservative: it ignores f). Two
configurations on the same items: mean(c^b - c^a) -+ t_{n-1, 0.975} sqrt(1 - f) sd(c^b - c^a) / sqrt(n), and the
exact McNemar test: under "no difference" each of the n01 + n10 discordant items is equally likely to favour
either, so p = two-sided binomial test of n01 successes in n01 + n10 trials at 1/2.

Coverage is measured, not assumed: ``coverage`` redraws samples of the mode's size the way the mode draws
them from the committed full-size run (all 148 windows and 10,042 items for the original model and SVD-LLM V1,
``FULL_RUN``) and counts how often each procedure's interval covers the whole-set value.

Spearman rho over configurations: a percentile bootstrap over configurations (resamples whose ranks are
constant have no rho and are dropped; the count kept is reported).

Sample sizes for a two-sided test at level alpha with power 1 - beta (z the standard normal quantiles):
    items to tell accuracies p1, p2 apart    n = (z_{1-alpha/2} + z_{1-beta})^2 (p1 (1-p1) + p2 (1-p2)) / (p1-p2)^2
    (the unpaired normal approximation: a paired test needs fewer when the models agree on most items);
    windows to resolve a perplexity ratio r  n = ((z_{1-alpha/2} + z_{1-beta}) sd_w / ln r)^2,
    sd_w the standard deviation over windows of the per-window log ratio (s_w^a - s_w^b) / t_w (random windows
    are exchangeable, so the iid formula applies; no finite-population correction: an upper bound).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from experiments.errors import GbdError
from experiments.sampling import STREAMS, Sample

CONFIDENCE = 0.95
MIN_DECISIVE_UNITS = 5      # below this many windows / items / configurations an interval is shown, not used to decide
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """An estimate, its ``CONFIDENCE`` interval [low, high] (NaN when it cannot be had), the sample size
    it rests on and the method, in words. ``decisive`` is False for an interval over fewer than
    ``MIN_DECISIVE_UNITS`` units (a bootstrap's percentiles are then a few resampled values, a t interval's
    coverage rests on a handful of windows): such an interval is printed but never called significant."""

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


def _ratio_estimate(y: np.ndarray, t: np.ndarray, population: int | None) -> tuple[float, float]:
    """R = sum y / sum t and its linearized standard error sqrt((1 - n/N) sd(y - R t, ddof=1)^2 / n) / tbar
    (module docstring; NaN for n < 2; N None: no finite-population correction)."""
    n, r = y.size, float(y.sum() / t.sum())
    if n < 2:
        return r, math.nan
    if population is not None and population < n:
        raise ValueError(f"a sample of {n} from a population of {population}")
    fpc = 1.0 if population is None else 1.0 - n / population
    return r, float(math.sqrt(fpc * np.var(y - r * t, ddof=1) / n) / t.mean())


def _t_interval(estimate: float, se: float, n: int, population: int | None, what: str,
                transform=lambda x: x) -> Interval:
    """transform(estimate -+ t_{n-1, (1 + CONFIDENCE)/2} se), a design-based interval for the whole population."""
    method = (f"t interval over {what} with finite-population correction (n = {n} of N = {population})"
              if population is not None else f"t interval over {what} (no finite-population correction)")
    if math.isnan(se):
        return Interval(transform(estimate), math.nan, math.nan, n, method)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    return Interval(float(transform(estimate)), float(transform(estimate - half)), float(transform(estimate + half)),
                    n, method, n >= MIN_DECISIVE_UNITS)


def perplexity_interval(window_nll: Sequence[float], window_tokens: Sequence[int],
                        population: int | None = None) -> Interval:
    """PPL = exp(sum s_w / sum t_w) over the (finite) windows, with its interval for the perplexity of all
    ``population`` windows of the test set (module docstring)."""
    nll, tokens = _finite_windows(window_nll, window_tokens)
    r, se = _ratio_estimate(nll, tokens, population)
    return _t_interval(r, se, nll.size, population, "windows", math.exp)


def perplexity_ratio(nll_a: Sequence[float], nll_b: Sequence[float], window_tokens: Sequence[int],
                     population: int | None = None) -> Interval:
    """PPL(a) / PPL(b) on the same windows, with the paired interval (over the per-window differences
    s_w^a - s_w^b) for the ratio on all ``population`` windows of the test set."""
    a, b, tokens = _finite_windows(nll_a, nll_b, window_tokens)
    r, se = _ratio_estimate(a - b, tokens, population)
    return _t_interval(r, se, a.size, population, "windows, paired", math.exp)


def windows_to_detect(nll_a: Sequence[float], nll_b: Sequence[float], window_tokens: Sequence[int],
                      ratio: float) -> int | None:
    """Windows needed to resolve PPL(a)/PPL(b) = ``ratio`` at ALPHA with POWER, from the spread over windows
    of the per-window log ratio (at least ``MIN_DECISIVE_UNITS``, the fewest that decide; None with fewer than
    2 windows)."""
    a, b, tokens = _finite_windows(nll_a, nll_b, window_tokens)
    if a.size < 2 or ratio <= 0 or ratio == 1:
        return None
    sd = float(np.std((a - b) / tokens, ddof=1))
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return max(MIN_DECISIVE_UNITS, math.ceil((z * sd / math.log(ratio)) ** 2))


def accuracy(correct: Sequence[bool]) -> tuple[Interval, float]:
    """acc = mean c_i with its exact (Clopper-Pearson) interval, and the standard error sd(c, ddof=1)/sqrt(n)."""
    c = np.asarray(correct, dtype=float)
    n, k = c.size, int(c.sum())
    if n == 0:
        raise ValueError("accuracy of no items")
    tail = (1 - CONFIDENCE) / 2     # Clopper-Pearson: the beta quantiles, closed at k = 0 and k = n
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    se = float(c.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Interval(k / n, low, high, n, "exact binomial (Clopper-Pearson), no finite-population correction"), se


@dataclass(frozen=True)
class PairedAccuracy:
    """acc(b) - acc(a) on the same items with its t interval for all items, and the exact McNemar test."""

    difference: Interval
    b_only: int          # items b gets right and a wrong (n01)
    a_only: int          # items a gets right and b wrong (n10)
    mcnemar_p: float


def accuracy_difference(correct_a: Sequence[bool], correct_b: Sequence[bool],
                        population: int | None = None) -> Interval:
    """mean(c^b - c^a) on the same items with its t interval for the difference on all ``population`` items."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired accuracies need the same items, got {a.shape} and {b.shape}")
    est, se = _ratio_estimate(b - a, np.ones_like(a), population)
    return _t_interval(est, se, a.size, population, "items, paired")


def paired_accuracy(correct_a: Sequence[bool], correct_b: Sequence[bool],
                    population: int | None = None) -> PairedAccuracy:
    """Paired difference of accuracies on the same items, with its interval for the difference on all
    ``population`` items, and the exact McNemar p on the discordant items."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    interval = accuracy_difference(a, b, population)
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
                    n >= MIN_DECISIVE_UNITS)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1), minimum and maximum of a few values (over seeds)."""
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}


# ------------------------------------------------------------------------------------------------ coverage
FULL_RUN = Path(__file__).resolve().parents[2] / "reports" / "smollm2-full" / "surgery.json"
FULL_RUN_LABELS = ("original", "SVD-LLM V1")
COVERAGE_DRAWS = 2000       # simulated samples per procedure: the coverage's standard error is about 0.5 points


@dataclass(frozen=True)
class FullRun:
    """Two configurations evaluated on every window and item: per-window NLL of a (the original model) and b
    (SVD-LLM V1) with the token counts, and per-item correctness (1: the chosen ending is the gold one)."""

    nll_a: np.ndarray
    nll_b: np.ndarray
    tokens: np.ndarray
    correct_a: np.ndarray
    correct_b: np.ndarray
    source: str


def full_run(path: Path = FULL_RUN) -> FullRun:
    """The committed full-size run (``gbd-audit surgery --mode full --only original 'SVD-LLM V1'``)."""
    if not path.is_file():
        raise GbdError(f"the full-size run {path.name} that coverage is measured on is missing ({path})")
    rows = {r["label"]: r for r in json.loads(path.read_text())["surgery"]["rows"]}
    a, b = (rows[label] for label in FULL_RUN_LABELS)

    def correct(r: dict) -> np.ndarray:
        return (np.asarray(r["hellaswag_pred"]) == np.asarray(r["hellaswag_gold"])).astype(float)

    return FullRun(np.asarray(a["ppl_window_nll"], float), np.asarray(b["ppl_window_nll"], float),
                   np.asarray(a["ppl_window_tokens"], float), correct(a), correct(b),
                   f"{path.parent.name}/{path.name}: {len(a['ppl_window_nll'])} windows, "
                   f"{len(a['hellaswag_pred'])} items, {' and '.join(FULL_RUN_LABELS)}")


@dataclass(frozen=True)
class Coverage:
    """How often ``procedure``'s nominal ``CONFIDENCE`` interval covered the whole-set value in ``draws``
    samples of ``n`` of ``population`` units drawn by ``design``."""

    procedure: str
    method: str
    design: str
    n: int
    population: int
    draws: int
    covered: int

    @property
    def fraction(self) -> float:
        """covered / draws (NaN for the whole set, where nothing was simulated)."""
        return self.covered / self.draws if self.draws else math.nan


def _draw(design: str, population: int, n: int, unit: str, k: int) -> np.ndarray:
    """The k-th simulated sample: ``experiments.sampling.Sample(design, seed=k)``'s draw for "random"; for "first"
    a contiguous block of n at a uniformly random start (the first n is one such block: where the text starts
    is arbitrary)."""
    if design == "first":
        start = int(np.random.default_rng([k, STREAMS[unit]]).integers(0, population - n + 1))
        return np.arange(start, start + n)
    return np.asarray(Sample(design, k).draw(population, n, unit))


def coverage(run: FullRun, windows: int | None, items: int | None, design: str = "random",
             draws: int = COVERAGE_DRAWS) -> list[Coverage]:
    """Measured coverage of every interval procedure the report uses, on ``run``: ``draws`` samples of ``windows``
    windows and ``items`` items (None: all; 0: none) drawn by ``design`` (``experiments.sampling``); each
    interval is computed by the same function as in the report and checked against the value on every window /
    item: the PPL of a, the ratio PPL(b) / PPL(a), the accuracy of a and the difference acc(b) - acc(a). A sample
    of the whole set is not simulated (``draws`` 0 in its result)."""
    n_windows, n_items = run.nll_a.size, run.correct_a.size
    truth_ppl = math.exp(run.nll_a.sum() / run.tokens.sum())
    truth_ratio = math.exp((run.nll_b.sum() - run.nll_a.sum()) / run.tokens.sum())
    procedures: list[tuple[str, str, int, int | None, Callable[[np.ndarray], Interval], float]] = [
        ("PPL", "windows", n_windows, windows,
         lambda i: perplexity_interval(run.nll_a[i], run.tokens[i], n_windows), truth_ppl),
        ("PPL ratio (paired)", "windows", n_windows, windows,
         lambda i: perplexity_ratio(run.nll_b[i], run.nll_a[i], run.tokens[i], n_windows), truth_ratio),
        ("HellaSwag accuracy", "items", n_items, items, lambda i: accuracy(run.correct_a[i])[0],
         float(run.correct_a.mean())),
        ("accuracy difference (paired)", "items", n_items, items,
         lambda i: accuracy_difference(run.correct_a[i], run.correct_b[i], n_items),
         float((run.correct_b - run.correct_a).mean()))]
    out = []
    for unit, size in (("windows", windows), ("items", items)):
        chosen = [p for p in procedures if p[1] == unit]
        population = chosen[0][2]
        if size == 0:
            continue
        n = population if size is None else min(size, population)
        if n == population:              # the whole set: the estimate is the value, nothing to simulate
            out += [Coverage(name, interval(np.arange(n)).method, design, n, population, 0, 0)
                    for name, _, _, _, interval, _ in chosen]
            continue
        samples = [_draw(design, population, n, unit, k) for k in range(draws)]    # one draw for every procedure
        for name, _, _, _, interval, truth in chosen:
            found = [interval(i) for i in samples]
            out.append(Coverage(name, found[0].method, design, n, population, draws,
                                sum(iv.low <= truth <= iv.high for iv in found)))
    return out


def coverage_record(sizes: Sequence[tuple[str, int | None, int | None]], design: str,
                    path: Path = FULL_RUN, draws: int = COVERAGE_DRAWS) -> dict:
    """JSON-ready measured coverage for each (what uses it, windows, items) of ``sizes`` drawn by ``design``:
    {"source", "nominal", "rows": [{"used_by", "procedure", "method", "design", "n", "population", "draws",
    "covered"}]} (draws 0: the whole set, no sampling error), or {"missing": why} without the full-size run."""
    try:
        run = full_run(path)
    except GbdError as e:
        return {"missing": str(e)}
    rows = [{"used_by": used_by, **asdict(c)} for used_by, windows, items in sizes
            for c in coverage(run, windows, items, design, draws)]
    return {"source": run.source, "nominal": CONFIDENCE, "rows": rows}
