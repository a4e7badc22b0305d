"""Each rule of the ledger flips its verdict when the measurement it reads crosses the rule's threshold, and each
verdict's class says what was tested (``experiments.audit.verdicts.classify``). Synthetic results as in
tests/test_report.py (fast: no model is run)."""
from __future__ import annotations

import math

import pytest

from experiments.audit.ledger import CLAIMS, claim
from experiments.audit.measures import spearman_exact
from experiments.audit.verdicts import Finding, Outcome, Verdict, classify, judge_all
from tests.test_report import DEFAULT_PPL, predictions, results, row, surgery, theory, verdicts  # noqa: F401


def judged(results: dict, claim_id: str):
    return {j.claim.id: j for j in judge_all(results)}[claim_id]


def main_row(results: dict, method: str) -> dict:
    return next(r for r in results["surgery"]["rows"] if r["method"] == method and r["table"] == "main")


def test_a_measurement_reproduces_only_on_the_papers_model_and_transfers_elsewhere_naming_the_model(results):
    finding = Finding(claim("projection-beats-sandwich"), "m", Outcome.MET, "w")
    assert classify(finding, results).verdict is Verdict.TRANSFERS and "on tiny" in classify(finding, results).why
    results["model"]["name"] = "EleutherAI/pythia-1.4b"
    assert classify(finding, results).verdict is Verdict.REPRODUCED
    assert classify(Finding(claim("cor3-exact"), "m", Outcome.MET, "w"), results).verdict is Verdict.OWN_RESULT
    by_construction = classify(Finding(claim("phase-optimum"), "m", Outcome.MET, "w"), results)
    assert by_construction.verdict is Verdict.BY_CONSTRUCTION and "not evidence" in by_construction.why


def test_no_pythia_claim_is_reproduced_on_another_model(results):
    for c in CLAIMS:
        finding = Finding(c, "m", Outcome.MET, "w")
        assert classify(finding, results).verdict not in (Verdict.REPRODUCED, Verdict.REPRODUCED_DIRECTION)


def test_corner_svd_transfers_when_either_anchor_convention_matches_v1(results):
    assert verdicts(results)["corner-svd"] is Verdict.DOES_NOT_TRANSFER
    why = judged(results, "corner-svd").why
    assert "never one-sided whitened V1" in why and "Eckart-Young 0.100" in why and "raw two-sided" not in why
    alone = next(r for r in results["surgery"]["rows"] if r["table"] == "convention" and r["method"] == "anchored")
    alone.update(row("anchors alone", "anchored", "convention", 40.0, lam=math.inf, convention="v1-output", seed=1))
    assert verdicts(results)["corner-svd"] is Verdict.TRANSFERS


def test_ranking_reversal_on_the_papers_pairing_flips_with_the_ppl_interval(results):
    assert verdicts(results)["ranking-reversal"] is Verdict.TRANSFERS        # F 0.3 < 0.5, PPL 400 vs 40
    main_row(results, "gbd").update(row("gbd", "gbd", "main", 30.0, seed=3))
    assert verdicts(results)["ranking-reversal"] is Verdict.DOES_NOT_TRANSFER


