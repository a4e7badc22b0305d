"""BCA: monotone in the energy, stops for a stated reason, reaches critical points checked independently,
and each solver's end point passes its own check (against pymanopt trust regions and restarts)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.theory_checks import (fd_gradient_norm, fd_second_derivatives, tied_energy_by_traces,
                                 untied_energy_by_traces, untied_fd_gradient_norms)
from theory.anchors import anchors
from theory.bca import STOP_REASONS, basis_sharing_core, bca_tied, bca_untied, swept
from theory.energy import e1, eckart_young_floor, two_sided_error
from theory.grassmann import exp, projection, random_section
from theory.manopt_solver import trust_regions_tied, trust_regions_untied
from theory.objective import TiedProblem, UntiedProblem
from theory.stack import Stack
from theory.stopping import StoppingRule
from theory.strategies import SQUARE_FAMILIES, make_stack, stacks
from theory.theorems import EndPoint, compare_solvers

LAMBDAS = st.sampled_from([0.0, 0.3, 3.0, 30.0])
# random 3 x 3, L = 1, d = 1 stacks on which the plain tied step cycles between non-critical sections; the
# energy-change stop used to call them converged at relative gradients 0.94, 0.91 and 0.90
CYCLING_SEEDS = (5, 10, 11)


def _nondecreasing(history: list[float]) -> bool:
    h = np.asarray(history)
    return bool(np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))))


@given(stacks(), LAMBDAS)
def test_untied_bca_never_lowers_the_energy_and_reports_it_correctly(stack_d, lam):
    stack, d = stack_d
    A = anchors(stack, d)
    run = bca_untied(stack, d, lam=lam, anchors=A if lam else None, rule=StoppingRule(max_sweeps=200))
    assert _nondecreasing(run.history)
    assert run.stop_reason in STOP_REASONS
    assert run.energy == pytest.approx(untied_energy_by_traces(stack.weights, run.sections, lam, A), rel=1e-10)


@given(stacks(families=SQUARE_FAMILIES), LAMBDAS)
def test_tied_bca_with_the_safe_shift_never_lowers_the_energy_and_reports_it_correctly(stack_d, lam):
    stack, d = stack_d
    run = bca_tied(stack, d, lam=lam, rule=StoppingRule(max_sweeps=300))
    assert _nondecreasing(run.history)
    assert run.stop_reason in STOP_REASONS
    A = basis_sharing_core(stack, d)
    assert run.energy == pytest.approx(tied_energy_by_traces(stack.weights, run.sections[0], lam, A), rel=1e-10)


@given(stacks(max_n=5, max_L=3))
def test_converged_untied_bca_is_critical_by_finite_differences(stack_d):
    stack, d = stack_d
    run = bca_untied(stack, d, rule=StoppingRule(stall_tol=1e-6, max_sweeps=3000))
    if not run.converged:
        assert run.stop_reason in ("stalled", "max_sweeps") and not run.rule.critical(run.rel_grad)
        return
    assert max(untied_fd_gradient_norms(stack.weights, run.sections)) <= 1e-4 * stack.total_energy()


@given(stacks(families=SQUARE_FAMILIES, max_n=5, max_L=3), st.sampled_from([1e-12, 1e-6]))
def test_converged_tied_bca_is_critical_by_finite_differences_whatever_the_energy_tolerance(stack_d, tol):
    """A loose energy tolerance may stop the run as 'stalled', never as converged away from a critical point."""
    stack, d = stack_d
    run = bca_tied(stack, d, rule=StoppingRule(stall_tol=tol, max_sweeps=2000))
    if run.converged:
        scale = stack.total_energy()
        assert fd_gradient_norm(lambda V: tied_energy_by_traces(stack.weights, V), run.sections[0]) <= 1e-4 * scale


@pytest.mark.parametrize("seed", CYCLING_SEEDS)
def test_a_cycle_of_the_plain_tied_step_is_caught_and_the_safe_step_reaches_a_local_maximum(seed):
    stack = make_stack("random", [3, 3], seed)
    T = lambda V: tied_energy_by_traces(stack.weights, V)                               # noqa: E731
    plain = bca_tied(stack, 1, shift="none")
    assert plain.stop_reason == "cycle" and not plain.converged
    assert fd_gradient_norm(T, plain.sections[0]) > 0.1 * stack.total_energy()    # not critical at all
    run = bca_tied(stack, 1)
    assert run.converged and run.cycles >= 1 and run.energy > plain.energy
    U = run.sections[0]
    assert fd_gradient_norm(T, U) <= 1e-4 * stack.total_energy()
    assert max(fd_second_derivatives(T, U)) < 0                                     # a strict local maximum


@pytest.mark.parametrize("seed", CYCLING_SEEDS)
@pytest.mark.parametrize("shift", ["auto", "none"])
def test_a_loose_energy_tolerance_never_passes_a_cycle_off_as_converged(seed, shift):
    stack = make_stack("random", [3, 3], seed)
    run = bca_tied(stack, 1, rule=StoppingRule(stall_tol=1e-4, max_sweeps=2000), shift=shift)
    critical = fd_gradient_norm(lambda V: tied_energy_by_traces(stack.weights, V), run.sections[0]) \
        <= 1e-4 * stack.total_energy()
    assert run.converged == critical
    assert run.stop_reason == ("cycle" if shift == "none" else run.stop_reason)


def test_end_points_are_classified_by_the_riemannian_hessian():
    """T(u) = (u^T W u)^2 with W = diag(3, 2, 1): e_1 maximum, e_2 saddle, (e_1 + e_2)/sqrt 2 not critical."""
    problem = TiedProblem(Stack.of([np.diag([3.0, 2.0, 1.0])]))
    e = np.eye(3)
    assert problem.classify(e[:, :1]) == "local maximum"
    assert problem.classify(e[:, 1:2]) == "saddle"
    assert problem.classify(((e[:, 0] + e[:, 1]) / np.sqrt(2))[:, None]) == "not critical"


@given(stacks(families=SQUARE_FAMILIES))
def test_sandwich_error_is_at_least_the_eckart_young_floor(stack_d):
    """No shared-section sandwich beats each layer's own truncated SVD in raw Frobenius error."""
    stack, d = stack_d
    sections = bca_untied(stack, d).sections
    assert two_sided_error(stack, sections) >= eckart_young_floor(stack, d) * (1 - 1e-9) - 1e-12


