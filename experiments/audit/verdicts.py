"""Judging: every claim of the ledger against the measured results, in one place, with its uncertainty.

A rule finds an ``Outcome`` (met, direction only, not significant, missed, a counterexample, not measured);
the claim's ``kind`` (ledger) turns it into the verdict class, so that each verdict says what was tested.

Verdict classes:
- reproduced / reproduced in direction only / not reproduced: a measurement on the paper's own model and
  setting (Pythia; none offline);
- transfers: on another model (named), significant, in the paper's direction and within the claim's tolerance;
  transfers in direction only: significant and in the paper's direction, size outside the tolerance;
  does not transfer: significant the other way, or the measured quantity misses the claim;
- holds: mathematics (model-independent) checked on every sampled stack (their number and families given);
  refuted: a counterexample, given exactly (also a false statement of fact);
- not significant: the interval includes "no effect" (or fewer windows than can decide), so this run cannot
  decide;
- holds by construction: the definitions make it true (the reason is given); never counted as evidence;
- this audit's own result: an identity or bound this project derived (checked, but not the paper's claim);
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
from experiments.audit.measures import (Results, correlations, hs_paired, interior_rows, main_rows, ppl_interval,
                                        ppl_ratio, ratio_text, rows, side, spearman_exact)
from experiments.audit.statistics import accuracy, items_to_detect, spearman_interval, windows_to_detect

EVIDENCE = ("measurement", "mathematics", "fact")    # kinds whose verdicts count as evidence about the paper


class Verdict(str, Enum):
    REPRODUCED = "reproduced"
    REPRODUCED_DIRECTION = "reproduced in direction only"
    NOT_REPRODUCED = "not reproduced"
    TRANSFERS = "transfers"
    TRANSFERS_DIRECTION = "transfers in direction only"
    DOES_NOT_TRANSFER = "does not transfer"
    HOLDS = "holds"
    REFUTED = "refuted"
    NOT_SIGNIFICANT = "not significant"
    BY_CONSTRUCTION = "holds by construction"
    OWN_RESULT = "this audit's own result"
    NOT_MEASURED = "not measured"


class Outcome(str, Enum):
    """What a rule finds, before the claim's kind names the verdict class."""

    MET = "met"
    DIRECTION = "direction only"
    NOT_SIGNIFICANT = "not significant"
    MISSED = "missed"
    COUNTEREXAMPLE = "counterexample"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Finding:
    """What a rule found for a claim: the measurement (numbers with intervals), the outcome, why, and the sample
    size that would detect the paper's effect (empty where it does not apply)."""

    claim: Claim
    measured: str
    outcome: Outcome
    why: str
    detect: str = ""


@dataclass(frozen=True)
class Judgement:
    """A finding with its verdict class (``classify``) and the why-text that names what was tested."""

    claim: Claim
    measured: str
    verdict: Verdict
    why: str
    detect: str = ""
    outcome: Outcome = Outcome.NOT_MEASURED


ON_PAPER_MODEL = {Outcome.MET: Verdict.REPRODUCED, Outcome.DIRECTION: Verdict.REPRODUCED_DIRECTION,
                  Outcome.MISSED: Verdict.NOT_REPRODUCED, Outcome.COUNTEREXAMPLE: Verdict.NOT_REPRODUCED}
ON_OTHER_MODEL = {Outcome.MET: Verdict.TRANSFERS, Outcome.DIRECTION: Verdict.TRANSFERS_DIRECTION,
                  Outcome.MISSED: Verdict.DOES_NOT_TRANSFER, Outcome.COUNTEREXAMPLE: Verdict.DOES_NOT_TRANSFER}


def _model_name(results: Results) -> str:
    return results.get("model", {}).get("name", "an unnamed model")


def _stack_sample(results: Results) -> str:
    """The seeded stacks of the theory audit: how many and of which families."""
    theory = results.get("theory", {})
    families = sorted({r["family"] for r in theory.get("bca", {}).get("rows", [])})
    n = theory.get("theorem1", {}).get("stacks")
    return (f"{n} seeded stacks" if n else "the seeded stacks") + (f" of the families {', '.join(families)}"
                                                                   if families else "")


def classify(finding: Finding, results: Results) -> Judgement:
    """The verdict class of a finding, from its claim's kind (ledger): see the module docstring."""
    c, o, why = finding.claim, finding.outcome, finding.why
    if o is Outcome.NOT_MEASURED:
        verdict = Verdict.NOT_MEASURED
    elif c.kind == "measurement" and c.only_paper_model and not _on_paper_model(c, results):
        verdict, why = Verdict.NOT_MEASURED, _not_paper_model(c, results)
    elif o is Outcome.NOT_SIGNIFICANT:
        verdict = Verdict.NOT_SIGNIFICANT
    elif c.kind == "own result":
        verdict, why = (Verdict.OWN_RESULT if o is Outcome.MET else Verdict.REFUTED), f"{c.reason}; {why}"
    elif c.kind == "by construction":
        verdict = Verdict.BY_CONSTRUCTION if o is Outcome.MET else Verdict.REFUTED
        why = f"{c.reason} (not evidence); the check: {why}" if o is Outcome.MET else why
    elif c.kind in ("mathematics", "fact"):
        verdict = Verdict.HOLDS if o is Outcome.MET else Verdict.REFUTED
        why = f"{why}; checked on {_stack_sample(results)}" if verdict is Verdict.HOLDS else why
    elif _on_paper_model(c, results):
        verdict = ON_PAPER_MODEL[o]
    else:
        verdict = ON_OTHER_MODEL[o]
        why = f"on {_model_name(results)} (the paper measured {c.paper_model}): {why}"
    return Judgement(c, finding.measured, verdict, why, finding.detect, o)


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
    return claim.paper_model is not None and claim.paper_model in _model_name(results).lower()


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


def _missing(claim: Claim, what: str, why: str) -> Finding:
    return Finding(claim, what, Outcome.NOT_MEASURED, why)


# ------------------------------------------------------------------------------------------------- judges

def judge_bca_monotone(claim: Claim, results: Results) -> Finding:
    bca = results["theory"]["bca"]
    extra = "".join(f"; {key.replace('_', ' ')}: {brief(bca[key])}" for key in ("stop_reasons", "endpoints") if key in bca)
    measured = f"largest relative drop {bca['max_drop']:.2e} over {bca['runs']} runs{extra}"
    ok = bca["max_drop"] <= claim.tolerance["drop"]
    return Finding(claim, measured, Outcome.MET if ok else Outcome.COUNTEREXAMPLE,
                     "no sweep lowered E" if ok else "a sweep lowered E (the drop above)")


def judge_bca_cost(claim: Claim, results: Results) -> Finding:
    phase, cell = results.get("phase", {}), _cell(results, 0.0, False)
    if cell is None or "svd_seconds" not in phase or not cell.get("sweeps") or "seconds" not in cell:
        return _missing(claim, "no timed phase cell", "run the phase diagram")
    per_sweep = cell["seconds"] / cell["sweeps"]
    factor = per_sweep / max(phase["svd_seconds"], 1e-9)
    measured = (f"{per_sweep:.3g} s per sweep ({cell['sweeps']} sweeps, one timing) vs {phase['svd_seconds']:.3g} s "
                f"for the per-layer SVD of the same {phase['L']} layers: {factor:.2g}x")
    ok = factor <= claim.tolerance["factor"]
    return Finding(claim, measured, Outcome.MET if ok else Outcome.MISSED,
                     f"a sweep costs {factor:.2g}x a per-layer SVD")


