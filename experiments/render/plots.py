"""The report's figures, written as PNG files beside the Markdown (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def theorem1_plot(curve: dict[str, Any], path: Path) -> str:
    """log-log ||P_U(lambda) - P_A||_F against lambda, with both Davis-Kahan bounds and a 1/lambda guide."""
    lam = np.asarray(curve["lambdas"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(lam, curve["distance"], "o-", label="measured ||P_U - P_A||_F")
    ax.loglog(lam, curve["bound_posterior"], "--", label="Davis-Kahan bound (a posteriori)")
    ax.loglog(lam, curve["bound_prior"], ":", label="Davis-Kahan bound (a priori)")
    ax.axvline(curve["fit_from"], color="grey", lw=0.8)
    ax.set_xlabel("lambda")
    ax.set_ylabel("projector distance")
    ax.set_title(f"Theorem 1: fitted slope {curve['slope']:.4f}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def corollary3_plot(ts: Sequence[float], rows: Sequence[dict[str, Any]], path: Path) -> str:
    """Relative error of the second-order expansion against the geodesic parameter t (angles scale with t)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in rows:
        ax.loglog(ts, row["errors"], alpha=0.6)
    t = np.asarray(ts)
    ax.loglog(t, 0.5 * t, "k--", label="slope 1 guide")
    ax.set_xlabel("t (principal angles scale with t)")
    ax.set_ylabel("relative error of the expansion")
    ax.set_title("Corollary 3 (second order, derived)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def phase_plot(points: Sequence[dict[str, Any]], floor: float, path: Path) -> str:
    """Two-sided Frobenius fraction against lambda / c for untied (per convention) and tied sections."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault("tied" if p["tied"] else f"untied ({p['convention']})", []).append(p)
    finite = [p["lam_over_c"] for p in points if np.isfinite(p["lam_over_c"]) and p["lam_over_c"] > 0]
    lo, hi = (min(finite), max(finite)) if finite else (0.1, 10.0)
    for label, rows in groups.items():
        x = [lo / 10 if p["lam_over_c"] == 0 else hi * 10 if np.isinf(p["lam_over_c"]) else p["lam_over_c"]
             for p in rows]
        ax.semilogx(x, [p["frobenius_fraction"] for p in rows], "o-", label=label)
    ax.axhline(floor, color="grey", ls=":", label="per-layer Eckart-Young floor")
    ax.set_xlabel("lambda / c   (left end: 0, right end: infinity)")
    ax.set_ylabel("two-sided Frobenius fraction")
    ax.set_title("Phase diagram: lambda x tying")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scatter_plot(rows: Sequence[dict[str, Any]], intervals: Sequence[Any], x_key: str, x_label: str, rho: float,
                 path: Path) -> str:
    """Perplexity against one error metric over all configurations, labelled, with the Spearman rho; error
    bars from each row's perplexity interval (``Interval``: estimate, low, high; none where NaN)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row, iv in zip(rows, intervals):
        err = None if not iv.defined else [[iv.estimate - iv.low], [iv.high - iv.estimate]]
        ax.errorbar(row[x_key], iv.estimate, yerr=err, fmt="o", capsize=3)
        ax.annotate(row["label"], (row[x_key], iv.estimate), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("WikiText-2 perplexity (95 % interval)")
    ax.set_title(f"Spearman rho = {rho:.3f}")
    return _save(fig, path)
