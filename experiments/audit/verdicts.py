"""Judging: every claim of the ledger against the measured results, in one place, with its uncertainty.

Verdict classes:
- reproduced: the effect is significant (its 95 % interval excludes "no effect") and its size is within the
  claim's tolerance (or the statement is exact and holds);
- reproduced in direction only: significant, in the paper's direction, size outside the tolerance;
- not significant: the interval includes "no effect", so this run cannot decide;
- not reproduced: significant the other way, or the measured quantity misses the claim;
- refuted: a universal statement with a counterexample (given);
- not measured: why (a claim about Pythia on another model keeps the other model's number, interval and
  direction beside it).

Each rule is a function and a template; the report prints the template filled with the claim's
``tolerance`` from the ledger, the same numbers the function reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping

import numpy as np

from experiments.audit.ledger import CLAIMS, Claim
from experiments.audit.measures import (Results, correlations, hs_paired, interior_rows, main_rows, ppl_ratio,
                                        ratio_text, rows, side)
from experiments.audit.statistics import items_to_detect, spearman_interval, windows_to_detect


class Verdict(str, Enum):
    REPRODUCED = "reproduced"
    DIRECTION_ONLY = "reproduced in direction only"
    NOT_SIGNIFICANT = "not significant"
    NOT_REPRODUCED = "not reproduced"
    REFUTED = "refuted"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Judgement:
    """A claim, what was measured (numbers with intervals), the verdict, why, and the sample size that would
    detect the paper's effect (empty where it does not apply)."""

    claim: Claim
    measured: str
    verdict: Verdict
    why: str
    detect: str = ""


def windows_needed(a: Mapping[str, Any], b: Mapping[str, Any], ratio: float, what: str) -> str:
    """How many windows would resolve PPL(a) / PPL(b) = ``ratio`` (from this run's spread over windows)."""
    na, nb = a.get("ppl_window_nll") or [], b.get("ppl_window_nll") or []
    n = windows_to_detect(na, nb, a["ppl_window_tokens"], ratio) if na and len(na) == len(nb) else None
    return "" if n is None else f"{n} windows resolve {what} ({ratio:.3g}x)"


def _phase_points(results: Results) -> list[dict[str, Any]]:
    return results.get("phase", {}).get("points", [])


def _cell(results: Results, lam: float, tied: bool) -> dict[str, Any] | None:
    """The phase cell at ``lam``: untied with the original anchors, or tied (one anchor, U_BS)."""
    return next((p for p in _phase_points(results) if p["lam_over_c"] == lam and p["tied"] == tied
                 and (tied or p["convention"] == "original")), None)


def _on_paper_model(claim: Claim, results: Results) -> bool:
    return claim.paper_model is None or claim.paper_model in results.get("model", {}).get("name", "").lower()


def _not_paper_model(claim: Claim, results: Results) -> str:
    return (f"{claim.paper_model} weights were not used (run on {results['model']['name']}; offline, no Pythia "
            f"weights exist on this machine: re-run with --model EleutherAI/{claim.paper_model}); this model's "
            "number, interval and direction are beside it")