def judge_bca_sweeps(claim: Claim, results: Results) -> Finding:
    cells = [p for p in _phase_points(results) if p.get("sweeps") is not None]
    if not cells:
        return _missing(claim, "no BCA cell in the phase diagram", "run the phase diagram")
    few, most = int(claim.tolerance["few"]), claim.tolerance["most"]
    reasons = [stop_reason(p, results) for p in cells]
    within = [p for p, why in zip(cells, reasons) if why != "max_sweeps" and p["sweeps"] <= few]
    measured = "; ".join(f"{'tied' if p['tied'] else p['convention']} lambda/c={p['lam_over_c']:g}: {p['sweeps']} "
                         f"({why})" for p, why in zip(cells, reasons))
    share = len(within) / len(cells)
    limit = sum(why == "max_sweeps" for why in reasons)
    why = (f"{len(within)} of {len(cells)} cells stopped within {few} sweeps ({share:.0%}; 'typically' means more "
           f"than {most:.0%}); {limit} hit the sweep limit")
    return Finding(claim, measured, Outcome.MET if share > most else Outcome.MISSED, why)


def tightness_text(tight: Mapping[str, Any]) -> str:
    """Median distance / bound at the smallest and the largest lambda / c of the tightness sweep."""
    lam, post, prior = tight["lam_over_c"], tight["posterior_ratio_median"], tight["prior_ratio_median"]
    return (f"median distance / a-posteriori bound {post[0]:.2f} at lambda = {lam[0]:g} c, {post[-1]:.3f} at "
            f"{lam[-1]:g} c; distance / a-priori bound {prior[0]:.3f} and {prior[-1]:.3f}")


def judge_thm1_bound(claim: Claim, results: Results) -> Finding:
    t1 = results["theory"]["theorem1"]
    prior = t1.get("prior_bound_holds")
    measured = (f"a posteriori bound held on {t1['bound_holds']}/{t1['stacks']} stacks"
                + ("" if prior is None else f", a priori on {prior}/{t1['stacks']}")
                + ("" if "tightness" not in t1 else "; " + tightness_text(t1["tightness"])))
    ok = t1["bound_holds"] == t1["stacks"] and (prior is None or prior == t1["stacks"])
    return Finding(claim, measured, Outcome.MET if ok else Outcome.COUNTEREXAMPLE,
                     "held on every stack" if ok else "a stack violates the bound")


def judge_thm1_rate(claim: Claim, results: Results) -> Finding:
    t1, lo, hi = results["theory"]["theorem1"], claim.tolerance["low"], claim.tolerance["high"]
    dropped = t1["stacks"] - len(t1["slopes"])
    measured = (f"slopes in [{t1['slope_min']:.3f}, {t1['slope_max']:.3f}] over {len(t1['slopes'])} of "
                f"{t1['stacks']} stacks; {dropped} dropped: their distance to the anchors is below 1e-13 for "
                "lambda >= 10 c (the anchors already solve them: nothing decays, no slope to fit)")
    ok = lo <= t1["slope_min"] and t1["slope_max"] <= hi
    return Finding(claim, measured, Outcome.MET if ok else Outcome.MISSED, f"every slope in [{lo}, {hi}]: {ok}")


def judge_large_lambda(claim: Claim, results: Results) -> Finding:
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
        return Finding(claim, measured, Outcome.MET, f"within {rel:.0%} from lambda = {reached[0]:g} c on")
    if gaps[-1][0] < claim.tolerance["min_lambda"]:
        return Finding(claim, measured, Outcome.NOT_MEASURED, f"the grid stops at {gaps[-1][0]:g} c, below the "
                         f"{claim.tolerance['min_lambda']:g} c where the limit is judged (standard and full modes)")
    return Finding(claim, measured, Outcome.MISSED,
                     f"no lambda of the grid (largest {gaps[-1][0]:g} c) is within {rel:.0%} of the corner")


def judge_thm2(claim: Claim, results: Results) -> Finding:
    t2 = results["theory"]["theorem2"]
    cert = t2["minimal"]
    stated = sum(f["counterexamples"] for f in t2["by_family"].values())
    measured = (f"exact counterexample W = {cert['weights']}, d = {cert['d']}: non-symmetric, T(U_BS) = "
                f"{cert['t_bs']} = sum of top-d sigma^2 = {cert['bound']}, so E2(U*) = E2(U_BS); {stated} certified "
                "counterexamples among the seeded stacks" + (f"; the sharp statement's parts: "
                                                              f"{', '.join(str(r[-1]) for r in t2['sharp']['rows'])}"
                                                              if "sharp" in t2 else ""))
    if cert["refutes"]:
        return Finding(claim, measured, Outcome.COUNTEREXAMPLE,
                         "U_BS reaches the global upper bound of T: equality, not strict inequality. What holds "
                         "instead (theory section): every B_l = 0 (span U_BS invariant under every W_l^T) gives "
                         "equality; a nonzero Riemannian gradient 2 U_perp sum_l (B_l^T A_l - D_l B_l^T) gives "
                         "strictness; in between, only a certified global maximum decides; symmetry is irrelevant")
    return Finding(claim, measured, Outcome.MET, "no counterexample found")


def judge_cor3(claim: Claim, results: Results) -> Finding:
    c3rows, tol = results["theory"]["corollary3"]["rows"], claim.tolerance["relative"]
    if not c3rows:
        return _missing(claim, "no stack with U* != U_BS in the sample", "sample too small")
    errs = np.array([r["rel_err_t1"] for r in c3rows])
    worst = c3rows[int(np.argmax(errs))]
    measured = (f"relative error at U_BS: median {np.median(errs):.2e}, max {errs.max():.2e} over {len(c3rows)} "
                f"stacks; error order in the angle {np.median([r['order'] for r in c3rows]):.2f} (median)")
    if errs.max() <= tol:
        return Finding(claim, measured, Outcome.MET, f"every relative error <= {tol:g}")
    return Finding(claim, measured, Outcome.COUNTEREXAMPLE,
                     f"a second-order expansion is exact only to O(theta^3): on the {worst['family']} stack "
                     f"{worst['dims']} (d = {worst['d']}, seed {worst['seed']}, largest angle {worst['max_angle']:.3f}"
                     f" rad) it is off by {100 * worst['rel_err_t1']:.2f} %")


def judge_cor3_exact(claim: Claim, results: Results) -> Finding:
    c3, tol = results["theory"]["corollary3"], claim.tolerance["relative"]
    if "exact_max_relative_error" not in c3:
        return _missing(claim, "the exact form is not in this run's theory audit",
                        "the theory audit of this version does not evaluate the exact identity")
    err, n = c3["exact_max_relative_error"], c3.get("exact_stacks", 0)
    measured = f"largest relative error {err:.2e} over {n} stacks" + (
        f"; third-order term: {brief(c3['third_order'])}" if "third_order" in c3 else "")
    ok = n > 0 and err <= tol
    return Finding(claim, measured, Outcome.MET if ok else Outcome.COUNTEREXAMPLE,
                     f"every relative error <= {tol:g}: {ok}")


