"""Run the theory checks over seeded samples of every stack family and summarize them for the report.

The property tests (tests/) search the same families with hypothesis; this module measures
rates and worst cases on a fixed, seeded sample so that the report can print numbers. Everything is
deterministic in (mode, seed): the same call gives the same numbers.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from experiments.runs.modes import MODES
from theory.bca import STOP_REASONS, bca_tied
from theory.counterexamples import (HAND_COUNTEREXAMPLE, SHARP_EXAMPLES, ExactCertificate, decide_exactly,
                                    minimal_counterexample, prove_exactly)
from theory.objective import ENDPOINT_CLASSES, HESSIAN_TOL
from theory.stack import Stack
from theory.stopping import DEFAULT, ENDPOINT_MARGIN, STALL_SWEEPS, TIED
from theory.strategies import FAMILIES, SQUARE_FAMILIES, make_stack
from theory.theorems import (SLOPE_WINDOWS, check_corollary3, check_theorem1, check_theorem2, compare_solvers,
                             generic_perturbation_slope)

COR3_TS = tuple(2.0 ** -k for k in range(0, 10))
COR3_ASYMPTOTIC = 0.1     # fitted error orders use t <= min(1/4, COR3_ASYMPTOTIC / largest angle), 4 octaves


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


def _counts(values: list[str], keys: tuple[str, ...]) -> dict[str, int]:
    c = Counter(values)
    return {k: int(c.get(k, 0)) for k in keys}


def audit_bca(per_family: int, seed: int) -> dict[str, Any]:
    """Monotonicity of BCA (untied, tied), why each run stopped, and each solver's end point on its own.

    ``stop_reasons`` and ``endpoints`` count BCA's own runs from its default start (one per comparison);
    ``solver_endpoints`` counts the classes of every solver's end point (BCA, restarts, trust regions);
    ``solver_failures`` lists end points whose energy or gradient check failed (theory.theorems.EndPoint);
    ``plain_step`` counts the stop reasons of the plain tied step (shift="none") from U_BS.
    """
    drops, gaps, rows, reasons, classes, all_classes, failures, plain = [], [], [], [], [], [], [], []
    for sample in tqdm(list(sample_stacks(FAMILIES, per_family, seed)), desc="BCA", leave=False):
        stack, d = sample.stack, sample.d
        for tied in ([False, True] if stack.square else [False]):
            comparison = compare_solvers(stack, d, tied=tied, restarts=3, seed=seed, rule=TIED if tied else DEFAULT)
            run, own = comparison.bca_run, comparison.endpoints[0]
            drops.append(_drop(run.history))
            gaps.append(comparison.relative_gap)
            reasons.append(run.stop_reason)
            classes.append(own.kind)
            all_classes += [p.kind for p in comparison.endpoints]
            failures += [{**sample.describe(), "tied": tied, "solver": p.solver, "kind": p.kind,
                          "rel_grad": p.rel_grad, "energy_error": abs(p.energy - p.recomputed)}
                         for p in comparison.endpoints if not p.ok]
            rows.append({**sample.describe(), "tied": tied, "gap": comparison.relative_gap,
                         "stop_reason": run.stop_reason, "kind": own.kind, "rel_grad": own.rel_grad,
                         "sweeps": run.sweeps, "cycles": run.cycles})
            if tied:
                plain.append(bca_tied(stack, d, shift="none").stop_reason)
    gaps_arr = np.asarray(gaps)
    return {"runs": len(drops), "max_drop": max(drops), "comparisons": len(gaps),
            "reached_best": int(np.sum(gaps_arr <= 1e-8)), "worst_gap": float(gaps_arr.max()),
            "median_gap": float(np.median(gaps_arr)), "rows": rows,
            "stop_reasons": _counts(reasons, STOP_REASONS), "endpoints": _counts(classes, ENDPOINT_CLASSES),
            "solver_endpoints": _counts(all_classes, ENDPOINT_CLASSES), "solver_failures": failures,
            "plain_step": _counts(plain, STOP_REASONS), "rules": {"untied": asdict(DEFAULT), "tied": asdict(TIED)},
            "stall_sweeps": STALL_SWEEPS, "endpoint_margin": ENDPOINT_MARGIN, "hessian_tol": HESSIAN_TOL}


def audit_theorem1(per_family: int, seed: int) -> dict[str, Any]:
    """Bounds, slopes and tightness of Theorem 1 over the sample; the first random stack's curve for the plot.

    ``tightness``: lam_over_c (the common grid, lambda in units of c), the median over stacks of
    distance / a-posteriori bound and distance / a-priori bound at each lambda, the range of the local
    log-log slope in each lambda window (SLOPE_WINDOWS, in units of c), and the slope of a generic smooth
    perturbation (theory.theorems.generic_perturbation_slope) for a few seeds.
    """
    slopes, holds, prior_holds, curve, post_r, prior_r, windows, grid = [], [], [], None, [], [], {}, None
    for sample in tqdm(list(sample_stacks(FAMILIES, per_family, seed)), desc="Theorem 1", leave=False):
        r = check_theorem1(sample.stack, sample.d)
        holds.append(r.bound_holds)
        prior_holds.append(r.prior_holds)
        grid = [lam / r.unit for lam in r.lambdas]
        post_r.append(r.posterior_ratio)
        prior_r.append(r.prior_ratio)
        for name, slope in r.window_slopes.items():
            if not np.isnan(slope):
                windows.setdefault(name, []).append(slope)
        if not np.isnan(r.slope):
            slopes.append(r.slope)
        if curve is None and sample.family == "random":
            curve = {**sample.describe(), "lambdas": r.lambdas, "distance": r.distance,
                     "bound_posterior": r.bound_posterior, "bound_prior": r.bound_prior,
                     "slope": r.slope, "fit_from": r.fit_from}
    tightness = {"lam_over_c": grid,
                 "posterior_ratio_median": [float(x) for x in np.median(np.array(post_r), axis=0)],
                 "prior_ratio_median": [float(x) for x in np.median(np.array(prior_r), axis=0)],
                 "window_slopes": {f"{lo:g}-{hi:g}": {"min": min(windows.get(f"{lo:g}-{hi:g}", [np.nan])),
                                                      "median": float(np.median(windows.get(f"{lo:g}-{hi:g}",
                                                                                            [np.nan]))),
                                                      "max": max(windows.get(f"{lo:g}-{hi:g}", [np.nan]))}
                                   for lo, hi in SLOPE_WINDOWS},
                 "generic_slopes": [generic_perturbation_slope(6, 2, seed + k) for k in range(3)]}
    return {"stacks": len(holds), "bound_holds": int(sum(holds)), "prior_bound_holds": int(sum(prior_holds)),
            "slopes": slopes, "slope_min": min(slopes), "slope_max": max(slopes), "curve": curve,
            "tightness": tightness}


def _certificate(cert: ExactCertificate) -> dict[str, Any]:
    return {"weights": cert.weights, "d": cert.d, "non_symmetric": cert.non_symmetric,
            "sigma2": [str(v) for v in cert.sigma2], "bound": str(cert.bound), "t_bs": str(cert.t_bs),
            "gradient_zero": cert.gradient_zero, "refutes": cert.refutes_theorem2}


SHARP_STATEMENTS = (
    ("T(U_BS) = sum_{k<=d} sigma_k^2 - sum_l ||B_l||^2", "identity"),
    ("all B_l = 0 (span U_BS invariant under every W_l^T) => equality", "certified"),
    ("grad T(U_BS) = 2 U_perp sum_l (B_l^T A_l - D_l B_l^T)", "gradient formula"),
    ("grad T(U_BS) != 0 => strict (an ascent step from U_BS)", "gradient"),
    ("grad = 0, some B_l != 0: local information cannot decide; a certified global maximum of T can", "undecided"),
)
SMALL_N = 4             # stacks with n <= SMALL_N are the ones a certified global maximum should decide


def audit_theorem2(per_family: int, seed: int) -> dict[str, Any]:
    """Theorem 2 as stated vs the sharp statement (theory.theorem2), per family, and the exact examples."""
    by_family: dict[str, dict[str, int]] = {}
    ident, grad_err, certified_gap, strict_ok, undecided = 0.0, 0.0, 0.0, [], Counter()
    for sample in tqdm(list(sample_stacks(SQUARE_FAMILIES, per_family, seed)), desc="Theorem 2", leave=False):
        r = check_theorem2(sample.stack, sample.d)
        row = by_family.setdefault(sample.family, {"stacks": 0, "hypothesis": 0, "strict": 0, "counterexamples": 0,
                                                   "real_condition_agrees": 0, "certified": 0, "gradient": 0,
                                                   "global": 0, "undecided": 0, "undecided_small": 0})
        row["stacks"] += 1
        row["hypothesis"] += r.hypothesis_holds
        row["strict"] += r.strict
        row["counterexamples"] += r.counterexample
        row["real_condition_agrees"] += r.real_condition_agrees
        row[r.case] += 1
        row["undecided_small"] += r.case == "undecided" and sample.stack.dims[0] <= SMALL_N
        ident = max(ident, r.identity_error)
        grad_err = max(grad_err, r.gradient_error)
        if r.case == "certified":
            certified_gap = max(certified_gap, r.gap / r.scale)
        elif r.case == "gradient":
            strict_ok.append(r.ascent_gain > 0 and r.strict)
        elif r.case == "undecided":
            undecided[("equality" if not r.strict else "strict") + f", U_BS {r.bs_class}"] += 1
    examples = {name: decide_exactly(w).describe() for name, w in SHARP_EXAMPLES.items()}
    n_cert = sum(r["certified"] for r in by_family.values())
    rows = [
        [SHARP_STATEMENTS[0][0], f"max |error| / sum ||W_l||^2 over {sum(r['stacks'] for r in by_family.values())} "
                                 f"stacks: {ident:.1e}; exact on every example", "holds"],
        [SHARP_STATEMENTS[1][0], f"{n_cert} certified stacks, largest gap / scale {certified_gap:.1e}; exact: "
                                 "'non-symmetric, not block-diagonal, equality'", "holds"],
        [SHARP_STATEMENTS[2][0], f"max |error| / scale {grad_err:.1e}; exact on every example", "holds"],
        [SHARP_STATEMENTS[3][0], f"{sum(strict_ok)} of {len(strict_ok)} stacks with a nonzero gradient: ascent step "
                                 "gains and the solvers find a lower E2; exact: 'all symmetric, strict'",
         "holds" if all(strict_ok) else "FAILS"],
        [SHARP_STATEMENTS[4][0], f"sample: {dict(undecided) or 'none'} undecided "
                                 f"({sum(r['undecided_small'] for r in by_family.values())} with n <= {SMALL_N}), "
                                 f"{sum(r['global'] for r in by_family.values())} decided by a certified global "
                                 "maximum; exact: 'equality without the certificate' (global max) and 'strict local "
                                 "maximum, not global', both also decided by check_theorem2's certificate",
         "both outcomes occur"],
    ]
    return {"by_family": by_family, "hand": _certificate(prove_exactly(*HAND_COUNTEREXAMPLE)),
            "minimal": _certificate(minimal_counterexample()),
            "sharp": {"rows": rows, "examples": examples, "identity_max_error": ident,
                      "gradient_max_error": grad_err, "undecided": dict(undecided),
                      "gradient_strict": [int(sum(strict_ok)), len(strict_ok)], "gtol": TIED.gtol, "small_n": SMALL_N}}


def audit_corollary3(per_family: int, seed: int) -> dict[str, Any]:
    """The second-order expansion, the exact principal-angle form and the Taylor terms, per stack.

    ``exact_max_relative_error``: largest |exact - direct| / |direct| at t = 1 (U_BS itself) over the
    ``exact_stacks`` stacks with U* != U_BS. ``third_order``: median fitted log-log slopes of the relative
    error against t (in the asymptotic window ``t_window``, above the rounding of the direct difference,
    Corollary3Result.error_order) of the expansions to order 2 (over the stacks with phi_3 != 0),
    3 and 4 (``slope_order{k}_fitted``: over how many stacks; a stack whose error stays at the rounding level
    in the whole window has no fit), and how many stacks have a nonzero third-order coefficient phi_3.
    """
    rows, exact_errs, slopes, phi3 = [], [], {2: [], 3: [], 4: []}, 0
    for sample in tqdm(list(sample_stacks(SQUARE_FAMILIES, per_family, seed)), desc="Corollary 3", leave=False):
        r = check_corollary3(sample.stack, sample.d, ts=COR3_TS)
        scale = sample.stack.total_energy()
        if max(r.angles) < 1e-3 or abs(r.direct[0]) < 1e-9 * scale:
            continue    # U* = U_BS: nothing to expand
        exact_errs.append(r.exact_relative_errors[0])
        if abs(r.direct[-1]) < 1e-9 * scale or r.grad_at_star > 1e-9 * scale:
            continue    # flat direction, or U* not a tight critical point
        errs = r.relative_errors
        order = float(np.polyfit(np.log(COR3_TS[-4:]), np.log(np.maximum(errs[-4:], 1e-300)), 1)[0])
        hi = min(0.25, COR3_ASYMPTOTIC / max(r.angles))
        fitted = {k: r.error_order(k, hi / 16, hi, scale) for k in slopes}
        third_order_term = abs(r.phi[3]) > 1e-8 * scale
        phi3 += third_order_term
        for k, v in fitted.items():
            if k != 2 or third_order_term:     # order 2 errs like t only where phi_3 != 0
                slopes[k].append(v)
        rows.append({**sample.describe(), "max_angle": float(max(r.angles)), "rel_err_t1": errs[0],
                     "rel_err_min_t": errs[-1], "order": order, "errors": errs,
                     "rel_err_exact": r.exact_relative_errors[0], "phi": r.phi,
                     "slope_order2": fitted[2], "slope_order3": fitted[3], "slope_order4": fitted[4]})
    fits = {k: [x for x in v if np.isfinite(x)] for k, v in slopes.items()}   # NaN: error at rounding level
    third = {f"slope_order{k}": float(np.median(v)) if v else float("nan") for k, v in fits.items()}
    third.update({f"slope_order{k}_range": [float(min(v)), float(max(v))] if v else [] for k, v in fits.items()})
    third.update({f"slope_order{k}_fitted": len(v) for k, v in fits.items()})
    third.update({"phi3_nonzero": int(phi3), "stacks": len(rows),
                  "t_window": f"t_max / 16 <= t <= t_max = min(1/4, {COR3_ASYMPTOTIC} / largest angle)"})
    return {"ts": list(COR3_TS), "rows": rows, "exact_max_relative_error": float(max(exact_errs, default=0.0)),
            "exact_stacks": len(exact_errs), "third_order": third}


def audit_theory(mode: Any = "standard", seed: int = 0) -> dict[str, Any]:
    """All theory audits at the sample size of ``mode`` (a name in experiments.runs.modes.MODES, or an object
    with a ``name`` attribute)."""
    name = getattr(mode, "name", mode)
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; choose one of {sorted(MODES)}")
    k = MODES[name].theory_samples
    return {"mode": name, "seed": seed, "per_family": k, "bca": audit_bca(k, seed),
            "theorem1": audit_theorem1(k, seed), "theorem2": audit_theorem2(k, seed),
            "corollary3": audit_corollary3(k, seed)}
