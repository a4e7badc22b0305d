"""Verdict rules and the Markdown report on results whose numbers the test chooses (theory part measured)."""
from __future__ import annotations

import copy
import math

import pytest

from experiments.claims import CLAIMS, Verdict
from experiments.report import write_report
from experiments.verdicts import judge_all
from experiments.verify import audit_theory

DEFAULT_PPL = {"original": 20.0, "v1": 40.0, "v2": 45.0, "gbd": 400.0, "bs-core": 3000.0}


def row(label: str, method: str | None, table: str, ppl: float, lam: float = 0.0, convention: str = "original",
        installation: str = "projection") -> dict:
    """One surgery row with the keys the pipeline writes; activation error ppl / 1000 (tracks perplexity),
    Frobenius error 1 / ppl (the opposite order)."""
    r = {"label": label, "method": method, "table": table, "lam_over_c": lam, "tied": False,
         "convention": convention, "installation": installation, "d": 4, "ppl": ppl, "hellaswag_acc": 0.4,
         "hellaswag_acc_norm": 0.45, "hellaswag_n": 40, "hellaswag_source": "test", "hellaswag_note": "test note",
         "ppl_protocol": "test protocol", "nonfinite_windows": 0}
    if method is not None:
        r.update({"frobenius_fraction": 1 / ppl, "activation_fraction": ppl / 1000, "two_sided_fraction": 1 / ppl,
                  "params_kept": 32, "params_original": 64, "ranks": [4, 4], "notes": ["a note"], "bca_sweeps": 3})
    return r


def surgery(ppl: dict[str, float], interior: tuple[float, ...] = (60.0, 80.0, 120.0)) -> dict:
    """Rows of every table: the main methods, an interior sweep, an anchor convention, a surgery formula."""
    rows = [row(method, None if method == "original" else method, "main", p) for method, p in ppl.items()]
    rows += [row(f"bundle {lam}", "bundle", "sweep", p, lam=lam) for lam, p in zip((0.1, 1.0, 10.0), interior)]
    rows.append(row("conv", "bundle", "convention", 70.0, lam=1.0, convention="v1-output"))
    rows.append(row("sandwich", "gbd", "surgery", 900.0, installation="sandwich"))
    return {"d": 4, "D": 16, "kind": "attn_out", "budget": {"calib_n": 2, "calib_T": 8}, "lambda_unit_c": 1.0,
            "sources": {"calibration": {"name": "calib", "path": "/x", "sha256": "ab" * 32}},
            "fingerprint": "cd" * 32, "rows": rows, "hellaswag_cross_check": None}


@pytest.fixture(scope="module")
def theory() -> dict:
    return audit_theory("quick", seed=0)


@pytest.fixture
def results(theory) -> dict:
    phase = {"d": 4, "L": 2, "dims": [16, 16, 16], "eckart_young_fraction": 0.1, "points": [
        {"lam_over_c": lam, "tied": tied, "convention": conv, "frobenius_fraction": f, "sweeps": 3, "converged": True}
        for lam, tied, conv, f in ((0.0, False, "original", 0.3), (1.0, False, "original", 0.4),
                                   (math.inf, False, "original", 0.5), (0.0, True, "original", 0.6),
                                   (math.inf, True, "original", 0.7))]}
    return {"command": "gbd-audit report --mode quick", "mode": "quick", "seed": 0, "ratio": 0.25,
            "kind": "attn_out", "versions": {"python": "3"}, "started": "today", "theory": copy.deepcopy(theory),
            "model": {"name": "tiny", "source": "test", "vocab_size": 50000, "layers": 2}, "phase": phase,
            "surgery": surgery(DEFAULT_PPL), "timings_s": {"total": 1.0}}


def verdicts(results: dict) -> dict[str, Verdict]:
    return {j.claim.id: j.verdict for j in judge_all(results)}