def judge_corner_svd(claim: Claim, results: Results) -> Finding:
    main, band = main_rows(results), claim.tolerance["band"]
    fixed = next((r for r in rows(results, "convention") if r["method"] == "anchored"), None)
    if "anchored" not in main or "v1" not in main:
        return _missing(claim, "the anchored corner was not run in this mode", "run --mode standard or full")
    pairs = [("original anchors", main["anchored"])] + ([("V1-output anchors", fixed)] if fixed else [])
    tests = [(name, r, ppl_ratio(r, main["v1"])) for name, r in pairs]
    measured = "; ".join(ratio_text(f"PPL(corner, {name}) / PPL(V1)", iv) for name, _, iv in tests)
    detect = windows_needed(main["anchored"], main["v1"], band, "a difference at the band's edge")
    structural = ("a two-sided sandwich P W P' is never one-sided whitened V1 (U U^T W with U from W S), so the "
                  "corner is not SVD-LLM by construction")
    phase = results.get("phase", {})
    corner = _cell(results, math.inf, False)
    if corner is not None and "eckart_young_fraction" in phase:
        structural += (f"; nor is it per-layer SVD of the raw weights: its two-sided Frobenius fraction "
                       f"{corner['frobenius_fraction']:.3f} against the per-layer Eckart-Young "
                       f"{phase['eckart_young_fraction']:.3f}")
    if any(iv.within(1 / band, band) for _, _, iv in tests):
        return Finding(claim, measured, Outcome.MET, f"an interval inside [1/{band}, {band}]", detect)
    if all(iv.above(band) or iv.below(1 / band) for _, _, iv in tests):
        return Finding(claim, measured, Outcome.MISSED, "as deployed the corner is not SVD-LLM with either anchor "
                       f"convention (ratios above); {structural}", detect)
    return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, f"an interval overlaps the edge of [1/{band}, {band}]",
                   detect)


def judge_phase_optimum(claim: Claim, results: Results) -> Finding:
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
        return Finding(claim, measured, Outcome.MET, "no cell beats the pure-bundle corner")
    return Finding(claim, measured, Outcome.COUNTEREXAMPLE, "the cell named above beats the pure-bundle corner")


def _frobenius_gain(results: Results) -> tuple[float, float, float] | None:
    a, b = _cell(results, 0.0, False), _cell(results, math.inf, False)
    if a is None or b is None:
        return None
    return a["frobenius_fraction"], b["frobenius_fraction"], 1 - a["frobenius_fraction"] / b["frobenius_fraction"]


def judge_frobenius_gain(claim: Claim, results: Results) -> Finding:
    gain = _frobenius_gain(results)
    if gain is None:
        return _missing(claim, "phase diagram not run", "run the phase diagram")
    f0, finf, g = gain
    measured = (f"{results['model']['name']}: F(gbd) = {f0:.4f}, F(svd-llm) = {finf:.4f}, reduction {100 * g:.1f} % "
                "(exact, no sampling)")
    paper, points = claim.tolerance["paper"], claim.tolerance["points"]
    if abs(g - paper) <= points:
        return Finding(claim, measured, Outcome.MET, f"within {100 * points:g} points of the paper")
    return Finding(claim, measured, Outcome.DIRECTION if g > 0 else Outcome.MISSED,
                     f"|{100 * g:.1f} - {100 * paper:.1f}| > {100 * points:g} points")


def judge_frobenius_attenuation(claim: Claim, results: Results) -> Finding:
    gain = _frobenius_gain(results)
    measured = "-" if gain is None else f"{results['model']['name']}: reduction {100 * gain[2]:.1f} % (one size)"
    return Finding(claim, measured, Outcome.NOT_MEASURED,
                     "needs the gain on two sizes of one family (Pythia-70M and 1.4B); a run measures one model")


def judge_tied_dominance(claim: Claim, results: Results) -> Finding:
    a, b = _cell(results, 0.0, True), _cell(results, math.inf, True)
    if a is None or b is None:
        return _missing(claim, "no tied cells (non-square targets?)", "run the phase diagram on square targets")
    measured = f"tied F(lambda=0) = {a['frobenius_fraction']:.4f} vs F(BS-core) = {b['frobenius_fraction']:.4f}"
    ok = a["frobenius_fraction"] < b["frobenius_fraction"]
    return Finding(claim, measured, Outcome.MET if ok else Outcome.MISSED,
                     "strictly lower two-sided error" if ok else "not lower")


def judge_ppl_gbd(claim: Claim, results: Results) -> Finding:
    main = main_rows(results)
    if "v1" not in main or "gbd" not in main:
        return _missing(claim, "surgery not run", "run the surgery")
    tol = claim.tolerance
    paper_ratio = tol["gbd"] / tol["v1"]
    iv = ppl_ratio(main["gbd"], main["v1"])
    detect = windows_needed(main["gbd"], main["v1"], paper_ratio, "the paper's ratio")
    measured = (f"{results['model']['name']}: GBD {main['gbd']['ppl']:.2f} vs V1 {main['v1']['ppl']:.2f}; "
                + ratio_text("ratio", iv) + f"; direction: {'GBD worse' if side(iv, 1) > 0 else 'GBD better' if side(iv, 1) < 0 else 'undecided'}")
    if side(iv, 1) <= 0:
        return Finding(claim, measured, Outcome.NOT_SIGNIFICANT if side(iv, 1) == 0 else Outcome.MISSED,
                         "GBD not significantly worse than V1", detect)
    ok = (abs(main["v1"]["ppl"] / tol["v1"] - 1) <= tol["relative"]
          and abs(main["gbd"]["ppl"] / tol["gbd"] - 1) <= tol["relative"])
    return Finding(claim, measured, Outcome.MET if ok else Outcome.DIRECTION,
                     f"both within {tol['relative']:.0%} of the paper's: {ok}", detect)


def judge_hs_drop(claim: Claim, results: Results) -> Finding:
    main = main_rows(results)
    if "v1" not in main or "gbd" not in main:
        return _missing(claim, "surgery not run", "run the surgery")
    tol = claim.tolerance
    norm = bool(tol["norm"])
    key, name = ("hellaswag_acc_norm", "acc_norm") if norm else ("hellaswag_acc", "acc")
    detect = (f"{items_to_detect(tol['v1'], tol['gbd'])} items per configuration resolve the paper's "
              f"{100 * (tol['v1'] - tol['gbd']):.1f}-point drop, {items_to_detect(tol['v1'], tol['v1'] - tol['small_drop'])}"
              f" a {100 * tol['small_drop']:g}-point one (80 % power, alpha 0.05)")
    pair = hs_paired(main["v1"], main["gbd"], norm)
    if pair is None:
        measured = (f"{name} V1 {100 * main['v1'][key]:.1f} % -> GBD {100 * main['gbd'][key]:.1f} % "
                    "(no per-item data: no interval)")
        verdict_side = 0
    else:
        d = pair.difference
        measured = (f"{results['model']['name']}: {name} V1 {100 * main['v1'][key]:.1f} % -> GBD "
                    f"{100 * main['gbd'][key]:.1f} %, difference {d.text(3, 100, ' points')} over {d.n} "
                    f"items; McNemar exact p = {pair.mcnemar_p:.3g} ({pair.a_only} items only V1 right, "
                    f"{pair.b_only} only GBD right)")
        verdict_side = -1 if pair.mcnemar_p < 0.05 and d.estimate < 0 else 1 if pair.mcnemar_p < 0.05 else 0
    if verdict_side == 0:
        return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, "McNemar p >= 0.05", detect)
    if verdict_side > 0:
        return Finding(claim, measured, Outcome.MISSED, "GBD significantly better", detect)
    ok = (abs(main["v1"][key] - tol["v1"]) <= tol["points"]
          and abs(main["gbd"][key] - tol["gbd"]) <= tol["points"])
    return Finding(claim, measured, Outcome.MET if ok else Outcome.DIRECTION,
                     f"both within {100 * tol['points']:g} points of the paper's: {ok}", detect)


def _compressed_main(results: Results) -> list[dict[str, Any]]:
    return [r for r in rows(results, "main") if r["method"] is not None]