@given(stacks(families=SQUARE_FAMILIES), st.integers(0, 2**32 - 1))
def test_basis_sharing_core_minimizes_the_one_sided_error(stack_d, seed):
    stack, d = stack_d
    U_bs = basis_sharing_core(stack, d)
    s = np.linalg.svd(np.hstack(stack.weights), compute_uv=False)
    assert e1(stack, U_bs) == pytest.approx(float(np.sum(s[d:] ** 2)), rel=1e-9, abs=1e-9)
    U = random_section(stack.dims[0], d, np.random.default_rng(seed))
    assert e1(stack, U) >= e1(stack, U_bs) - 1e-9 * stack.total_energy()


@pytest.mark.parametrize("family", SQUARE_FAMILIES)
def test_every_solver_end_point_passes_its_own_check_and_bca_matches_the_best(family):
    stack = make_stack(family, [6] * 4, seed=7)
    for tied in (False, True):
        comparison = compare_solvers(stack, 2, tied=tied, restarts=4, seed=1)
        assert comparison.failures == [], (family, tied, comparison.endpoints)
        assert comparison.relative_gap <= 1e-3, (family, tied, comparison)


def test_trust_regions_reach_a_critical_point_from_a_random_start_by_finite_differences():
    stack = make_stack("random", [5] * 3, seed=3)
    rng = np.random.default_rng(0)
    U, value, reason = trust_regions_tied(stack, 2, init=random_section(5, 2, rng))
    assert reason                                                                       # pymanopt's own
    T = lambda V: tied_energy_by_traces(stack.weights, V)                               # noqa: E731
    assert value == pytest.approx(T(U), rel=1e-10)
    assert fd_gradient_norm(T, U) <= 1e-5 * stack.total_energy()
    sections, value, _ = trust_regions_untied(stack, 2, init=[random_section(5, 2, rng) for _ in range(3)])
    assert value == pytest.approx(untied_energy_by_traces(stack.weights, sections), rel=1e-10)
    for i, V0 in enumerate(sections):
        def f(V, i=i):
            return untied_energy_by_traces(stack.weights, sections[:i] + [V] + sections[i + 1:])
        assert fd_gradient_norm(f, V0) <= 1e-5 * stack.total_energy()


