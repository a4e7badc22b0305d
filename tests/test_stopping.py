"""One stopping rule (theory.stopping): its reasons, and every caller deciding by the rule it is given."""
import numpy as np
import pytest

from experiments.compress import compress
from experiments.errors import GbdError
from tests.theory_checks import ISSUE26
from theory.bca import basis_sharing_core, bca_tied, bca_untied
from theory.corners import solve
from theory.objective import TiedProblem
from theory.stack import Stack
from theory.stopping import STALL_SWEEPS, StoppingRule
from theory.strategies import make_stack
from theory.theorems import check_theorem2


def test_the_rule_gives_the_reason_in_pymanopts_order():
    rule = StoppingRule(gtol=1e-6, stall_tol=1e-9, max_sweeps=10)
    assert rule.reason(1e-6, STALL_SWEEPS, 10) == "gradient"
    assert rule.reason(2e-6, STALL_SWEEPS, 10) == "stalled"
    assert rule.reason(2e-6, STALL_SWEEPS - 1, 10) == "max_sweeps"
    assert rule.reason(2e-6, 0, 9) is None
    assert rule.small_change(1e6, 1e6 + 1e-4) and not rule.small_change(1e6, 1e6 + 1e-2)


@pytest.mark.parametrize("bad", [dict(gtol=-1.0), dict(stall_tol=1.0), dict(max_sweeps=-1)])
def test_a_rule_out_of_range_is_refused(bad):
    with pytest.raises(ValueError):
        StoppingRule(**bad)


def test_the_explanation_names_the_reason_and_the_rules_numbers():
    rule = StoppingRule(gtol=1e-7, stall_tol=1e-9, max_sweeps=60)
    assert "sweep limit 60" in rule.explain("max_sweeps", 60) and "after 60 sweeps" in rule.explain("max_sweeps", 60)
    stalled = rule.explain("stalled", 17)
    assert stalled.startswith("BCA stalled") and "1e-09" in stalled and "sweep limit" not in stalled
    with pytest.raises(ValueError):
        rule.explain("tired", 3)


@pytest.mark.parametrize("weights", [ISSUE26, ISSUE26[:1]], ids=["issue 26", "one layer"])
def test_every_caller_decides_criticality_by_the_rule_it_is_given(weights):
    """U_BS of the issue's stack has a relative gradient between 1e-6 and 1e-5: a caller that keeps a literal of its
    own (or the former absolute test ||grad|| > 1e-7 sum ||W_l||^2) disagrees with the rule on one side."""
    stack = Stack.of(weights)
    U = basis_sharing_core(stack, 2)
    rel = TiedProblem(stack).relative_grad(U)
    assert 1e-6 < rel < 1e-5
    for gtol in (rel / 2, rel * 2):
        rule = StoppingRule(gtol=gtol, max_sweeps=2000)
        critical = gtol > rel
        assert (TiedProblem(stack).classify(U, rule) != "not critical") == critical
        r = check_theorem2(stack, 2, rule=rule)
        assert (r.case != "gradient") == critical and r.rule == rule
        run = bca_tied(stack, 2, init=U, rule=rule)
        assert (run.sweeps == 0 and run.converged) == critical and run.rule == rule


def test_corners_and_untied_bca_stop_by_the_rule():
    stack = make_stack("random", [6] * 4, seed=2)
    loose, strict = StoppingRule(gtol=1e-2), StoppingRule(gtol=1e-10, stall_tol=0.0)
    assert bca_untied(stack, 2, rule=loose).sweeps < bca_untied(stack, 2, rule=strict).sweeps
    sol = solve(stack, 2, 0.0, False, rule=StoppingRule(gtol=0.0, stall_tol=0.0, max_sweeps=3))
    assert sol.run.sweeps == 3 and sol.run.stop_reason == "max_sweeps" and sol.run.rule.max_sweeps == 3


def _gbd_notes(rule: StoppingRule) -> tuple[list[str], int]:
    stack = make_stack("random", [8] * 4, seed=5)
    rng = np.random.default_rng(0)
    sigmas = [(lambda X: X @ X.T)(rng.standard_normal((8, 30))) for _ in range(3)]
    c = compress(stack.weights, sigmas, None, "gbd", 3, stopping=rule)
    return c.notes, c.bca_sweeps


def test_the_compressors_note_says_why_bca_really_stopped():
    """The former note said 'stopped at the sweep limit' for every unconverged run, even one that stalled."""
    notes, sweeps = _gbd_notes(StoppingRule(gtol=0.0, stall_tol=0.5, max_sweeps=60))
    assert sweeps == STALL_SWEEPS and any(n.startswith("BCA stalled") and f"after {sweeps} sweeps" in n for n in notes)
    assert not any("sweep limit 60" in n for n in notes)
    notes, sweeps = _gbd_notes(StoppingRule(gtol=0.0, stall_tol=0.0, max_sweeps=2))
    assert sweeps == 2 and any("sweep limit 2" in n for n in notes)


def test_compress_refuses_a_stopping_rule_that_is_not_one():
    stack = make_stack("random", [4] * 3, seed=1)
    with pytest.raises(GbdError, match="StoppingRule"):
        compress(stack.weights, [np.eye(4)] * 2, None, "gbd", 2, stopping=1e-10)