def brief(value: Any) -> str:
    """A theory audit's extra entry in a few words: a dict's scalar items, else the value itself."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
                         if isinstance(v, (int, float, str, bool)))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _missing(claim: Claim, what: str, why: str) -> Judgement:
    return Judgement(claim, what, Verdict.NOT_MEASURED, why)


# ------------------------------------------------------------------------------------------------- judges

def judge_bca_monotone(claim: Claim, results: Results) -> Judgement:
    bca = results["theory"]["bca"]
    extra = "".join(f"; {key.replace('_', ' ')}: {brief(bca[key])}" for key in ("stop_reasons", "endpoints") if key in bca)
    measured = f"largest relative drop {bca['max_drop']:.2e} over {bca['runs']} runs{extra}"
    ok = bca["max_drop"] <= claim.tolerance["drop"]
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.REFUTED,
                     "no sweep lowered E" if ok else "a sweep lowered E (the drop above)")


def judge_bca_cost(claim: Claim, results: Results) -> Judgement:
    phase, cell = results.get("phase", {}), _cell(results, 0.0, False)
    if cell is None or "svd_seconds" not in phase or not cell.get("sweeps") or "seconds" not in cell:
        return _missing(claim, "no timed phase cell", "run the phase diagram")
    per_sweep = cell["seconds"] / cell["sweeps"]
    factor = per_sweep / max(phase["svd_seconds"], 1e-9)
    measured = (f"{per_sweep:.3g} s per sweep ({cell['sweeps']} sweeps, one timing) vs {phase['svd_seconds']:.3g} s "
                f"for the per-layer SVD of the same {phase['L']} layers: {factor:.2g}x")
    ok = factor <= claim.tolerance["factor"]
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.NOT_REPRODUCED,
                     f"a sweep costs {factor:.2g}x a per-layer SVD")


def judge_bca_sweeps(claim: Claim, results: Results) -> Judgement:
    cells = [p for p in _phase_points(results) if p.get("sweeps") is not None]
    if not cells:
        return _missing(claim, "no BCA cell in the phase diagram", "run the phase diagram")
    few = int(claim.tolerance["few"])
    slow = [p for p in cells if not p["converged"] or p["sweeps"] > few]
    measured = "; ".join(f"{'tied' if p['tied'] else p['convention']} lambda/c={p['lam_over_c']:g}: {p['sweeps']}"
                         f"{'' if p['converged'] else ' (not converged)'}" for p in cells)
    if not slow:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"every cell converged within {few} sweeps")
    return Judgement(claim, measured, Verdict.NOT_REPRODUCED,
                     f"{len(slow)} of {len(cells)} cells needed more than {few} sweeps or hit the sweep limit")


def judge_thm1_bound(claim: Claim, results: Results) -> Judgement:
    t1 = results["theory"]["theorem1"]
    prior = t1.get("prior_bound_holds")
    measured = (f"a posteriori bound held on {t1['bound_holds']}/{t1['stacks']} stacks"
                + ("" if prior is None else f", a priori on {prior}/{t1['stacks']}")
                + ("" if "tightness" not in t1 else f"; tightness {brief(t1['tightness'])}"))
    ok = t1["bound_holds"] == t1["stacks"] and (prior is None or prior == t1["stacks"])
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.REFUTED,
                     "held on every stack" if ok else "a stack violates the bound")


def judge_thm1_rate(claim: Claim, results: Results) -> Judgement:
    t1, lo, hi = results["theory"]["theorem1"], claim.tolerance["low"], claim.tolerance["high"]
    measured = f"slopes in [{t1['slope_min']:.3f}, {t1['slope_max']:.3f}] over {len(t1['slopes'])} stacks"
    ok = lo <= t1["slope_min"] and t1["slope_max"] <= hi
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.NOT_REPRODUCED,
                     f"every slope in [{lo}, {hi}]: {ok}")


def judge_large_lambda(claim: Claim, results: Results) -> Judgement:
    tied, rel = bool(claim.tolerance["tied"]), claim.tolerance["relative"]
    corner = _cell(results, math.inf, tied)
    finite = sorted((p for p in _phase_points(results) if p["tied"] == tied and 0 < p["lam_over_c"] < math.inf
                     and (tied or p["convention"] == "original")), key=lambda p: p["lam_over_c"])
    if corner is None or not finite:
        return _missing(claim, "no finite lambda > 0 in the phase grid", "run the phase diagram")
    gaps = [(p["lam_over_c"], abs(p["frobenius_fraction"] / corner["frobenius_fraction"] - 1)) for p in finite]
    measured = (f"{'tied' if tied else 'untied'} F(lambda=inf) = {corner['frobenius_fraction']:.4f}; relative gap "
                + ", ".join(f"{g:.2%} at {lam:g} c" for lam, g in gaps))
    reached = [lam for lam, g in gaps if g <= rel]
    if reached:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"within {rel:.0%} from lambda = {reached[0]:g} c on")
    if gaps[-1][0] < claim.tolerance["min_lambda"]:
        return Judgement(claim, measured, Verdict.NOT_MEASURED, f"the grid stops at {gaps[-1][0]:g} c, below the "
                         f"{claim.tolerance['min_lambda']:g} c where the limit is judged (standard and full modes)")
    return Judgement(claim, measured, Verdict.NOT_REPRODUCED,
                     f"no lambda of the grid (largest {gaps[-1][0]:g} c) is within {rel:.0%} of the corner")


def judge_thm2(claim: Claim, results: Results) -> Judgement:
    t2 = results["theory"]["theorem2"]
    cert = t2["minimal"]
    stated = sum(f["counterexamples"] for f in t2["by_family"].values())
    measured = (f"exact counterexample W = {cert['weights']}, d = {cert['d']}: non-symmetric, T(U_BS) = "
                f"{cert['t_bs']} = sum of top-d sigma^2 = {cert['bound']}, so E2(U*) = E2(U_BS); {stated} certified "
                "counterexamples among the seeded stacks" + (f"; the sharp statement's parts: "
                                                              f"{', '.join(str(r[-1]) for r in t2['sharp']['rows'])}"
                                                              if "sharp" in t2 else ""))
    if cert["refutes"]:
        return Judgement(claim, measured, Verdict.REFUTED,
                         "U_BS reaches the global upper bound of T: equality, not strict inequality. What holds "
                         "instead (theory section): every B_l = 0 (span U_BS invariant under every W_l^T) gives "
                         "equality; a nonzero Riemannian gradient 2 U_perp sum_l (B_l^T A_l - D_l B_l^T) gives "
                         "strictness; in between, only a certified global maximum decides; symmetry is irrelevant")
    return Judgement(claim, measured, Verdict.REPRODUCED, "no counterexample found")


def judge_cor3(claim: Claim, results: Results) -> Judgement:
    c3rows, tol = results["theory"]["corollary3"]["rows"], claim.tolerance["relative"]
    if not c3rows:
        return _missing(claim, "no stack with U* != U_BS in the sample", "sample too small")
    errs = np.array([r["rel_err_t1"] for r in c3rows])
    worst = c3rows[int(np.argmax(errs))]
    measured = (f"relative error at U_BS: median {np.median(errs):.2e}, max {errs.max():.2e} over {len(c3rows)} "
                f"stacks; error order in the angle {np.median([r['order'] for r in c3rows]):.2f} (median)")
    if errs.max() <= tol:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"every relative error <= {tol:g}")
    return Judgement(claim, measured, Verdict.REFUTED,
                     f"a second-order expansion is exact only to O(theta^3): on the {worst['family']} stack "
                     f"{worst['dims']} (d = {worst['d']}, seed {worst['seed']}, largest angle {worst['max_angle']:.3f}"
                     f" rad) it is off by {100 * worst['rel_err_t1']:.2f} %")


def judge_cor3_exact(claim: Claim, results: Results) -> Judgement:
    c3, tol = results["theory"]["corollary3"], claim.tolerance["relative"]
    if "exact_max_relative_error" not in c3:
        return _missing(claim, "the exact form is not in this run's theory audit",
                        "the theory audit of this version does not evaluate the exact identity")
    err, n = c3["exact_max_relative_error"], c3.get("exact_stacks", 0)
    measured = f"largest relative error {err:.2e} over {n} stacks" + (
        f"; third-order term: {brief(c3['third_order'])}" if "third_order" in c3 else "")
    ok = n > 0 and err <= tol
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.REFUTED,
                     f"every relative error <= {tol:g}: {ok}")


def judge_corner_svd(claim: Claim, results: Results) -> Judgement:
    main = main_rows(results)
    if "anchored" not in main or "v1" not in main:
        return _missing(claim, "the anchored corner was not run in this mode", "run --mode standard or full")
    iv, band = ppl_ratio(main["anchored"], main["v1"]), claim.tolerance["band"]
    measured = ratio_text("PPL(corner) / PPL(V1)", iv)
    detect = windows_needed(main["anchored"], main["v1"], band, "a difference at the band's edge")
    if iv.within(1 / band, band):
        return Judgement(claim, measured, Verdict.REPRODUCED, f"interval inside [1/{band}, {band}]", detect)
    if iv.above(band) or iv.below(1 / band):
        return Judgement(claim, measured, Verdict.REFUTED,
                         "as deployed the corner is not SVD-LLM (the ratio above is the counterexample); it is SVD "
                         "only for the raw two-sided Frobenius objective, while V1 is one-sided and whitened", detect)
    return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, f"interval overlaps the edge of [1/{band}, {band}]",
                     detect)


def judge_phase_optimum(claim: Claim, results: Results) -> Judgement:
    points = _phase_points(results)
    corners = [p for p in points if p["lam_over_c"] == 0 and not p["tied"]]    # one per anchor convention
    if not corners:
        return _missing(claim, "phase diagram not run", "run the phase diagram")
    corner = min(p["frobenius_fraction"] for p in corners)
    others = [p for p in points if p not in corners]
    best = min(others, key=lambda p: p["frobenius_fraction"], default=None)
    if best is None:
        return _missing(claim, "only the pure-bundle corner was run", "run the phase diagram")
    measured = (f"F(lambda=0, untied) = {corner:.4f}; best other cell: {'tied' if best['tied'] else best['convention']}"
                f" lambda/c={best['lam_over_c']:g}, {best['frobenius_fraction']:.4f} (exact, no sampling)")
    if best["frobenius_fraction"] >= corner * (1 - claim.tolerance["relative"]):
        return Judgement(claim, measured, Verdict.REPRODUCED, "no cell beats the pure-bundle corner")
    return Judgement(claim, measured, Verdict.REFUTED, "the cell named above beats the pure-bundle corner")


def _frobenius_gain(results: Results) -> tuple[float, float, float] | None:
    a, b = _cell(results, 0.0, False), _cell(results, math.inf, False)
    if a is None or b is None:
        return None
    return a["frobenius_fraction"], b["frobenius_fraction"], 1 - a["frobenius_fraction"] / b["frobenius_fraction"]


def judge_frobenius_gain(claim: Claim, results: Results) -> Judgement:
    gain = _frobenius_gain(results)
    if gain is None:
        return _missing(claim, "phase diagram not run", "run the phase diagram")
    f0, finf, g = gain
    measured = (f"{results['model']['name']}: F(gbd) = {f0:.4f}, F(svd-llm) = {finf:.4f}, reduction {100 * g:.1f} % "
                "(exact, no sampling)")
    if not _on_paper_model(claim, results):
        return Judgement(claim, measured, Verdict.NOT_MEASURED, _not_paper_model(claim, results))
    paper, points = claim.tolerance["paper"], claim.tolerance["points"]
    if abs(g - paper) <= points:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"within {100 * points:g} points of the paper")
    return Judgement(claim, measured, Verdict.DIRECTION_ONLY if g > 0 else Verdict.NOT_REPRODUCED,
                     f"|{100 * g:.1f} - {100 * paper:.1f}| > {100 * points:g} points")


def judge_frobenius_attenuation(claim: Claim, results: Results) -> Judgement:
    gain = _frobenius_gain(results)
    measured = "-" if gain is None else f"{results['model']['name']}: reduction {100 * gain[2]:.1f} % (one size)"
    return Judgement(claim, measured, Verdict.NOT_MEASURED,
                     "needs the gain on two sizes of one family (Pythia-70M and 1.4B); a run measures one model")


def judge_tied_dominance(claim: Claim, results: Results) -> Judgement:
    a, b = _cell(results, 0.0, True), _cell(results, math.inf, True)
    if a is None or b is None:
        return _missing(claim, "no tied cells (non-square targets?)", "run the phase diagram on square targets")
    measured = f"tied F(lambda=0) = {a['frobenius_fraction']:.4f} vs F(BS-core) = {b['frobenius_fraction']:.4f}"
    ok = a["frobenius_fraction"] < b["frobenius_fraction"]
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.NOT_REPRODUCED,
                     "strictly lower two-sided error" if ok else "not lower")


def judge_ppl_gbd(claim: Claim, results: Results) -> Judgement:
    main = main_rows(results)
    if "v1" not in main or "gbd" not in main:
        return _missing(claim, "surgery not run", "run the surgery")
    tol = claim.tolerance
    paper_ratio = tol["gbd"] / tol["v1"]
    iv = ppl_ratio(main["gbd"], main["v1"])
    detect = windows_needed(main["gbd"], main["v1"], paper_ratio, "the paper's ratio")
    measured = (f"{results['model']['name']}: GBD {main['gbd']['ppl']:.2f} vs V1 {main['v1']['ppl']:.2f}; "
                + ratio_text("ratio", iv) + f"; direction: {'GBD worse' if side(iv, 1) > 0 else 'GBD better' if side(iv, 1) < 0 else 'undecided'}")
    if not _on_paper_model(claim, results):
        return Judgement(claim, measured, Verdict.NOT_MEASURED, _not_paper_model(claim, results), detect)
    if side(iv, 1) <= 0:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT if side(iv, 1) == 0 else Verdict.NOT_REPRODUCED,
                         "GBD not significantly worse than V1", detect)
    ok = (abs(main["v1"]["ppl"] / tol["v1"] - 1) <= tol["relative"]
          and abs(main["gbd"]["ppl"] / tol["gbd"] - 1) <= tol["relative"])
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.DIRECTION_ONLY,
                     f"both within {tol['relative']:.0%} of the paper's: {ok}", detect)


def judge_hs_drop(claim: Claim, results: Results) -> Judgement:
    main = main_rows(results)
    if "v1" not in main or "gbd" not in main:
        return _missing(claim, "surgery not run", "run the surgery")
    tol = claim.tolerance
    detect = (f"{items_to_detect(tol['v1'], tol['gbd'])} items per configuration resolve the paper's "
              f"{100 * (tol['v1'] - tol['gbd']):.1f}-point drop, {items_to_detect(tol['v1'], tol['v1'] - tol['small_drop'])}"
              f" a {100 * tol['small_drop']:g}-point one (80 % power, alpha 0.05)")
    pair = hs_paired(main["v1"], main["gbd"])
    if pair is None:
        measured = (f"acc V1 {100 * main['v1']['hellaswag_acc']:.1f} % -> GBD {100 * main['gbd']['hellaswag_acc']:.1f} % "
                    "(no per-item data: no interval)")
        verdict_side = 0
    else:
        d = pair.difference
        measured = (f"{results['model']['name']}: acc V1 {100 * main['v1']['hellaswag_acc']:.1f} % -> GBD "
                    f"{100 * main['gbd']['hellaswag_acc']:.1f} %, difference {d.text(3, 100, ' points')} over {d.n} "
                    f"items; McNemar exact p = {pair.mcnemar_p:.3g} ({pair.a_only} items only V1 right, "
                    f"{pair.b_only} only GBD right)")
        verdict_side = -1 if pair.mcnemar_p < 0.05 and d.estimate < 0 else 1 if pair.mcnemar_p < 0.05 else 0
    if not _on_paper_model(claim, results):
        return Judgement(claim, measured, Verdict.NOT_MEASURED, _not_paper_model(claim, results), detect)
    if verdict_side == 0:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "McNemar p >= 0.05", detect)
    if verdict_side > 0:
        return Judgement(claim, measured, Verdict.NOT_REPRODUCED, "GBD significantly better", detect)
    ok = (abs(main["v1"]["hellaswag_acc"] - tol["v1"]) <= tol["points"]
          and abs(main["gbd"]["hellaswag_acc"] - tol["gbd"]) <= tol["points"])
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.DIRECTION_ONLY,
                     f"both within {100 * tol['points']:g} points of the paper's: {ok}", detect)


def _compressed_main(results: Results) -> list[dict[str, Any]]:
    return [r for r in rows(results, "main") if r["method"] is not None]


def judge_ranking_reversal(claim: Claim, results: Results) -> Judgement:
    sample = _compressed_main(results)
    x, y = [r["frobenius_fraction"] for r in sample], [r["ppl"] for r in sample]
    if len(sample) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _missing(claim, f"{len(sample)} main-table methods", "needs at least 3 compressed methods")
    iv, rho = spearman_interval(x, y), claim.tolerance["rho"]
    measured = f"rho(Frobenius, PPL) = {iv.text(3)} over {iv.n} methods"
    if side(iv, 0) < 0:
        return Judgement(claim, measured, Verdict.REPRODUCED if iv.estimate <= rho else Verdict.DIRECTION_ONLY,
                         f"significantly negative; reverse ranking means rho <= {rho}: {iv.estimate <= rho}")
    if side(iv, 0) > 0:
        return Judgement(claim, measured, Verdict.NOT_REPRODUCED, "Frobenius and PPL rank the methods alike")
    return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, f"interval includes 0 (n = {iv.n})")


def judge_activation_ranking(claim: Claim, results: Results) -> Judgement:
    sample = _compressed_main(results)
    if len(sample) < 2:
        return _missing(claim, "fewer than 2 methods", "run the surgery")
    discordant = [(a, b) for i, a in enumerate(sample) for b in sample[i + 1:]
                  if (a["activation_fraction"] - b["activation_fraction"]) * (a["ppl"] - b["ppl"]) < 0]
    if not discordant:
        return Judgement(claim, f"{len(sample)} methods, no discordant pair", Verdict.REPRODUCED,
                         "activation error and PPL order every pair alike")
    tests = [(a, b, ppl_ratio(a, b)) for a, b in discordant]
    significant = [(a, b, iv) for a, b, iv in tests if side(iv, 1) != 0]
    measured = "; ".join(f"{a['label']} vs {b['label']}: act {a['activation_fraction']:.4g} vs "
                         f"{b['activation_fraction']:.4g}, " + ratio_text("PPL ratio", iv) for a, b, iv in tests)
    if significant:
        a, b, _ = significant[0]
        return Judgement(claim, measured, Verdict.REFUTED,
                         f"{a['label']} and {b['label']} are ordered one way by activation error and the other by "
                         "PPL, and the PPL difference is significant")
    return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "every discordant pair's PPL interval includes 1")


def judge_activation_ratio(claim: Claim, results: Results) -> Judgement:
    main = main_rows(results)
    if "v1" not in main or "gbd" not in main:
        return _missing(claim, "surgery not run", "run the surgery")
    act = main["gbd"]["activation_fraction"] / main["v1"]["activation_fraction"]
    iv, factor = ppl_ratio(main["gbd"], main["v1"]), claim.tolerance["factor"]
    measured = f"act(GBD) / act(V1) = {act:.3g}x; " + ratio_text("PPL(GBD) / PPL(V1)", iv)
    if not iv.defined:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "no interval for the PPL ratio")
    if iv.low / factor <= act <= iv.high * factor:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"within a factor {factor:g} of the PPL interval")
    same = (act > 1) == (iv.estimate > 1) and side(iv, 1) != 0
    return Judgement(claim, measured, Verdict.DIRECTION_ONLY if same else Verdict.NOT_REPRODUCED,
                     f"outside a factor {factor:g} of the PPL interval")


def judge_lambda_flat(claim: Claim, results: Results) -> Judgement:
    main, sweep = main_rows(results), sorted(rows(results, "sweep"), key=lambda r: r["lam_over_c"])
    if not sweep or "gbd" not in main or "v1" not in main:
        return _missing(claim, "no lambda sweep", "run the surgery")
    flat_band, cat = claim.tolerance["flat"], claim.tolerance["catastrophic"]
    flat, large = ppl_ratio(sweep[0], main["gbd"]), ppl_ratio(sweep[-1], main["v1"])
    detect = windows_needed(sweep[0], main["gbd"], flat_band, "the flatness band's edge")
    measured = (ratio_text(f"PPL(lambda={sweep[0]['lam_over_c']:g} c) / PPL(0)", flat) + "; "
                + ratio_text(f"PPL(lambda={sweep[-1]['lam_over_c']:g} c) / PPL(V1)", large))
    if flat.within(1 / flat_band, flat_band) and large.above(cat):
        return Judgement(claim, measured, Verdict.REPRODUCED, f"flat within {flat_band}x and > {cat}x at large lambda",
                         detect)
    if flat.above(flat_band) or flat.below(1 / flat_band):
        return Judgement(claim, measured, Verdict.NOT_REPRODUCED, f"PPL is not flat within {flat_band:g}x", detect)
    if large.below(cat):
        return Judgement(claim, measured, Verdict.NOT_REPRODUCED, f"large lambda is not {cat:g}x worse than V1",
                         detect)
    return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "an interval overlaps its threshold", detect)


def _same_lambda(results: Results, table: str, method: str, lam: float, convention: str) -> dict[str, Any] | None:
    return next((r for r in rows(results, table) if r["method"] == method and r["lam_over_c"] == lam
                 and r["convention"] == convention), None)


def judge_anchor_fix(claim: Claim, results: Results) -> Judgement:
    fixed = next((r for r in rows(results, "convention") if r["method"] == "bundle"), None)
    main = main_rows(results)
    base = None if fixed is None else _same_lambda(results, "sweep", "bundle", fixed["lam_over_c"], "original")
    if fixed is None or base is None or "v1" not in main:
        return _missing(claim, "no anchor-convention pair", "run the surgery")
    helps, gap = ppl_ratio(fixed, base), ppl_ratio(fixed, main["v1"])
    little = claim.tolerance["little"]
    detect = windows_needed(fixed, base, little, "'a little' at its edge")
    measured = ratio_text("PPL(V1-output) / PPL(original anchors)", helps) + "; " + ratio_text("PPL(V1-output) / PPL(V1)", gap)
    if side(helps, 1) == 0 or side(gap, 1) == 0:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "an interval includes 1", detect)
    if side(helps, 1) > 0 or side(gap, 1) < 0:
        return Judgement(claim, measured, Verdict.NOT_REPRODUCED,
                         "the V1-output anchors do not help" if side(helps, 1) > 0 else "the gap to V1 closes", detect)
    if helps.estimate >= little:
        return Judgement(claim, measured, Verdict.REPRODUCED, f"helps by less than {1 / little:g}x; gap remains",
                         detect)
    return Judgement(claim, measured, Verdict.DIRECTION_ONLY,
                     f"helps by {1 / helps.estimate:.3g}x, more than 'a little' ({1 / little:g}x); the gap remains", detect)


def _pair_worse(claim: Claim, results: Results, worse: dict[str, Any] | None, better: dict[str, Any] | None,
                name: str) -> Judgement:
    if worse is None or better is None:
        return _missing(claim, "a configuration of the pair was not run", "run the surgery")
    iv = ppl_ratio(worse, better)
    measured = ratio_text(name, iv)
    verdict = {1: Verdict.REPRODUCED, 0: Verdict.NOT_SIGNIFICANT, -1: Verdict.NOT_REPRODUCED}[side(iv, 1)]
    return Judgement(claim, measured, verdict, {1: "ratio significantly above 1", 0: "interval includes 1",
                                                -1: "ratio significantly below 1"}[side(iv, 1)],
                     windows_needed(worse, better, iv.estimate, "the measured ratio"))


def judge_bca_hurts(claim: Claim, results: Results) -> Judgement:
    fixed = next((r for r in rows(results, "convention") if r["method"] == "bundle"), None)
    alone = next((r for r in rows(results, "convention") if r["method"] == "anchored"), None)
    return _pair_worse(claim, results, fixed, alone, "PPL(BCA from V1-output anchors) / PPL(anchors alone)")


def judge_projection(claim: Claim, results: Results) -> Judgement:
    sandwich = next((r for r in rows(results, "surgery") if r["installation"] == "sandwich"), None)
    return _pair_worse(claim, results, sandwich, main_rows(results).get("gbd"), "PPL(sandwich) / PPL(projection)")


def judge_interior(claim: Claim, results: Results) -> Judgement:
    inner, v1 = interior_rows(results), main_rows(results).get("v1")
    if not inner or v1 is None:
        return _missing(claim, "no interior configuration run", "run the surgery")
    lo, hi = claim.tolerance["low"], claim.tolerance["high"]
    tests = [(r, ppl_ratio(r, v1)) for r in inner]
    measured = "; ".join(ratio_text(r["label"], iv) for r, iv in tests)
    detect = windows_needed(min(inner, key=lambda r: r["ppl"]), v1, lo, "the paper's smallest ratio")
    better = [r for r, iv in tests if side(iv, 1) < 0]
    if better:
        return Judgement(claim, measured, Verdict.REFUTED, f"{better[0]['label']} beats V1 significantly", detect)
    if any(side(iv, 1) == 0 for _, iv in tests):
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, "an interval includes 1", detect)
    ok = all(lo <= iv.estimate <= hi for _, iv in tests)
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.DIRECTION_ONLY,
                     f"all significantly worse than V1; every ratio in [{lo}, {hi}]: {ok}", detect)


def judge_mechanism(claim: Claim, results: Results) -> Judgement:
    c = correlations(results)
    if c["activation"] is None or c["frobenius"] is None:
        return _missing(claim, "fewer than 3 compressed configurations", "run the surgery")
    act, frob, rho = c["activation"], c["frobenius"], claim.tolerance["rho"]
    inner = "n/a (< 3 points)" if c["frobenius_interior"] is None else c["frobenius_interior"].text(3)
    measured = (f"over {c['n']} configurations: rho(activation, PPL) = {act.text(3)}, rho(Frobenius, PPL) = "
                f"{frob.text(3)}; interior rho(Frobenius, PPL) = {inner}")
    if side(act, 0) <= 0:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT if side(act, 0) == 0 else Verdict.NOT_REPRODUCED,
                         "rho(activation, PPL) is not significantly positive")
    ok = act.estimate >= rho and frob.estimate < act.estimate
    return Judgement(claim, measured, Verdict.REPRODUCED if ok else Verdict.DIRECTION_ONLY,
                     f"rho_act >= {rho} and rho_frob < rho_act: {ok}")


def judge_tie_bs(claim: Claim, results: Results) -> Judgement:
    main = main_rows(results)
    if "bs-core" not in main or "original" not in main:
        return _missing(claim, "Basis-Sharing-core not run", "run the surgery")
    collapse, frac_min = claim.tolerance["collapse"], claim.tolerance["log_vocab_fraction"]
    iv, vocab = ppl_ratio(main["bs-core"], main["original"]), results["model"]["vocab_size"]
    frac = math.log(main["bs-core"]["ppl"]) / math.log(vocab)
    detect = windows_needed(main["bs-core"], main["original"], collapse, "the collapse threshold")
    measured = (f"PPL(bs-core) = {main['bs-core']['ppl']:.1f}; " + ratio_text("PPL(bs-core) / PPL(original)", iv)
                + f"; ln PPL / ln |V| = {frac:.2f}, |V| = {vocab}")
    if iv.above(collapse) and frac >= frac_min:
        return Judgement(claim, measured, Verdict.REPRODUCED,
                         f"> {collapse:g}x the original's PPL and PPL >= |V|^{frac_min:g}", detect)
    if iv.estimate > collapse and frac >= frac_min:
        return Judgement(claim, measured, Verdict.NOT_SIGNIFICANT, f"the interval reaches below {collapse:g}x", detect)
    return Judgement(claim, measured, Verdict.NOT_REPRODUCED,
                     f"a collapse needs > {collapse:g}x the original's PPL and PPL >= |V|^{frac_min:g}", detect)


@dataclass(frozen=True)
class Rule:
    """A judge and the rule it applies, in words, with {placeholders} for the claim's tolerance."""

    judge: Callable[[Claim, Results], Judgement]
    template: str