def judge_ranking_reversal(claim: Claim, results: Results) -> Finding:
    sample = _compressed_main(results)
    x, y = [r["frobenius_fraction"] for r in sample], [r["ppl"] for r in sample]
    if len(sample) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _missing(claim, f"{len(sample)} main-table methods", "needs at least 3 compressed methods")
    iv, rho, alpha = spearman_interval(x, y), claim.tolerance["rho"], claim.tolerance["alpha"]
    _, p_less, p_greater = spearman_exact(x, y)
    measured = (f"rho(Frobenius, PPL) = {iv.text(3)} over {iv.n} methods; exact permutation p: {p_less:.3g} "
                f"(negative), {p_greater:.3g} (positive)")
    if p_less < alpha:
        return Finding(claim, measured, Outcome.MET if iv.estimate <= rho else Outcome.DIRECTION,
                       f"significantly negative; reverse ranking means rho <= {rho}: {iv.estimate <= rho}")
    if p_greater < alpha:
        return Finding(claim, measured, Outcome.MISSED, "Frobenius and PPL rank the methods alike (significantly)")
    return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, f"neither p below {alpha:g} (n = {iv.n})")


def judge_activation_ranking(claim: Claim, results: Results) -> Finding:
    sample, main = _compressed_main(results), main_rows(results)
    if len(sample) < 2 or "v1" not in main or "v2" not in main:
        return _missing(claim, "V1 or V2 not run", "run the surgery")
    discordant = [(a, b) for i, a in enumerate(sample) for b in sample[i + 1:]
                  if (a["activation_fraction"] - b["activation_fraction"]) * (a["ppl"] - b["ppl"]) < 0]
    pairs = "; ".join(f"{a['label']} vs {b['label']}: act {a['activation_fraction']:.4g} vs "
                      f"{b['activation_fraction']:.4g}, " + ratio_text("PPL ratio", ppl_ratio(a, b))
                      for a, b in discordant)
    lowest = min(sample, key=lambda r: r["activation_fraction"])["method"]
    iv = ppl_ratio(main["v2"], main["v1"])
    measured = (f"lowest activation error: {lowest}; " + ratio_text("PPL(V2) / PPL(V1)", iv)
                + f"; {len(discordant)} discordant pairs" + (f": {pairs}" if pairs else ""))
    contradiction = "'exactly' contradicts the paper's own table (V2 lowest in activation error, second in PPL)"
    if lowest != "v2":
        return Finding(claim, measured, Outcome.MISSED, f"V2 is not lowest in activation error; {V2_FLAG}")
    outcome = {1: Outcome.MET, 0: Outcome.NOT_SIGNIFICANT, -1: Outcome.MISSED}[side(iv, 1)]
    return Finding(claim, measured, outcome, f"the paper's pattern (V2 lowest activation error, V1 better in PPL) "
                   f"{'is reproduced' if outcome is Outcome.MET else 'is not'}; {contradiction}; {V2_FLAG}")


def judge_activation_ratio(claim: Claim, results: Results) -> Finding:
    factor, v1, gbd = claim.tolerance["factor"], "SVD-LLM V1", "pure bundle (GBD)"
    sweep = {ratio: by for ratio, by in sorted(_ratio_sweep(results).items()) if v1 in by and gbd in by}
    main = main_rows(results)
    if len(sweep) < 2:
        one = "" if "v1" not in main or "gbd" not in main else (
            f"at d/D = {results['ratio']} only: act(GBD) / act(V1) = "
            f"{main['gbd']['activation_fraction'] / main['v1']['activation_fraction']:.3g}x; "
            + ratio_text("PPL(GBD) / PPL(V1)", ppl_ratio(main["gbd"], main["v1"])))
        return _missing(claim, one or "surgery not run", "needs the d/D sweep (report --beyond): one point "
                        "cannot tell a match from a coincidence")
    tests = [(ratio, by[gbd]["activation_fraction"] / by[v1]["activation_fraction"], ppl_ratio(by[gbd], by[v1]))
             for ratio, by in sweep.items()]
    measured = "; ".join(f"d/D = {ratio:g}: act {act:.3g}x vs " + ratio_text("PPL", iv) for ratio, act, iv in tests)
    bounds = [(ratio, act, (iv.low, iv.high) if iv.defined else (iv.estimate, iv.estimate)) for ratio, act, iv in tests]
    off = [ratio for ratio, act, (low, high) in bounds if not (low / factor <= act <= high * factor)]
    if not off:
        return Finding(claim, measured, Outcome.MET, f"within a factor {factor:g} of the PPL interval at every d/D")
    return Finding(claim, measured, Outcome.MISSED, f"a coincidence: the two ratios diverge across d/D (more than a "
                   f"factor {factor:g} apart at d/D = {', '.join(f'{r:g}' for r in off)}; the point estimates where "
                   "an interval rests on fewer than five windows)")


def judge_lambda_flat(claim: Claim, results: Results) -> Finding:
    main, sweep = main_rows(results), sorted(rows(results, "sweep"), key=lambda r: r["lam_over_c"])
    if not sweep or "gbd" not in main or "v1" not in main:
        return _missing(claim, "no lambda sweep", "run the surgery")
    flat_band, cat, small = claim.tolerance["flat"], claim.tolerance["catastrophic"], claim.tolerance["small"]
    flat, large = ppl_ratio(sweep[0], main["gbd"]), ppl_ratio(sweep[-1], main["v1"])
    detect = windows_needed(sweep[0], main["gbd"], flat_band, "the flatness band's edge")
    lam, cell, zero = sweep[0]["lam_over_c"], _cell(results, sweep[0]["lam_over_c"], False), _cell(results, 0.0, False)
    moved = None if cell is None or zero is None else cell["frobenius_fraction"] / zero["frobenius_fraction"] - 1
    measured = (ratio_text(f"PPL(lambda={lam:g} c) / PPL(0)", flat) + "; "
                + ratio_text(f"PPL(lambda={sweep[-1]['lam_over_c']:g} c) / PPL(V1)", large)
                + ("" if moved is None else f"; lambda = {lam:g} c moves the two-sided Frobenius fraction "
                   f"{zero['frobenius_fraction']:.3f} -> {cell['frobenius_fraction']:.3f}"))
    if moved is None or abs(moved) > small:
        return Finding(claim, measured, Outcome.NOT_MEASURED,
                       f"no small lambda was run: the smallest, {lam:g} c, moves the Frobenius fraction by more than "
                       f"{small:.0%} (the paper's lambda values are lost)", detect)
    if flat.within(1 / flat_band, flat_band) and large.above(cat):
        return Finding(claim, measured, Outcome.MET, f"flat within {flat_band}x and > {cat}x at large lambda", detect)
    if flat.above(flat_band) or flat.below(1 / flat_band):
        return Finding(claim, measured, Outcome.MISSED, f"PPL is not flat within {flat_band:g}x", detect)
    if large.below(cat):
        return Finding(claim, measured, Outcome.MISSED, f"large lambda is not {cat:g}x worse than V1", detect)
    return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, "an interval overlaps its threshold", detect)


def _same_lambda(results: Results, table: str, method: str, lam: float, convention: str) -> dict[str, Any] | None:
    return next((r for r in rows(results, table) if r["method"] == method and r["lam_over_c"] == lam
                 and r["convention"] == convention), None)


