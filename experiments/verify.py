"""Run the theory checks over seeded samples of every stack family and summarize them for the report.

The property tests (tests/) search the same families with hypothesis; this module measures
rates and worst cases on a fixed, seeded sample so that the report can print numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from experiments.audit.modes import mode as mode_named
from theory.bca import bca_tied, bca_untied
from theory.counterexamples import HAND_COUNTEREXAMPLE, ExactCertificate, minimal_counterexample, prove_exactly
from theory.stack import Stack
from theory.strategies import FAMILIES, SQUARE_FAMILIES, make_stack
from theory.theorems import check_corollary3, check_theorem1, check_theorem2, compare_solvers

COR3_TS = tuple(2.0 ** -k for k in range(0, 10))


@dataclass(frozen=True)
class Sample:
    """One seeded stack: ``make_stack(family, stack.dims, seed)`` rebuilds it."""

    family: str
    stack: Stack
    d: int
    seed: int

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "dims": [int(n) for n in self.stack.dims], "d": self.d, "seed": self.seed}


def sample_stacks(families: tuple[str, ...], per_family: int, seed: int) -> Iterator[Sample]:
    """Stacks with n in 3..8, L in 1..4, d in 1..n-1, all from one seeded generator.

    The block family takes d = n // 2, the size of its dominant blocks (the SPEC.md section 5 doubt).
    """
    rng = np.random.default_rng(seed)
    for family in families:
        for _ in range(per_family):
            L, n = int(rng.integers(1, 5)), int(rng.integers(3, 9))
            dims = [int(x) for x in rng.integers(3, 9, size=L + 1)] if family == "rectangular" else [n] * (L + 1)
            d = n // 2 if family == "block" else int(rng.integers(1, min(dims)))
            stack_seed = int(rng.integers(2**32))
            yield Sample(family, make_stack(family, dims, stack_seed), d, stack_seed)


def _drop(history: list[float]) -> float:
    """Largest relative decrease of the energy between sweeps (0 when monotone)."""
    h = np.asarray(history)
    return float(max(0.0, np.max(-np.diff(h) / np.maximum(1.0, np.abs(h[1:]))))) if len(h) > 1 else 0.0


def audit_bca(per_family: int, seed: int) -> dict[str, Any]:
    """Monotonicity of BCA (untied, tied) and its gap to trust regions + random restarts."""
    drops, gaps, rows = [], [], []
    for sample in tqdm(list(sample_stacks(FAMILIES, per_family, seed)), desc="BCA", leave=False):
        stack, d = sample.stack, sample.d
        drops.append(_drop(bca_untied(stack, d).history))
        ties = [False, True] if stack.square else [False]
        if stack.square:
            drops.append(_drop(bca_tied(stack, d).history))
        for tied in ties:
            comparison = compare_solvers(stack, d, tied=tied, restarts=3, seed=seed)
            gaps.append(comparison.relative_gap)
            rows.append({**sample.describe(), "tied": tied, "gap": comparison.relative_gap})
    gaps_arr = np.asarray(gaps)
    return {"runs": len(drops), "max_drop": max(drops), "comparisons": len(gaps),
            "reached_best": int(np.sum(gaps_arr <= 1e-8)), "worst_gap": float(gaps_arr.max()),
            "median_gap": float(np.median(gaps_arr)), "rows": rows}


def audit_theorem1(per_family: int, seed: int) -> dict[str, Any]:
    """Bounds and slopes of Theorem 1 over the sample; the first random stack's curve for the plot."""
    slopes, holds, curve = [], [], None
    for sample in tqdm(list(sample_stacks(FAMILIES, per_family, seed)), desc="Theorem 1", leave=False):
        r = check_theorem1(sample.stack, sample.d)
        holds.append(r.bound_holds)
        if not np.isnan(r.slope):
            slopes.append(r.slope)
        if curve is None and sample.family == "random":
            curve = {**sample.describe(), "lambdas": r.lambdas, "distance": r.distance,
                     "bound_posterior": r.bound_posterior, "bound_prior": r.bound_prior,
                     "slope": r.slope, "fit_from": r.fit_from}
    return {"stacks": len(holds), "bound_holds": int(sum(holds)), "slopes": slopes,
            "slope_min": min(slopes), "slope_max": max(slopes), "curve": curve}


def _certificate(cert: ExactCertificate) -> dict[str, Any]:
    return {"weights": cert.weights, "d": cert.d, "non_symmetric": cert.non_symmetric,
            "sigma2": [str(v) for v in cert.sigma2], "bound": str(cert.bound), "t_bs": str(cert.t_bs),
            "gradient_zero": cert.gradient_zero, "refutes": cert.refutes_theorem2}


def audit_theorem2(per_family: int, seed: int) -> dict[str, Any]:
    """Theorem 2 as stated vs the condition that really holds, per family, and the exact counterexamples."""
    by_family: dict[str, dict[str, int]] = {}
    for sample in tqdm(list(sample_stacks(SQUARE_FAMILIES, per_family, seed)), desc="Theorem 2", leave=False):
        r = check_theorem2(sample.stack, sample.d)
        row = by_family.setdefault(sample.family, {"stacks": 0, "hypothesis": 0, "strict": 0, "counterexamples": 0,
                                            "real_condition_agrees": 0})
        row["stacks"] += 1
        row["hypothesis"] += r.hypothesis_holds
        row["strict"] += r.strict
        row["counterexamples"] += r.counterexample
        row["real_condition_agrees"] += r.real_condition_agrees
    return {"by_family": by_family, "hand": _certificate(prove_exactly(*HAND_COUNTEREXAMPLE)),
            "minimal": _certificate(minimal_counterexample())}


def audit_corollary3(per_family: int, seed: int) -> dict[str, Any]:
    """Relative error of the second-order expansion along the geodesic U* -> U_BS, per stack."""
    rows = []
    for sample in tqdm(list(sample_stacks(SQUARE_FAMILIES, per_family, seed)), desc="Corollary 3", leave=False):
        r = check_corollary3(sample.stack, sample.d, ts=COR3_TS)
        scale = sample.stack.total_energy()
        if max(r.angles) < 1e-3 or abs(r.direct[-1]) < 1e-9 * scale or r.grad_at_star > 1e-9 * scale:
            continue    # U* = U_BS (nothing to expand), flat direction, or U* not a tight critical point
        errs = r.relative_errors
        order = float(np.polyfit(np.log(COR3_TS[-4:]), np.log(np.maximum(errs[-4:], 1e-300)), 1)[0])
        rows.append({**sample.describe(), "max_angle": float(max(r.angles)), "rel_err_t1": errs[0],
                     "rel_err_min_t": errs[-1], "order": order, "errors": errs})
    return {"ts": list(COR3_TS), "rows": rows}


def audit_theory(mode: str = "standard", seed: int = 0) -> dict[str, Any]:
    """All theory audits at the sample size of ``mode`` (quick | standard | full)."""
    k = mode_named(mode).theory_samples
    return {"mode": mode, "seed": seed, "per_family": k, "bca": audit_bca(k, seed),
            "theorem1": audit_theorem1(k, seed), "theorem2": audit_theorem2(k, seed),
            "corollary3": audit_corollary3(k, seed)}