def test_every_claim_gets_a_verdict_and_the_model_specific_ones_are_not_measured_on_another_model(results):
    v = verdicts(results)
    assert list(v) == [c.id for c in CLAIMS]
    for claim_id in ("frob-70m", "frob-1.4b", "ppl-gbd", "hs-drop"):
        assert v[claim_id] is Verdict.NOT_MEASURED
    assert v["thm2"] is Verdict.REFUTED and v["thm1-rate"] is Verdict.REPRODUCED and v["cor3"] is Verdict.REFUTED
    assert v["interior"] is Verdict.REPRODUCED and v["mechanism"] is Verdict.REPRODUCED
    assert v["tie-bs"] is Verdict.REPRODUCED    # ln 3000 / ln 50000 = 0.74 >= 0.5


def test_frobenius_gain_is_judged_on_the_papers_model(results):
    results["model"]["name"] = "pythia-70m"     # phase corners: 1 - 0.3 / 0.5 = 40 % vs the paper's 46.4 %
    j = {j.claim.id: j for j in judge_all(results)}
    assert j["frob-70m"].verdict is Verdict.NOT_REPRODUCED and "40.0 %" in j["frob-70m"].measured
    results["phase"]["points"][0]["frobenius_fraction"] = 0.27   # 46 %
    assert verdicts(results)["frob-70m"] is Verdict.REPRODUCED
    assert verdicts(results)["frob-1.4b"] is Verdict.NOT_MEASURED


def test_an_interior_point_better_than_v1_is_not_reproduced(results):
    results["surgery"] = surgery(DEFAULT_PPL, interior=(60.0, 35.0, 120.0))
    assert verdicts(results)["interior"] is Verdict.NOT_REPRODUCED


def test_mechanism_fails_when_activation_error_does_not_track_perplexity(results):
    for r in results["surgery"]["rows"]:
        if r["method"] is not None:
            r["activation_fraction"], r["frobenius_fraction"] = 1.0 / r["ppl"], r["ppl"]
    assert verdicts(results)["mechanism"] is Verdict.NOT_REPRODUCED


def test_a_mild_basis_sharing_core_is_not_a_collapse(results):
    results["surgery"] = surgery({**DEFAULT_PPL, "bs-core": 100.0})   # ln 100 / ln 50000 = 0.43
    assert verdicts(results)["tie-bs"] is Verdict.NOT_REPRODUCED


def test_theorem_verdicts_follow_the_measurements(results):
    t1 = results["theory"]["theorem1"]
    t1["slope_max"] = -0.5
    assert verdicts(results)["thm1-rate"] is Verdict.NOT_REPRODUCED
    for r in results["theory"]["corollary3"]["rows"]:
        r["rel_err_t1"] = 1e-12
    assert verdicts(results)["cor3"] is Verdict.REPRODUCED


def test_report_has_every_claim_its_tables_and_figures(results, tmp_path):
    path = write_report(results, tmp_path)
    text = path.read_text()
    for c in CLAIMS:
        assert f"| {c.id} |" in text
    for section in ("## Claims and verdicts", "### Theorem 2", "### Corollary 3", "## Frobenius phase diagram",
                    "### Main table", "### Anchor strength sweep", "### Anchor convention", "### Surgery formula",
                    "## Mechanism", "## Re-running this report"):
        assert section in text
    assert results["command"] in text and "ab" * 32 in text
    for figure in ("theorem1.png", "corollary3.png", "phase.png", "scatter_activation.png", "scatter_frobenius.png"):
        assert (tmp_path / figure).stat().st_size > 1000 and f"({figure})" in text
    assert (tmp_path / "results.json").is_file()
    assert "| 400 |" in text and "20.00x" in text    # GBD's PPL and its ratio to the original


def test_versions_name_no_kernel():
    import platform

    from experiments.reproduce import versions

    found = versions()
    assert found["platform"] == f"{platform.system()} {platform.machine()}"
    assert platform.release() not in " ".join(found.values())