def judge_anchor_fix(claim: Claim, results: Results) -> Finding:
    main, little = main_rows(results), claim.tolerance["little"]
    fixed = [r for r in rows(results, "convention") if r["method"] in ("bundle", "anchored")]
    originals = {r["lam_over_c"]: r for r in rows(results, "sweep") + [main.get("anchored", {})] if r}
    pairs = [(r, originals[r["lam_over_c"]]) for r in fixed if r["lam_over_c"] in originals]
    if not pairs or "v1" not in main:
        return _missing(claim, "no anchor-convention pair", "run the surgery")
    cells = {(p["lam_over_c"], p["convention"]): p["frobenius_fraction"] for p in _phase_points(results)
             if not p["tied"]}
    frob = [(lam, cells[(lam, "v1-output")] / cells[(lam, "original")]) for lam, conv in sorted(cells)
            if conv == "original" and (lam, "v1-output") in cells]
    tests = [(f, ppl_ratio(f, o), ppl_ratio(f, main["v1"])) for f, o in pairs]
    detect = windows_needed(tests[0][0], pairs[0][1], little, "'a little' at its edge")
    measured = "; ".join(f"lambda = {f['lam_over_c']:g} c: " + ratio_text("PPL(V1-output) / PPL(original)", h)
                         + ", " + ratio_text("PPL(V1-output) / PPL(V1)", g) for f, h, g in tests)
    if frob:
        measured += "; two-sided Frobenius F(V1-output) / F(original): " + ", ".join(
            f"{r:.4f} at {'inf' if math.isinf(lam) else f'{lam:g} c'}" for lam, r in frob)
    helps, gaps = [side(h, 1) for _, h, _ in tests], [side(g, 1) for _, _, g in tests]
    if 0 in helps or 0 in gaps:
        return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, "an interval includes 1", detect)
    if any(s > 0 for s in helps) or any(s < 0 for s in gaps):
        return Finding(claim, measured, Outcome.MISSED, "the V1-output anchors do not help at some lambda"
                       if any(s > 0 for s in helps) else "the gap to V1 closes", detect)
    big = [f"{1 / h.estimate:.3g}x at {f['lam_over_c']:g} c" for f, h, _ in tests if h.estimate < little]
    if not big:
        return Finding(claim, measured, Outcome.MET, f"helps by less than {1 / little:g}x at every lambda; gap "
                       "remains", detect)
    return Finding(claim, measured, Outcome.DIRECTION, f"helps by {', '.join(big)}, more than 'a little' "
                   f"({1 / little:g}x), yet not at all at lambda = 0 (the Frobenius ratios above); the gap remains",
                   detect)


def _pair_worse(claim: Claim, results: Results, worse: dict[str, Any] | None, better: dict[str, Any] | None,
                name: str) -> Finding:
    if worse is None or better is None:
        return _missing(claim, "a configuration of the pair was not run", "run the surgery")
    iv = ppl_ratio(worse, better)
    measured = ratio_text(name, iv)
    verdict = {1: Outcome.MET, 0: Outcome.NOT_SIGNIFICANT, -1: Outcome.MISSED}[side(iv, 1)]
    return Finding(claim, measured, verdict, {1: "ratio significantly above 1", 0: "interval includes 1",
                                                -1: "ratio significantly below 1"}[side(iv, 1)],
                     windows_needed(worse, better, iv.estimate, "the measured ratio"))


def judge_bca_hurts(claim: Claim, results: Results) -> Finding:
    fixed = next((r for r in rows(results, "convention") if r["method"] == "bundle"), None)
    alone = next((r for r in rows(results, "convention") if r["method"] == "anchored"), None)
    return _pair_worse(claim, results, fixed, alone, "PPL(BCA from V1-output anchors) / PPL(anchors alone)")


def judge_projection(claim: Claim, results: Results) -> Finding:
    sandwich = next((r for r in rows(results, "surgery") if r["installation"] == "sandwich"), None)
    return _pair_worse(claim, results, sandwich, main_rows(results).get("gbd"), "PPL(sandwich) / PPL(projection)")


def judge_interior(claim: Claim, results: Results) -> Finding:
    inner, v1 = interior_rows(results), main_rows(results).get("v1")
    if not inner or v1 is None:
        return _missing(claim, "no interior configuration run", "run the surgery")
    lo, hi = claim.tolerance["low"], claim.tolerance["high"]
    tests = [(r, ppl_ratio(r, v1)) for r in inner]
    measured = "; ".join(ratio_text(r["label"], iv) for r, iv in tests)
    detect = windows_needed(min(inner, key=lambda r: r["ppl"]), v1, lo, "the paper's smallest ratio")
    better = [r for r, iv in tests if side(iv, 1) < 0]
    if better:
        return Finding(claim, measured, Outcome.COUNTEREXAMPLE, f"{better[0]['label']} beats V1 significantly", detect)
    if any(side(iv, 1) == 0 for _, iv in tests):
        return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, "an interval includes 1", detect)
    ok = all(lo <= iv.estimate <= hi for _, iv in tests)
    return Finding(claim, measured, Outcome.MET if ok else Outcome.DIRECTION,
                     f"all significantly worse than V1; every ratio in [{lo}, {hi}]: {ok}", detect)


def judge_mechanism(claim: Claim, results: Results) -> Finding:
    c, sweep = correlations(results), _lambda_sweep(results)
    if c["activation"] is None or c["frobenius"] is None:
        return _missing(claim, "fewer than 3 compressed configurations", "run the surgery")
    act, inner, rho, alpha = c["activation"], c["frobenius_interior"], claim.tolerance["rho"], claim.tolerance["alpha"]
    measured = (f"over {c['n']} configurations: rho(activation, PPL) = {act.text(3)}, rho(Frobenius, PPL) = "
                f"{c['frobenius'].text(3)}; interior rho(Frobenius, PPL) = "
                f"{'n/a (< 3 points)' if inner is None else inner.text(3)}")
    p_greater = 1.0
    if len(sweep) >= 3:
        s_rho, _, p_greater = spearman_exact([r["two_sided_fraction"] for r in sweep], [r["ppl"] for r in sweep])
        measured += (f"; over the lambda sweep ({len(sweep)} points) rho(two-sided Frobenius, PPL) = {s_rho:+.3g}, "
                     f"exact p (positive) = {p_greater:.3g}")
    if side(act, 0) <= 0 or act.low < rho:
        return Finding(claim, measured, Outcome.MISSED if side(act, 0) < 0 else Outcome.NOT_SIGNIFICANT,
                       f"the rho(activation, PPL) interval does not lie above {rho:g}")
    if p_greater < alpha:
        return Finding(claim, measured, Outcome.MISSED, "activation error tracks PPL, but over the paper's own lambda "
                       "sweep Frobenius tracks it too (significantly): the second half fails")
    if inner is not None and side(inner, 0) < 0:
        return Finding(claim, measured, Outcome.MET, f"rho_act interval above {rho:g}; interior Frobenius rho "
                       "significantly negative")
    return Finding(claim, measured, Outcome.DIRECTION, f"rho_act interval above {rho:g}; 'negative in the interior' "
                   "is not significant")