def test_the_end_point_check_fails_a_non_critical_point_and_a_misreported_energy():
    stack = make_stack("random", [5] * 3, seed=3)
    U = random_section(5, 2, np.random.default_rng(0))
    problem = TiedProblem(stack)
    true = tied_energy_by_traces(stack.weights, U)
    assert not EndPoint("x", true, true, problem.relative_grad(U), problem.classify(U), None).ok
    U_star = bca_tied(stack, 2).sections[0]
    good = tied_energy_by_traces(stack.weights, U_star)
    assert EndPoint("x", good, good, problem.relative_grad(U_star), "local maximum", None).ok
    assert not EndPoint("x", good * (1 + 1e-6), good, problem.relative_grad(U_star), "local maximum", None).ok


def test_plain_tied_fixed_point_can_lower_the_energy_but_the_shifted_one_cannot():
    """The reason for the minorize-maximize shift: found on a random 20 x 20, L = 4 stack."""
    stack = make_stack("random", [20] * 5, seed=0)
    drops = []
    for seed in range(5):
        U0 = random_section(20, 5, np.random.default_rng(seed))
        plain = bca_tied(stack, 5, init=U0, shift="none", rule=StoppingRule(max_sweeps=60))
        drops.append(float(np.min(np.diff(plain.history))))
        assert _nondecreasing(bca_tied(stack, 5, init=U0, shift="auto", rule=StoppingRule(max_sweeps=60)).history)
    assert min(drops) < 0


def test_a_nearby_point_does_not_beat_a_converged_untied_end_point():
    stack = make_stack("random", [6] * 4, seed=2)
    run = bca_untied(stack, 2, rule=StoppingRule(stall_tol=0.0, gtol=1e-9))
    assert run.converged
    rng = np.random.default_rng(0)
    for _ in range(5):
        nearby = [exp(U, 1e-3 * projection(U, rng.standard_normal(U.shape))) for U in run.sections]
        assert untied_energy_by_traces(stack.weights, nearby) <= run.energy + 1e-10 * stack.total_energy()


def _well_separated(seed: int, n: int = 12, L: int = 3, d: int = 3) -> Stack:
    """W_l = Q_l diag(10, 9, 8, 5, ..., 5) Q_{l-1}^T + N(0, 1) noise: a chained rank-d core, a gap of ratio about
    0.5 (plain BCA needs 37 to 70 sweeps on seeds 0-3)."""
    rng = np.random.default_rng(seed)
    Q = [np.linalg.qr(rng.standard_normal((n, n)))[0] for _ in range(L + 1)]
    s = np.r_[np.linspace(10.0, 8.0, d), np.full(n - d, 5.0)]
    return Stack.of([Q[l] @ np.diag(s) @ Q[l - 1].T + rng.standard_normal((n, n)) for l in range(1, L + 1)])


@pytest.mark.parametrize("seed", range(6))
def test_untied_extrapolation_keeps_the_energy_monotone(seed):
    """Every kept extrapolated point must not lower the energy below the plain sweep's, hence below the last."""
    rng = np.random.default_rng(seed)
    stack = Stack.of([rng.standard_normal((8, 8)) for _ in range(4)])
    init = [random_section(8, 3, rng) for _ in range(5)]
    run = bca_untied(stack, 3, init=init, rule=StoppingRule(stall_tol=1e-14, max_sweeps=150), extrapolate=True)
    assert _nondecreasing(run.history)
    assert run.energy == pytest.approx(untied_energy_by_traces(stack.weights, run.sections), rel=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_untied_extrapolation_reaches_the_plain_end_point_on_a_well_separated_stack(seed):
    stack = _well_separated(seed)
    rng = np.random.default_rng(100 + seed)
    init = [random_section(12, 3, rng) for _ in range(4)]
    rule = StoppingRule(stall_tol=0.0, gtol=1e-10)
    plain, fast = (bca_untied(stack, 3, init=init, rule=rule, extrapolate=e) for e in (False, True))
    assert plain.converged and fast.converged
    assert max(np.linalg.norm(projection(V, U)) for U, V in zip(plain.sections, fast.sections)) < 1e-8
    assert fast.energy == pytest.approx(plain.energy, rel=1e-12)
    assert fast.sweeps < plain.sweeps


@given(stacks(), st.sampled_from([0.0, 0.7]))
def test_a_sweeps_own_energy_is_the_energy_of_its_end_point(stack_d, lam):
    stack, d = stack_d
    A = anchors(stack, d)
    problem = UntiedProblem(stack, lam, A if lam else None)
    sections, energy = swept(problem, A, d)
    assert energy == pytest.approx(untied_energy_by_traces(stack.weights, sections, lam, A), rel=1e-10, abs=1e-12)