RULES: dict[str, Rule] = {
    "bca_monotone": Rule(judge_bca_monotone, "reproduced when the largest relative drop <= {drop:g}, else refuted"),
    "bca_cost": Rule(judge_bca_cost, "reproduced when a sweep costs at most {factor:g}x the per-layer SVD"),
    "bca_sweeps": Rule(judge_bca_sweeps, "reproduced when every cell converges within {few:g} sweeps"),
    "thm1_bound": Rule(judge_thm1_bound, "reproduced when every bound holds on every stack, else refuted"),
    "thm1_rate": Rule(judge_thm1_rate, "reproduced when every slope lies in [{low:g}, {high:g}]"),
    "large_lambda_limit": Rule(judge_large_lambda, "reproduced when some finite lambda of the grid (tied = {tied:g}) "
                               "is within {relative:.0%} of the lambda = inf corner's Frobenius fraction; not "
                               "measured when none is and the grid stops below {min_lambda:g} c"),
    "thm2": Rule(judge_thm2, "refuted by an exact counterexample, else reproduced"),
    "cor3": Rule(judge_cor3, "reproduced when every relative error <= {relative:g}, else refuted (the worst stack)"),
    "cor3_exact": Rule(judge_cor3_exact, "reproduced when every relative error <= {relative:g}, else refuted"),
    "corner_svd": Rule(judge_corner_svd, "reproduced when the paired PPL-ratio interval lies in [1/{band:g}, "
                       "{band:g}]; refuted when it lies outside; else not significant"),
    "phase_optimum": Rule(judge_phase_optimum, "reproduced when no other phase cell is lower by more than a relative "
                          "{relative:g}, else refuted"),
    "frobenius_gain": Rule(judge_frobenius_gain, "on the paper's model: reproduced when |g - {paper:.3f}| <= "
                           "{points:g}; direction only when g > 0"),
    "frobenius_attenuation": Rule(judge_frobenius_attenuation, "needs two model sizes"),
    "tied_dominance": Rule(judge_tied_dominance, "reproduced when F(tied, 0) < F(tied, inf) (exact, no sampling)"),
    "ppl_gbd": Rule(judge_ppl_gbd, "on the paper's model: ratio interval above 1 and both PPLs within "
                    "{relative:.0%} of {gbd:g} and {v1:g}: reproduced; above 1 only: direction only; includes 1: "
                    "not significant"),
    "hs_drop": Rule(judge_hs_drop, "on the paper's model: McNemar p < 0.05 with a drop and both accuracies within "
                    "{points:g} of {v1:g} and {gbd:g}: reproduced; drop only: direction only; p >= 0.05: not "
                    "significant"),
    "ranking_reversal": Rule(judge_ranking_reversal, "rho interval below 0 and rho <= {rho:g}: reproduced; below 0 "
                             "only: direction only; includes 0: not significant"),
    "activation_ranking": Rule(judge_activation_ranking, "refuted by a pair ordered oppositely by activation error "
                               "and PPL whose PPL-ratio interval excludes 1; not significant when no such pair is "
                               "significant"),
    "activation_ratio": Rule(judge_activation_ratio, "reproduced when the activation ratio lies within a factor "
                             "{factor:g} of the PPL-ratio interval"),
    "lambda_flat": Rule(judge_lambda_flat, "reproduced when the small-lambda ratio interval lies in [1/{flat:g}, "
                        "{flat:g}] and the large-lambda one above {catastrophic:g}"),
    "anchor_fix": Rule(judge_anchor_fix, "both intervals must exclude 1 (help, gap); reproduced when the help "
                       "ratio >= {little:g} ('a little'), else direction only"),
    "bca_hurts": Rule(judge_bca_hurts, "reproduced when the paired ratio interval lies above 1"),
    "projection": Rule(judge_projection, "reproduced when the paired ratio interval lies above 1"),
    "interior": Rule(judge_interior, "refuted when a ratio interval lies below 1; not significant when one includes "
                     "1; reproduced when all lie above 1 with estimates in [{low:g}, {high:g}]"),
    "mechanism": Rule(judge_mechanism, "rho(activation) interval above 0, rho_act >= {rho:g} and rho_frob < "
                      "rho_act: reproduced"),
    "tie_bs": Rule(judge_tie_bs, "reproduced when the PPL-ratio interval to the original lies above {collapse:g} "
                   "and ln PPL / ln |V| >= {log_vocab_fraction:g}"),
}


def rule_text(claim: Claim) -> str:
    """The claim's rule, filled with the ledger's numbers for it."""
    return RULES[claim.judge].template.format(**claim.tolerance)


def judge(claim: Claim, results: Results) -> Judgement:
    return RULES[claim.judge].judge(claim, results)


def judge_all(results: Results) -> list[Judgement]:
    """One judgement per claim, in the order of the ledger."""
    return [judge(c, results) for c in CLAIMS]