def judge_tie_bs(claim: Claim, results: Results) -> Finding:
    main, chance = main_rows(results), claim.tolerance["chance"]
    if "bs-core" not in main:
        return _missing(claim, "Basis-Sharing-core not run", "run the surgery")
    bs, unigram = main["bs-core"], results["surgery"].get("unigram")
    others = "".join(f"; {m}: PPL {main[m]['ppl']:.4g}" for m in ("bs-core-two-sided", "gbd") if m in main)
    hs = accuracy(np.asarray([1.0 if p == g else 0.0 for p, g in zip(bs["hellaswag_pred"], bs["hellaswag_gold"])])
                  ) if bs.get("hellaswag_pred") else None
    iv = ppl_interval(bs)
    measured = (f"PPL(bs-core) = {iv.text(4)}" + ("" if unigram is None else f"; unigram model on the same windows: "
                                                  f"PPL {unigram['ppl']:.4g} ({unigram['fitted_on']})")
                + ("" if hs is None else f"; HellaSwag acc {hs[0].text(3, 100, ' %')} over {hs[0].n} items")
                + others)
    if unigram is None or hs is None:
        return Finding(claim, measured, Outcome.NOT_MEASURED, "needs a unigram model's PPL on the same windows and "
                       "the per-item HellaSwag answers (results of this version carry both)")
    ppl_half = side(iv, unigram["ppl"])         # +1: worse than the unigram model
    random_half = hs[0].low <= chance <= hs[0].high     # the exact accuracy interval contains chance
    above_chance = hs[0].above(chance)
    why = (f"PPL {'above' if ppl_half > 0 else 'below' if ppl_half < 0 else 'not distinguishable from'} the unigram "
           f"model's; HellaSwag {'consistent with' if random_half else 'above' if above_chance else 'below'} chance")
    if ppl_half >= 0 and random_half:
        return Finding(claim, measured, Outcome.MET if ppl_half > 0 else Outcome.NOT_SIGNIFICANT, why)
    if ppl_half < 0 and above_chance:
        return Finding(claim, measured, Outcome.MISSED, why)
    return Finding(claim, measured, Outcome.DIRECTION, why)


V2_FLAG = "hinges on SVD-LLM V2's rank allocation, which is this project's reading (no public code)"


def judge_bca_monotone_plain(claim: Claim, results: Results) -> Finding:
    plain = results["theory"]["bca"].get("plain_step")
    if not plain:
        return _missing(claim, "the plain tied step was not run", "the theory audit of this version does not run it")
    runs, cycles = sum(plain.values()), plain.get("cycle", 0)
    measured = f"plain tied step over {runs} runs: stop reasons {brief(plain)}"
    if cycles:
        return Finding(claim, measured, Outcome.COUNTEREXAMPLE,
                       f"{cycles} of {runs} runs cycle: a cycle returns to an earlier energy, so a sweep in it lowers "
                       "E (the safeguarded step of bca-monotone is this project's, not Algorithm 1)")
    return Finding(claim, measured, Outcome.MET, "no run cycles")


def stop_reason(cell: Mapping[str, Any], results: Results) -> str:
    """Why BCA stopped at a phase cell (theory.stopping.STOP_REASONS): its recorded ``stop_reason``, else read
    from ``converged`` and the mode's sweep limit (not converged below the limit: the energy stalled)."""
    if cell.get("stop_reason"):
        return str(cell["stop_reason"])
    if cell.get("converged"):
        return "gradient"
    budget = results.get("surgery", {}).get("budget", {})
    limit = budget.get("stopping", {}).get("max_sweeps", budget.get("max_sweeps"))
    return "max_sweeps" if limit is None or cell["sweeps"] >= limit else "stalled"


def judge_cost_exponent(claim: Claim, results: Results) -> Finding:
    timing = results.get("phase", {}).get("sweep_timing")
    if not timing or len(timing.get("n", [])) < 3:
        return _missing(claim, "no sweeps timed at three or more sizes",
                        "this version's phase diagram times a sweep at one size only")
    n, sec = np.asarray(timing["n"], float), np.asarray(timing["seconds"], float)
    slope = float(np.polyfit(np.log(n), np.log(sec), 1)[0])
    lo, hi = claim.tolerance["low"], claim.tolerance["high"]
    measured = f"seconds per sweep at n = {', '.join(f'{x:g}' for x in n)}: log-log slope {slope:.2f}"
    return Finding(claim, measured, Outcome.MET if lo <= slope <= hi else Outcome.MISSED,
                   f"slope in [{lo:g}, {hi:g}]: {lo <= slope <= hi}")


def judge_real_slope(claim: Claim, results: Results) -> Finding:
    real = results.get("phase", {}).get("theorem1_slope")
    if real is None:
        return _missing(claim, "no Theorem 1 curve on the real stack",
                        "the phase diagram stops at 10 c and records no ||P_U - P_A||; thm1-rate uses synthetic "
                        "stacks only")
    lo, hi = claim.tolerance["low"], claim.tolerance["high"]
    return Finding(claim, f"slope {real:.3f} on {_model_name(results)}",
                   Outcome.MET if lo <= real <= hi else Outcome.MISSED, f"in [{lo:g}, {hi:g}]: {lo <= real <= hi}")


def judge_thm2_sharp(claim: Claim, results: Results) -> Finding:
    sharp = results["theory"]["theorem2"].get("sharp")
    if not sharp:
        return _missing(claim, "the sharp statement was not checked", "the theory audit of this version lacks it")
    parts = [(r[0], r[-1]) for r in sharp["rows"]]
    measured = "; ".join(f"{what}: {verdict}" for what, verdict in parts)
    failed = [what for what, verdict in parts if verdict not in ("holds", "both outcomes occur")]
    return Finding(claim, measured, Outcome.COUNTEREXAMPLE if failed else Outcome.MET,
                   f"fails: {failed[0]}" if failed else "every part holds exactly and on the seeded stacks")


def judge_lambda0_anchors(claim: Claim, results: Results) -> Finding:
    corners = {p["convention"]: p["frobenius_fraction"] for p in _phase_points(results)
               if p["lam_over_c"] == 0 and not p["tied"]}
    if len(corners) < 2:
        return _missing(claim, "one anchor convention at lambda = 0", "run the phase diagram with both conventions")
    values = list(corners.values())
    gap = abs(values[0] / values[1] - 1)
    measured = ", ".join(f"F({name}) = {v:.4f}" for name, v in corners.items()) + f": relative difference {gap:.1e}"
    ok = gap <= claim.tolerance["relative"]
    return Finding(claim, measured, Outcome.MET if ok else Outcome.MISSED,
                   f"within a relative {claim.tolerance['relative']:g}: {ok}")


def judge_frobenius_baseline(claim: Claim, results: Results) -> Finding:
    phase, gain = results.get("phase", {}), _frobenius_gain(results)
    if gain is None or "eckart_young_fraction" not in phase:
        return _missing(claim, "phase diagram not run", "run the phase diagram")
    f0, finf, g = gain
    ey = phase["eckart_young_fraction"]
    main = main_rows(results)
    installed = (f"; installed: V1 {main['v1']['frobenius_fraction']:.3f}, GBD {main['gbd']['frobenius_fraction']:.3f}"
                 if "v1" in main and "gbd" in main else "")
    measured = (f"two-sided: pure bundle {f0:.3f}, lambda -> inf corner {finf:.3f} (gain {100 * g:.1f} %), "
                f"per-layer rank-d SVD (Eckart-Young) {ey:.3f}" + installed)
    if f0 < ey:
        return Finding(claim, measured, Outcome.MET, "the bundle beats per-layer rank-d SVD")
    return Finding(claim, measured, Outcome.MISSED,
                   f"the gain is measured against the two-sided lambda -> inf corner ({finf:.3f}), not SVD-LLM; against "
                   f"per-layer rank-d SVD the bundle's Frobenius error is higher ({f0:.3f} vs {ey:.3f})")