def test_ranking_reversal_over_all_methods_uses_an_exact_permutation_p(results):
    assert verdicts(results)["ranking-reversal-all"] is Verdict.TRANSFERS     # Frobenius = 1 / PPL: rho = -1
    for r in results["surgery"]["rows"]:
        if r["method"] is not None:
            r["frobenius_fraction"] = r["ppl"]
    assert verdicts(results)["ranking-reversal-all"] is Verdict.DOES_NOT_TRANSFER
    rho, p_less, p_greater = spearman_exact([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert rho == pytest.approx(1) and p_greater == pytest.approx(1 / 120) and p_less == pytest.approx(1)


def test_lambda_flat_is_not_measured_unless_the_smallest_lambda_barely_moves_frobenius(results):
    points = results["phase"]["points"]
    points.append({**points[1], "lam_over_c": 0.1, "frobenius_fraction": 0.5})      # 0.3 -> 0.5: not small
    assert verdicts(results)["lambda-flat"] is Verdict.NOT_MEASURED
    points[-1]["frobenius_fraction"] = 0.301                                        # small: judged (60 / 400)
    assert verdicts(results)["lambda-flat"] is Verdict.DOES_NOT_TRANSFER


def test_bca_sweeps_counts_stalled_cells_by_their_stop_reason_not_as_failures(results):
    points = [p for p in results["phase"]["points"] if p["sweeps"] is not None]
    for p in points[:2]:
        p.update(sweeps=9, converged=False)              # stopped below the limit: stalled on flat energy
    results["surgery"]["budget"]["stopping"] = {"gtol": 1e-6, "stall_tol": 1e-7, "max_sweeps": 60}
    assert verdicts(results)["bca-sweeps"] is Verdict.TRANSFERS
    for p in points[:3]:
        p.update(sweeps=60, converged=False)             # the sweep limit
    j = judged(results, "bca-sweeps")
    assert j.verdict is Verdict.DOES_NOT_TRANSFER and "3 hit the sweep limit" in j.why
    for p in points[:3]:
        p.update(stop_reason="stalled")                  # a recorded stop reason wins over the inference
    assert "0 hit the sweep limit" in judged(results, "bca-sweeps").why


def test_anchor_fix_is_judged_at_every_lambda_with_both_conventions(results):
    assert verdicts(results)["anchor-fix-small"] is Verdict.TRANSFERS                 # 70 / 80 at 1 c
    results["surgery"] = surgery(DEFAULT_PPL, interior=(60.0, 80.0, 120.0), v1_output=70.0)
    alone = next(r for r in results["surgery"]["rows"] if r["table"] == "convention" and r["method"] == "anchored")
    alone.update(row("anchors alone", "anchored", "convention", 45.0, lam=math.inf, convention="v1-output"))
    main_row(results, "anchored").update(lam_over_c=math.inf)                          # 45 / 5000 at inf
    j = judged(results, "anchor-fix-small")
    assert j.verdict is Verdict.TRANSFERS_DIRECTION and "at inf c" in j.why


def test_mechanism_fails_when_frobenius_tracks_ppl_over_the_lambda_sweep(results):
    assert verdicts(results)["mechanism"] is Verdict.TRANSFERS_DIRECTION
    for r in results["surgery"]["rows"]:
        if r["method"] is not None:
            r["two_sided_fraction"] = r["ppl"] / 1e4          # rho = +1 over the sweep's 5 points: p = 1/120
    j = judged(results, "mechanism")
    assert j.verdict is Verdict.DOES_NOT_TRANSFER and "rho(two-sided Frobenius, PPL) = +1" in j.measured


def test_activation_ratio_is_a_coincidence_when_the_ratios_diverge_across_d_over_d(results):
    assert verdicts(results)["activation-ratio"] is Verdict.NOT_MEASURED                # one point only

    def sweep_row(label: str, ratio: float, ppl: float, act: float) -> dict:
        return {**row(label, "x", "beyond", ppl), "table": "ratio-sweep", "ratio": ratio, "activation_fraction": act}
    rows = [sweep_row("SVD-LLM V1", r, 40.0, 0.01) for r in (0.125, 0.25, 0.5)]
    rows += [sweep_row("pure bundle (GBD)", r, 40.0 * k, 0.01 * k) for r, k in ((0.125, 8), (0.25, 4), (0.5, 2))]
    results["beyond"] = {"rows": rows}
    assert verdicts(results)["activation-ratio"] is Verdict.TRANSFERS
    rows[-1]["activation_fraction"] = 0.01 * 20                                         # 20x vs 2x at d/D = 0.5
    j = judged(results, "activation-ratio")
    assert j.verdict is Verdict.DOES_NOT_TRANSFER and "coincidence" in j.why and "0.5" in j.why


def test_the_plain_tied_step_is_refuted_by_a_cycle(results):
    results["theory"]["bca"]["plain_step"] = {"gradient": 41, "cycle": 0}
    assert verdicts(results)["bca-monotone-plain"] is Verdict.HOLDS
    results["theory"]["bca"]["plain_step"] = {"gradient": 41, "cycle": 7}
    j = judged(results, "bca-monotone-plain")
    assert j.verdict is Verdict.REFUTED and "7 of 48 runs cycle" in j.why


def test_frobenius_baseline_names_the_corner_and_eckart_young(results):
    j = judged(results, "frob-baseline")
    assert j.verdict is Verdict.DOES_NOT_TRANSFER and "higher (0.300 vs 0.100)" in j.why
    results["phase"]["eckart_young_fraction"] = 0.35
    assert verdicts(results)["frob-baseline"] is Verdict.TRANSFERS


def test_section_7_3_claims_no_sweet_spot_and_best_configuration(results):
    assert verdicts(results)["best-config"] is Verdict.TRANSFERS           # anchors alone 35: the lowest
    assert verdicts(results)["no-sweet-spot"] is Verdict.DOES_NOT_TRANSFER  # bundle 0.1 (60) < corners 400, 5000
    results["surgery"] = surgery(DEFAULT_PPL, interior=(600.0, 800.0, 1200.0), v1_output=900.0)
    assert verdicts(results)["no-sweet-spot"] is Verdict.TRANSFERS
    conv = next(r for r in results["surgery"]["rows"] if r["table"] == "convention" and r["method"] == "bundle")
    conv.update(row("conv", "bundle", "convention", 30.0, lam=1.0, convention="v1-output"))
    assert verdicts(results)["best-config"] is Verdict.DOES_NOT_TRANSFER


def test_both_tied_methods_poor_and_the_tied_gap(results):
    rows = results["surgery"]["rows"]
    rows.append(row("GBD-tied", "gbd-tied", "main", 2000.0, seed=11))
    assert verdicts(results)["tied-both-poor"] is Verdict.TRANSFERS
    assert verdicts(results)["tie-gap-size"] is Verdict.TRANSFERS              # 2000 < 3000; F 0.6 vs 0.7
    rows[-1].update(row("GBD-tied", "gbd-tied", "main", 60.0, seed=11))       # 1.5x V1: not poor
    assert verdicts(results)["tied-both-poor"] is Verdict.DOES_NOT_TRANSFER


def test_lambda0_anchor_conventions_agree_by_construction(results):
    points = results["phase"]["points"]
    points.append({**points[0], "convention": "v1-output", "frobenius_fraction": 0.3000001})
    assert verdicts(results)["lambda0-anchors"] is Verdict.BY_CONSTRUCTION
    points[-1]["frobenius_fraction"] = 0.31
    assert verdicts(results)["lambda0-anchors"] is Verdict.REFUTED


def test_thm1_rate_says_how_many_stacks_it_dropped_and_why(results):
    t1 = results["theory"]["theorem1"]
    m = judged(results, "thm1-rate").measured
    assert f"over {len(t1['slopes'])} of {t1['stacks']} stacks; {t1['stacks'] - len(t1['slopes'])} dropped" in m
    assert "below 1e-13" in m
