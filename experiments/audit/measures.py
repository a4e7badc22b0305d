"""Reading the measured results: rows by table and method, and the uncertainty of every comparison.

Every ratio of perplexities is paired over the common windows and every HellaSwag comparison over the
common items (``experiments.audit.statistics``), with intervals for the whole test set / all items (the row's
``ppl_windows_available`` / ``hellaswag_items_available``; a row from before schema 5 has no population size
and gets no finite-population correction); a row without per-window or per-item data (an old cache) gives the
point estimate with no interval, never a made-up one.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import stats

from experiments.audit.statistics import (Interval, PairedAccuracy, accuracy, paired_accuracy, perplexity_interval,
                                          perplexity_ratio, spearman_interval, spread)

Results = Mapping[str, Any]
SEED_METHODS = ("v1", "v2", "gbd")     # the methods re-run with every calibration seed of the mode


def rows(results: Results, table: str | None = None) -> list[dict[str, Any]]:
    return [r for r in results.get("surgery", {}).get("rows", []) if table is None or r["table"] == table]


def main_rows(results: Results) -> dict[str, dict[str, Any]]:
    """The main table's rows by method ('original' for the uncompressed model)."""
    return {r["method"] or "original": r for r in rows(results, "main")}


def interior_rows(results: Results) -> list[dict[str, Any]]:
    """Configurations strictly inside the square: 0 < lambda < infinity."""
    return [r for r in rows(results) if r["method"] == "bundle" and 0 < r["lam_over_c"] < math.inf]


def ppl_ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> Interval:
    """PPL(a) / PPL(b) with the paired interval over their common windows (no interval when a row lacks
    per-window data)."""
    na, nb = a.get("ppl_window_nll") or [], b.get("ppl_window_nll") or []
    if na and len(na) == len(nb) and same_units(a, b, "ppl_window_index"):
        return perplexity_ratio(na, nb, a["ppl_window_tokens"], a.get("ppl_windows_available"))
    return Interval(a["ppl"] / b["ppl"], math.nan, math.nan, 0, "no per-window data")


def same_units(a: Mapping[str, Any], b: Mapping[str, Any], index: str) -> bool:
    """Whether two rows were evaluated on the same windows / items (``index`` names the recorded indices; rows
    from before schema 5 record none and are taken to share the first ones)."""
    return a.get(index) is None or b.get(index) is None or list(a[index]) == list(b[index])


def correct(row: Mapping[str, Any], norm: bool = False) -> np.ndarray | None:
    """Per item: 1 where the chosen ending is the gold one (None without per-item data)."""
    pred, gold = row.get("hellaswag_pred_norm" if norm else "hellaswag_pred"), row.get("hellaswag_gold")
    return None if not pred or not gold else (np.asarray(pred) == np.asarray(gold)).astype(float)


def hs_paired(a: Mapping[str, Any], b: Mapping[str, Any], norm: bool = False) -> PairedAccuracy | None:
    ca, cb = correct(a, norm), correct(b, norm)
    if ca is None or cb is None or ca.shape != cb.shape or not same_units(a, b, "hellaswag_item_index"):
        return None
    return paired_accuracy(ca, cb, a.get("hellaswag_items_available"))


def hs_accuracy(row: Mapping[str, Any], norm: bool = False) -> tuple[Interval, float] | None:
    c = correct(row, norm)
    return None if c is None else accuracy(c)


def correlations(results: Results) -> dict[str, Any]:
    """Spearman rho (with bootstrap intervals) of activation / Frobenius fraction against PPL over all
    compressed configurations, and of Frobenius over the interior alone (None with < 3 usable points)."""
    compressed = [r for r in rows(results) if r["method"] is not None]

    def rho(sample: list[dict[str, Any]], key: str) -> Interval | None:
        x, y = [r[key] for r in sample], [r["ppl"] for r in sample]
        if len(sample) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return None
        return spearman_interval(x, y)

    return {"activation": rho(compressed, "activation_fraction"), "frobenius": rho(compressed, "frobenius_fraction"),
            "frobenius_interior": rho(interior_rows(results), "frobenius_fraction"), "n": len(compressed)}


def spearman_exact(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Spearman rho of (x, y) and its exact one-sided permutation p-values (over all n! pairings, for the small
    n of designed configurations): P(rho* <= rho) and P(rho* >= rho) under exchangeability."""
    def rho(a: np.ndarray) -> float:
        return float(stats.spearmanr(a, y).statistic)

    less = stats.permutation_test((np.asarray(x, float),), rho, permutation_type="pairings", n_resamples=np.inf,
                                  alternative="less")
    greater = stats.permutation_test((np.asarray(x, float),), rho, permutation_type="pairings", n_resamples=np.inf,
                                     alternative="greater")
    return rho(np.asarray(x, float)), float(less.pvalue), float(greater.pvalue)


def ratio_text(name: str, iv: Interval) -> str:
    return f"{name} = {iv.text(4, unit='x')}" + (f" over {iv.n} windows" if iv.n else "")


def side(iv: Interval, null: float) -> int:
    """+1: the whole interval above ``null``; -1: below; 0: it includes ``null`` or there is none."""
    return 1 if iv.above(null) else -1 if iv.below(null) else 0




def ppl_interval(row: Mapping[str, Any]) -> Interval:
    """The row's perplexity with its interval for the whole test set (none without per-window data)."""
    if row.get("ppl_window_nll"):
        return perplexity_interval(row["ppl_window_nll"], row["ppl_window_tokens"], row.get("ppl_windows_available"))
    return Interval(row["ppl"], math.nan, math.nan, 0, "no per-window data")


def seed_spread(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    """Per method of ``SEED_METHODS``: the spread over calibration seeds (the run's seed and the mode's
    others) of PPL, activation error and Frobenius error."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    main = main_rows(results)
    extra = [r for seed_rows in results.get("surgery", {}).get("seed_rows", {}).values() for r in seed_rows]
    for r in [main[m] for m in SEED_METHODS if m in main] + extra:
        if r["method"] in SEED_METHODS:
            by_method.setdefault(r["method"], []).append(r)
    return {m: {key: spread([r[key] for r in rs]) for key in ("ppl", "activation_fraction", "frobenius_fraction")}
            for m, rs in by_method.items() if len(rs) > 1}