def judge_tie_gap(claim: Claim, results: Results) -> Finding:
    a, b, main = _cell(results, 0.0, True), _cell(results, math.inf, True), main_rows(results)
    if a is None or b is None or "gbd-tied" not in main or "bs-core" not in main:
        return _missing(claim, "tied cells or tied rows missing", "run the phase diagram and the surgery")
    gap = 1 - a["frobenius_fraction"] / b["frobenius_fraction"]
    iv = ppl_ratio(main["gbd-tied"], main["bs-core"])
    measured = (f"Frobenius {a['frobenius_fraction']:.4f} vs {b['frobenius_fraction']:.4f} (gap {100 * gap:.1f} %); "
                + ratio_text("PPL(GBD-tied) / PPL(BS-core)", iv))
    return Finding(claim, measured, {-1: Outcome.MET, 0: Outcome.NOT_SIGNIFICANT, 1: Outcome.MISSED}[side(iv, 1)],
                   f"a {100 * gap:.1f} % Frobenius gap; in PPL the tied bundle is "
                   + {-1: "significantly better", 0: "not distinguishable", 1: "significantly worse"}[side(iv, 1)],
                   windows_needed(main["gbd-tied"], main["bs-core"], iv.estimate, "the measured ratio"))


def judge_ranking_reversal_pair(claim: Claim, results: Results) -> Finding:
    gain, main = _frobenius_gain(results), main_rows(results)
    if gain is None or "gbd" not in main or "v1" not in main:
        return _missing(claim, "phase corners or the GBD / V1 rows missing", "run the phase diagram and the surgery")
    f0, finf, _ = gain
    iv = ppl_ratio(main["gbd"], main["v1"])
    measured = f"Frobenius: GBD {f0:.3f} vs the corner {finf:.3f}; " + ratio_text("PPL(GBD) / PPL(V1)", iv)
    if f0 >= finf:
        return Finding(claim, measured, Outcome.MISSED, "GBD does not win on Frobenius")
    return Finding(claim, measured, {1: Outcome.MET, 0: Outcome.NOT_SIGNIFICANT, -1: Outcome.MISSED}[side(iv, 1)],
                   "GBD wins on Frobenius and " + {1: "loses significantly on PPL: the swap", 0: "the PPL interval "
                                                   "includes 1", -1: "wins on PPL too"}[side(iv, 1)])


def _ratio_sweep(results: Results) -> dict[float, dict[str, dict[str, Any]]]:
    """The ratio sweep of ``report --beyond`` (question 'ratio-sweep'): rows by d/D and method label."""
    out: dict[float, dict[str, dict[str, Any]]] = {}
    for r in (results.get("beyond") or {}).get("rows", []):
        if r.get("table") == "ratio-sweep":
            out.setdefault(r["ratio"], {})[r["label"]] = r
    return out


def judge_no_sweet_spot(claim: Claim, results: Results) -> Finding:
    main = main_rows(results)
    alone = next((r for r in rows(results, "convention") if r["method"] == "anchored"), None)
    corners = {"original": [main.get("gbd"), main.get("anchored")], "v1-output": [main.get("gbd"), alone]}
    inner = [r for r in interior_rows(results) if all(corners.get(r["convention"], [None]))]
    if not inner:
        return _missing(claim, "no interior configuration with both its corners run", "run the surgery")
    tests = [(r, best, ppl_ratio(r, best)) for r in inner
             for best in [min(corners[r["convention"]], key=lambda c: c["ppl"])]]
    measured = "; ".join(ratio_text(f"{r['label']} / {best['label']}", iv) for r, best, iv in tests)
    beats = [r["label"] for r, _, iv in tests if side(iv, 1) < 0]
    if beats:
        return Finding(claim, measured, Outcome.COUNTEREXAMPLE, f"{beats[0]} beats both corners of its anchor "
                       "convention significantly: a sweet spot")
    if all(side(iv, 1) > 0 for _, _, iv in tests):
        return Finding(claim, measured, Outcome.MET, "every interior lambda is significantly worse than the better "
                       "corner of its anchor convention")
    return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, "an interval includes 1")


def judge_best_config(claim: Claim, results: Results) -> Finding:
    family = [r for r in rows(results) if r["method"] in ("gbd", "bundle", "anchored")]
    alone = next((r for r in rows(results, "convention") if r["method"] == "anchored"), None)
    if alone is None or not family:
        return _missing(claim, "the corrected anchors alone were not run", "run the surgery")
    best = min(family, key=lambda r: r["ppl"])    # "best" = lowest PPL
    if best is alone:
        return Finding(claim, f"lowest PPL: {alone['label']} ({alone['ppl']:.4g})", Outcome.MET,
                       "the corrected anchors alone have the lowest PPL of the bundle family")
    iv = ppl_ratio(best, alone)
    measured = f"lowest PPL: {best['label']} ({best['ppl']:.4g}); " + ratio_text("it / the anchors alone", iv)
    return Finding(claim, measured, Outcome.MISSED if side(iv, 1) < 0 else Outcome.NOT_SIGNIFICANT,
                   f"{best['label']} is " + ("significantly better" if side(iv, 1) < 0 else "not distinguishable"))


def judge_per_layer(claim: Claim, results: Results) -> Finding:
    main = main_rows(results)
    v1, gbd = (main.get(m, {}).get("layer_activation") for m in ("v1", "gbd"))
    if not v1 or not gbd:
        return _missing(claim, "no per-layer activation error in the rows",
                        "rows of this version record the summed activation error only")
    worse = sum(g > v for g, v in zip(gbd, v1))
    measured = f"GBD's activation error above V1's on {worse} of {len(v1)} layers"
    return Finding(claim, measured, Outcome.MET if worse == len(v1) else Outcome.MISSED,
                   f"strictly worse on every layer: {worse == len(v1)}")


def _lambda_sweep(results: Results) -> list[dict[str, Any]]:
    """The paper's own lambda sweep, original anchors: lambda = 0 (GBD), the interior, lambda = inf (the corner)."""
    main = main_rows(results)
    inner = [r for r in interior_rows(results) if r["convention"] == "original"]
    return [r for r in [main.get("gbd"), *inner, main.get("anchored")] if r and r.get("two_sided_fraction") is not None]


def judge_tied_poor(claim: Claim, results: Results) -> Finding:
    main, poor = main_rows(results), claim.tolerance["poor"]
    if not {"gbd-tied", "bs-core", "v1"} <= set(main):
        return _missing(claim, "a tied method or V1 not run", "run the surgery")
    tests = [(m, ppl_ratio(main[m], main["v1"])) for m in ("gbd-tied", "bs-core")]
    ref = (f"; reference Basis Sharing: " + ratio_text("PPL / PPL(V1)", ppl_ratio(main["basis-sharing"], main["v1"]))
           if "basis-sharing" in main else "")
    measured = "; ".join(ratio_text(f"PPL({m}) / PPL(V1)", iv) for m, iv in tests) + ref
    if all(iv.above(poor) for _, iv in tests):
        return Finding(claim, measured, Outcome.MET, f"both more than {poor:g}x V1's PPL")
    if any(iv.below(poor) for _, iv in tests):
        return Finding(claim, measured, Outcome.MISSED, f"a tied method is within {poor:g}x of V1")
    return Finding(claim, measured, Outcome.NOT_SIGNIFICANT, f"an interval reaches {poor:g}x")


def judge_fact_false(claim: Claim, results: Results) -> Finding:
    return Finding(claim, claim.reason, Outcome.COUNTEREXAMPLE, f"false: {claim.reason}")


def judge_device_check(claim: Claim, results: Results) -> Finding:
    check = results.get("surgery", {}).get("device_check")
    if not check:
        return _missing(claim, "one device per run", "a run evaluates on one device and reads no other run's rows "
                        "(the committed H100 rows, reports/smollm2-full/surgery.json, share their first windows "
                        "with a CPU run's)")
    diff = check["max_nll_per_token_difference"]
    measured = f"{check['devices']}: largest per-token NLL difference {diff:.2g} over {check['windows']} windows"
    ok = diff <= claim.tolerance["nll"]
    return Finding(claim, measured, Outcome.MET if ok else Outcome.MISSED, f"at most {claim.tolerance['nll']:g}: {ok}")


