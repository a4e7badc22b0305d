"""The theory audit's contract with the report and the verdicts: its keys, JSON-ready values, determinism."""
import json

import pytest

from experiments.render.theory import render_theory
from experiments.runs.modes import MODES
from experiments.runs.theory_audit import audit_bca, audit_corollary3, audit_theorem1, audit_theorem2, audit_theory


@pytest.fixture(scope="module")
def theory() -> dict:
    return {"mode": "test", "seed": 5, "per_family": 1, "bca": audit_bca(1, 5), "theorem1": audit_theorem1(1, 5),
            "theorem2": audit_theorem2(1, 5), "corollary3": audit_corollary3(1, 5)}


def test_audit_has_the_keys_others_read_and_is_json_ready(theory):
    bca, t1, t2, c3 = theory["bca"], theory["theorem1"], theory["theorem2"], theory["corollary3"]
    assert {"runs", "max_drop", "comparisons", "reached_best", "worst_gap", "median_gap", "rows", "stop_reasons",
            "endpoints"} <= set(bca)
    assert set(bca["endpoints"]) == {"local maximum", "saddle", "not critical"}
    assert sum(bca["stop_reasons"].values()) == bca["comparisons"] == sum(bca["endpoints"].values())
    assert {"stacks", "bound_holds", "prior_bound_holds", "slopes", "slope_min", "slope_max", "curve",
            "tightness"} <= set(t1)
    assert {"by_family", "hand", "minimal", "sharp"} <= set(t2) and {"rows", "examples"} <= set(t2["sharp"])
    assert {"ts", "rows", "exact_max_relative_error", "exact_stacks", "third_order"} <= set(c3)
    assert all("rel_err_t1" in r for r in c3["rows"])
    json.dumps(theory, allow_nan=True)
    text = render_theory(theory)
    assert "stop reason" in text and "sharp statement" in text and "Part 2, the exact statement, holds" in text


def test_audit_is_deterministic_in_its_seed(theory):
    assert json.dumps(audit_bca(1, 5)) == json.dumps(theory["bca"])
    assert json.dumps(audit_corollary3(1, 5)) == json.dumps(theory["corollary3"])


def test_audit_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        audit_theory("huge")
    assert set(MODES) == {"quick", "standard", "full"}


def test_the_report_reads_the_tolerances_from_the_stopping_rule_and_counts_the_undecided(theory):
    """No literal tolerance in the text: change the recorded rule and the text follows it."""
    changed = json.loads(json.dumps(theory))
    for rule in changed["bca"]["rules"].values():
        rule.update(gtol=3e-7, stall_tol=4e-11)
    changed["theorem2"]["sharp"]["gtol"] = 3e-7
    text = render_theory(changed)
    assert "<= 3e-07" in text and "<= 4e-11 relative" in text and "above 3e-07" in text
    assert "1e-06" in render_theory(theory) and "<= 1e-06" not in text and "above 1e-06" not in text
    assert "undecided with n <= 4" in text
    assert all({"global", "undecided", "undecided_small"} <= set(r) for r in theory["theorem2"]["by_family"].values())