@dataclass(frozen=True)
class Rule:
    """A judge and the rule it applies, in words, with {placeholders} for the claim's tolerance."""

    judge: Callable[[Claim, Results], Finding]
    template: str


RULES: dict[str, Rule] = {
    "bca_monotone": Rule(judge_bca_monotone, "met when the largest relative drop <= {drop:g}, else a counterexample"),
    "bca_monotone_plain": Rule(judge_bca_monotone_plain, "a counterexample when a run of the plain step cycles"),
    "bca_cost": Rule(judge_bca_cost, "met when a sweep costs at most {factor:g}x the per-layer SVD"),
    "cost_exponent": Rule(judge_cost_exponent, "met when the log-log slope of seconds per sweep against n lies in "
                          "[{low:g}, {high:g}]; not measured with fewer than three timed sizes"),
    "bca_sweeps": Rule(judge_bca_sweeps, "met when more than {most:.0%} of the cells stop (converged or stalled) "
                       "within {few:g} sweeps; a sweep-limit stop counts against"),
    "thm1_bound": Rule(judge_thm1_bound, "met when every bound holds on every stack, else a counterexample"),
    "thm1_rate": Rule(judge_thm1_rate, "met when every slope lies in [{low:g}, {high:g}]"),
    "real_slope": Rule(judge_real_slope, "met when the real stack's slope lies in [{low:g}, {high:g}]"),
    "large_lambda_limit": Rule(judge_large_lambda, "met when some finite lambda of the grid (tied = {tied:g}) is "
                               "within {relative:.0%} of the lambda = inf corner's Frobenius fraction; not measured "
                               "when none is and the grid stops below {min_lambda:g} c"),
    "thm2": Rule(judge_thm2, "a counterexample when an exact one exists, else met"),
    "thm2_sharp": Rule(judge_thm2_sharp, "met when every part of the sharp statement holds"),
    "cor3": Rule(judge_cor3, "met when every relative error <= {relative:g}, else a counterexample (the worst stack)"),
    "cor3_exact": Rule(judge_cor3_exact, "met when every relative error <= {relative:g}, else a counterexample"),
    "corner_svd": Rule(judge_corner_svd, "met when a paired PPL-ratio interval (original or V1-output anchors) lies "
                       "in [1/{band:g}, {band:g}]; missed when both lie outside; else not significant"),
    "phase_optimum": Rule(judge_phase_optimum, "met when no other phase cell is lower by more than a relative "
                          "{relative:g}"),
    "lambda0_anchors": Rule(judge_lambda0_anchors, "met when the two conventions' lambda = 0 fractions agree within "
                            "a relative {relative:g}"),
    "frobenius_gain": Rule(judge_frobenius_gain, "on the paper's model: met when |g - {paper:.3f}| <= {points:g}; "
                           "direction only when g > 0"),
    "frobenius_attenuation": Rule(judge_frobenius_attenuation, "needs two model sizes"),
    "frobenius_baseline": Rule(judge_frobenius_baseline, "met when the pure bundle's two-sided fraction is below "
                               "per-layer rank-d SVD's (Eckart-Young)"),
    "tied_dominance": Rule(judge_tied_dominance, "met when F(tied, 0) < F(tied, inf) (exact, no sampling)"),
    "tie_gap": Rule(judge_tie_gap, "met when the paired PPL ratio GBD-tied / BS-core lies below 1 (the Frobenius "
                    "gap is printed)"),
    "ppl_gbd": Rule(judge_ppl_gbd, "on the paper's model: ratio interval above 1 and both PPLs within {relative:.0%} "
                    "of {gbd:g} and {v1:g}: met; above 1 only: direction only; includes 1: not significant"),
    "hs_drop": Rule(judge_hs_drop, "on the paper's model (acc_norm = {norm:g}): McNemar p < 0.05 with a drop and "
                    "both accuracies within {points:g} of {v1:g} and {gbd:g}: met; drop only: direction only; "
                    "p >= 0.05: not significant"),
    "ranking_reversal_pair": Rule(judge_ranking_reversal_pair, "met when GBD's Frobenius fraction is below the "
                                  "corner's and its paired PPL ratio to V1 lies above 1"),
    "ranking_reversal": Rule(judge_ranking_reversal, "exact permutation p (negative) < {alpha:g} and rho <= {rho:g}: "
                             "met; p < {alpha:g} only: direction only; p (positive) < {alpha:g}: missed"),
    "activation_ranking": Rule(judge_activation_ranking, "met when V2 has the lowest activation error and its paired "
                               "PPL ratio to V1 lies above 1 (the paper's own pattern)"),
    "activation_ratio": Rule(judge_activation_ratio, "met when the activation ratio lies within a factor {factor:g} "
                             "of the PPL-ratio interval at every d/D of the sweep; missed (a coincidence) otherwise"),
    "lambda_flat": Rule(judge_lambda_flat, "not measured when the smallest lambda moves the Frobenius fraction by "
                        "more than {small:.0%}; met when the small-lambda ratio interval lies in [1/{flat:g}, "
                        "{flat:g}] and the large-lambda one above {catastrophic:g}"),
    "no_sweet_spot": Rule(judge_no_sweet_spot, "met when every interior ratio interval lies above 1; a "
                          "counterexample when one lies below"),
    "best_config": Rule(judge_best_config, "met when the corrected anchors alone have the lowest PPL (best = lowest "
                        "PPL); missed when another is significantly lower"),
    "anchor_fix": Rule(judge_anchor_fix, "at every lambda with both conventions: both intervals must exclude 1 "
                       "(help, gap); met when every help ratio >= {little:g} ('a little'), else direction only"),
    "bca_hurts": Rule(judge_bca_hurts, "met when the paired ratio interval lies above 1"),
    "projection": Rule(judge_projection, "met when the paired ratio interval lies above 1"),
    "interior": Rule(judge_interior, "a counterexample when a ratio interval lies below 1; not significant when one "
                     "includes 1; met when all lie above 1 with estimates in [{low:g}, {high:g}]"),
    "per_layer": Rule(judge_per_layer, "met when GBD's activation error is above V1's on every layer"),
    "mechanism": Rule(judge_mechanism, "rho(activation) interval above {rho:g}; missed when the lambda sweep's "
                      "rho(Frobenius, PPL) is significantly positive (exact p < {alpha:g}); met when the interior "
                      "rho(Frobenius) interval lies below 0, else direction only"),
    "tie_bs": Rule(judge_tie_bs, "met when the PPL interval lies above a unigram model's PPL on the same windows and "
                   "the HellaSwag accuracy interval contains chance ({chance:g}); missed when below the unigram "
                   "model and above chance; else direction only"),
    "tied_poor": Rule(judge_tied_poor, "met when both tied methods' paired PPL ratios to V1 lie above {poor:g}"),
    "fact_false": Rule(judge_fact_false, "a statement of fact the paper's materials contradict"),
    "device_check": Rule(judge_device_check, "met when the same windows' per-token NLLs on two devices differ by at "
                         "most {nll:g}"),
}


def rule_text(claim: Claim) -> str:
    """The claim's rule, filled with the ledger's numbers for it."""
    return RULES[claim.judge].template.format(**claim.tolerance)


def judge(claim: Claim, results: Results) -> Judgement:
    return classify(RULES[claim.judge].judge(claim, results), results)


def judge_all(results: Results) -> list[Judgement]:
    """One judgement per claim, in the order of the ledger."""
    return [judge(c, results) for c in CLAIMS]
