"""Theorem 1 (bounds, tightness, rate), Theorem 2 (refuted as stated; the sharp statement) and Corollary 3
(the second-order form refuted as exact; the exact principal-angle form) as executable properties."""
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tests.theory_checks import ISSUE26, tied_energy_by_traces
from theory.bca import basis_sharing_core, bca_tied
from theory.corollary3 import exact_difference, taylor_coefficients, taylor_prediction
from theory.counterexamples import (HAND_COUNTEREXAMPLE, SHARP_EXAMPLES, decide_exactly, decide_on_circle,
                                    minimal_counterexample, prove_exactly)
from theory.grassmann import exp, log, random_section
from theory.objective import TiedProblem
from theory.stack import Stack
from theory.stopping import TIED
from theory.strategies import SQUARE_FAMILIES, make_stack, stacks
from theory.theorem2 import bs_blocks, gradient_by_blocks
from theory.theorems import (check_corollary3, check_theorem1, check_theorem2, generic_perturbation_slope,
                             tied_hessian_form, tied_optimum)

SMALL_TS = tuple(2.0 ** -k for k in range(6, 10))
SLOPE_TS = tuple(2.0 ** -k for k in range(2, 7))


# ------------------------------------------------------------------------------------------------ Theorem 1

@given(stacks(max_L=3))
def test_theorem1_both_bounds_hold_at_every_lambda_and_the_decay_is_one_over_lambda(stack_d):
    stack, d = stack_d
    result = check_theorem1(stack, d)
    assert result.bound_holds and result.prior_holds
    assert min(lam / result.unit for lam in result.lambdas) <= 0.0101      # down to c / 100
    if np.isnan(result.slope):      # the anchors are already a fixed point: distance 0 for large lambda
        assert max(x for lam, x in zip(result.lambdas, result.distance) if lam >= result.fit_from) <= 1e-12
    else:
        assert result.slope == pytest.approx(-1.0, abs=0.1)
        assert result.posterior_ratio[-1] == pytest.approx(1.0, abs=0.02)     # a posteriori is tight


def test_theorem1_slope_depends_on_the_lambda_window():
    result = check_theorem1(make_stack("random", [6] * 4, seed=11), 2)
    w = result.window_slopes
    assert abs(w["0.01-0.1"]) < 0.3 and w["10-10000"] == pytest.approx(-1.0, abs=0.05)
    assert w["0.01-0.1"] > w["0.1-1"] > w["10-10000"] - 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_any_smooth_perturbation_decays_like_one_over_lambda(seed):
    assert generic_perturbation_slope(6, 2, seed) == pytest.approx(-1.0, abs=0.02)


# ------------------------------------------------------------------------------------------------ Theorem 2

@given(stacks(families=SQUARE_FAMILIES, max_n=6, max_L=3))
def test_t_at_u_bs_is_the_bound_minus_the_off_diagonal_blocks(stack_d):
    stack, d = stack_d
    b = bs_blocks(stack, d)
    s = np.linalg.svd(np.hstack(stack.weights), compute_uv=False)
    expected = float(np.sum(s[:d] ** 2)) - sum(float(np.sum(B ** 2)) for B in b.B)
    assert tied_energy_by_traces(stack.weights, b.U) == pytest.approx(expected, rel=1e-10, abs=1e-10)


@given(stacks(families=SQUARE_FAMILIES, max_n=6, max_L=3))
def test_the_block_gradient_is_the_riemannian_gradient_and_an_ascent_direction(stack_d):
    stack, d = stack_d
    U = bs_blocks(stack, d).U
    g = gradient_by_blocks(stack, d)
    scale = stack.total_energy()
    assert np.abs(U.T @ g).max() <= 1e-10 * scale                 # tangent
    assume(np.linalg.norm(g) > 1e-6 * scale)
    T = lambda V: tied_energy_by_traces(stack.weights, V)       # noqa: E731
    h = 1e-4 / np.linalg.norm(g)
    assert (T(exp(U, h * g)) - T(exp(U, -h * g))) / (2 * h) == pytest.approx(float(np.sum(g * g)), rel=1e-4)
    assert T(exp(U, h * g)) > T(U)                              # nonzero gradient: U_BS is beaten, strict


@given(st.integers(3, 6), st.integers(2, 3), st.integers(0, 2**16))
def test_blocks_b_zero_certify_equality_with_c_nonzero(n, L, seed):
    """W_l = O [[A_l, 0], [C_l, D_l]] O^T, A dominant, sum_l C_l A_l^T = 0 (so that span O[:, :d] is U_BS):
    span(U_BS) is invariant under every W_l^T (B = 0), T(U_BS) reaches the bound and no solver beats U_BS,
    although C_l != 0 (not block-diagonal, not symmetric)."""
    rng = np.random.default_rng(seed)
    d = n // 2
    O = np.linalg.qr(rng.standard_normal((n, n)))[0]
    A = [4.0 * np.eye(d) + 0.3 * rng.standard_normal((d, d)) for _ in range(L)]
    C = [0.3 * rng.standard_normal((n - d, d)) for _ in range(L - 1)]
    C.append(-sum(c @ a.T for c, a in zip(C, A)) @ np.linalg.inv(A[-1].T))
    ws = []
    for a, c in zip(A, C):
        W = np.zeros((n, n))
        W[:d, :d], W[d:, :d], W[d:, d:] = a, c, 0.3 * rng.standard_normal((n - d, n - d))
        ws.append(O @ W @ O.T)
    stack = Stack.of(ws)
    r = check_theorem2(stack, d)
    assert r.case == "certified" and r.bs_certified_max and r.hypothesis_holds
    assert r.gap <= 1e-9 * r.scale and not r.strict
    assert max(np.abs(ws[0] - ws[0].T).max(), np.abs(C[0]).max()) > 0


def assert_every_caller_agrees_on_u_bs(stack: Stack, d: int) -> None:
    """classify, check_theorem2 (case, strict) and BCA started at U_BS call U_BS critical or not the same way."""
    U_bs = basis_sharing_core(stack, d)
    critical = TIED.critical(TiedProblem(stack).relative_grad(U_bs))
    r = check_theorem2(stack, d)
    assert r.critical == critical and (r.case == "gradient") == (not critical)
    classified = TiedProblem(stack).classify(U_bs, TIED)
    assert (classified == "not critical") == (not critical) == (r.bs_class == "not critical")
    run = bca_tied(stack, d, init=U_bs)
    assert (run.sweeps == 0 and run.converged) == critical
    if not critical:
        assert r.strict and r.ascent_gain > 0


@example((Stack.of(ISSUE26), 2))
@example((Stack.of(ISSUE26[:1]), 2))
@given(stacks(families=SQUARE_FAMILIES, max_n=5, max_L=3))
def test_theorem2_sharp_statement_decides_every_certified_case(stack_d):
    stack, d = stack_d
    r = check_theorem2(stack, d)
    assert r.identity_error <= 1e-12 and r.gradient_error <= 1e-12
    if r.case == "certified":
        assert not r.strict
    if r.case == "gradient":
        assert r.strict and r.ascent_gain > 0 and r.bs_class == "not critical"
    if r.case == "global":                                              # the certified global maximum and the solvers
        assert r.real_condition_agrees
    assert (r.case == "gradient") == (r.bs_class == "not critical")   # one criticality test, whatever the rounding


@pytest.mark.parametrize("weights", [ISSUE26, ISSUE26[:1]], ids=["issue 26", "issue 26, one layer"])
def test_the_issue_stack_is_not_critical_at_u_bs_for_every_caller(weights):
    stack = Stack.of(weights)
    r = check_theorem2(stack, 2)
    assert r.case == "gradient" and r.rel_grad_at_bs > 2 * TIED.gtol        # far from the threshold either way
    assert_every_caller_agrees_on_u_bs(stack, 2)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([1e-3, 1e-6]), st.integers(3, 5), st.integers(1, 3), st.integers(0, 2**32 - 1), st.data())
def test_blocks_that_differ_by_1e3_and_1e6_are_classified_the_same_by_every_caller(eps, n, L, seed, data):
    """Block stacks blockdiag(3 I + N, eps N'): U_BS straddles the two blocks when d > n // 2."""
    d = data.draw(st.integers(1, n - 1))
    assert_every_caller_agrees_on_u_bs(make_stack("block", [n] * (L + 1), seed, eps=eps), d)


@pytest.mark.parametrize("name", list(SHARP_EXAMPLES))
def test_exact_sharp_examples_are_what_they_are_named(name):
    weights = SHARP_EXAMPLES[name]
    e = decide_exactly(weights)
    assert e.t_bs == e.bound - e.off_block                     # statement 1, exactly
    assert e.gradient == e.gradient_by_blocks                  # statement 3, exactly
    stack = Stack.of(np.array(weights, dtype=float))
    r = check_theorem2(stack, 1)                               # the float solvers agree with the exact verdict
    assert r.strict == (e.verdict == "strict")
    if name == "equality without the certificate":
        assert e.verdict == "equality" and e.off_block != 0 and e.gradient == 0 and not e.block_diagonal
    if name == "strict local maximum, not global":
        assert e.verdict == "strict" and e.bs_class == "local maximum" and e.off_block != 0
        assert e.witness_value > e.t_bs
    if name == "all symmetric, strict":
        assert e.symmetric and len(weights) >= 2 and e.verdict == "strict" and e.gradient != 0
    if name == "non-symmetric, not block-diagonal, equality":
        assert not e.symmetric and not e.block_diagonal and e.off_block == 0 and e.verdict == "equality"


ROTATIONS = [np.array([[3, -4], [4, 3]]), np.array([[1, -2], [2, 1]])]    # integer similarity: exact in floats


@pytest.mark.parametrize("name", list(SHARP_EXAMPLES))
@pytest.mark.parametrize("rotation", [None, *ROTATIONS], ids=["as is", "3-4-5", "1-2"])
def test_the_circle_certificate_agrees_with_the_exact_decision_in_any_basis(name, rotation):
    """decide_on_circle (every critical point of T on Gr(2, 1), from the floats read exactly) against decide_exactly
    (the Sturm certificate in the basis (U_BS, U_perp)); O W O^T with O = c x a rotation keeps the verdict."""
    weights = SHARP_EXAMPLES[name]
    moved = [rotation @ np.array(W) @ rotation.T for W in weights] if rotation is not None else weights
    circle = decide_on_circle(moved)
    assert circle.verdict == decide_exactly(weights).verdict
    assert circle.critical == (decide_exactly(weights).gradient == 0)
    if circle.witness is not None:
        assert max(v for _, v in circle.critical_values) > circle.t_bs_value


@pytest.mark.parametrize("rotation", [None, *ROTATIONS], ids=["as is", "3-4-5", "1-2"])
def test_u_bs_critical_not_invariant_below_the_bound_and_yet_the_global_maximum(rotation):
    """The undecided class decided: U_BS is critical, some B_l != 0, T(U_BS) < sum sigma_k^2, and the certified
    global maximum of T says equality; check_theorem2 returns it instead of 'undecided'."""
    weights = SHARP_EXAMPLES["equality without the certificate"]
    moved = [rotation @ np.array(W) @ rotation.T for W in weights] if rotation is not None else weights
    r = check_theorem2(Stack.of(np.array(moved, dtype=float)), 1)
    assert r.critical and r.off_block > 0.1 and not r.bs_certified_max
    assert r.case == "global" and r.exact.verdict == "equality" and not r.strict and r.real_condition_agrees
    strict = check_theorem2(Stack.of(np.array(SHARP_EXAMPLES["strict local maximum, not global"], dtype=float)), 1)
    assert strict.case == "global" and strict.exact.witness is not None and strict.strict


def test_the_circle_certificate_refuses_what_it_cannot_decide():
    assert decide_on_circle([np.eye(2)]) is None                          # U_BS not unique
    with pytest.raises(ValueError):
        decide_on_circle([np.eye(3)])


def test_exact_decision_refuses_what_it_cannot_decide():
    with pytest.raises(ValueError):
        decide_exactly([[[1, 2, 0], [0, 1, 0], [0, 0, 1]]])
    with pytest.raises(ValueError):
        decide_exactly([[[1, 0], [0, 1]]])                     # U_BS not unique


def test_theorem2_as_stated_is_refuted_by_the_hand_counterexample():
    weights, d = HAND_COUNTEREXAMPLE
    cert = prove_exactly(weights, d)
    assert cert.non_symmetric and cert.refutes_theorem2 and cert.gradient_zero
    r = check_theorem2(Stack.of(np.array(weights, dtype=float)), d)
    assert r.hypothesis_holds and r.counterexample and not r.strict
    assert r.e2_bs == pytest.approx(r.e2_star, abs=1e-12) == pytest.approx(2.0)


def test_hypothesis_shrinks_a_minimal_exact_counterexample():
    cert = minimal_counterexample(max_examples=5000)
    assert cert.refutes_theorem2 and cert.gradient_zero
    n, L = len(cert.weights[0]), len(cert.weights)
    assert n * n * L <= 9 and all(abs(x) <= 2 for W in cert.weights for row in W for x in row)


def test_block_stacks_whose_a_blocks_dominate_satisfy_the_hypothesis_but_not_the_conclusion():
    """SPEC.md section 5: U_BS spans an invariant subspace of every W_l, so T(U_BS) meets its bound."""
    stack = make_stack("block", [6] * 4, seed=0, eps=0.05)
    r = check_theorem2(stack, 3)
    assert r.hypothesis_holds and r.counterexample and r.gap <= 1e-9 * r.scale


# ------------------------------------------------------------------------------------------------ Corollary 3

@given(stacks(families=SQUARE_FAMILIES, min_n=3, max_n=5, max_L=3), st.integers(0, 2**16))
def test_corollary3_exact_principal_angle_form_matches_direct_evaluation(stack_d, seed):
    """Exact for ANY pair of sections with angles < pi/2 (criticality is not needed)."""
    stack, d = stack_d
    n = stack.dims[0]
    rng = np.random.default_rng(seed)
    U, V = random_section(n, d, rng), random_section(n, d, rng)
    direct = tied_energy_by_traces(stack.weights, U) - tied_energy_by_traces(stack.weights, V)
    assume(abs(direct) > 1e-6 * stack.total_energy())
    assert exact_difference(stack, U, V) == pytest.approx(direct, rel=1e-10)


@given(stacks(families=SQUARE_FAMILIES, min_n=3, max_n=5, max_L=3))
def test_corollary3_second_order_form_is_not_exact_but_the_fourth_order_error_falls_like_t_cubed(stack_d):
    stack, d = stack_d
    r = check_corollary3(stack, d, ts=(1.0,) + SMALL_TS)
    scale = stack.total_energy()
    assume(max(r.angles) > 1e-2 and r.grad_at_star < 1e-9 * scale and abs(r.direct[-1]) > 1e-9 * scale)
    assert r.exact_relative_errors[0] <= 1e-10
    errors = r.relative_errors
    assert errors[-1] < 0.02 and errors[-1] <= 0.7 * errors[1] + 1e-6    # shrinks with t
    assume(abs(r.phi[2]) > 1e-3 * scale)
    t_hi = min(0.25, 0.1 / max(r.angles))                   # the asymptotic regime: t theta <= 0.1
    ts = tuple(t_hi * 2.0 ** -k for k in range(5))
    r = check_corollary3(stack, d, ts=ts, U_star=tied_optimum(stack, d))
    slope3, slope4 = (r.error_order(k, min(ts), max(ts), scale) for k in (3, 4))
    assert np.isnan(slope3) or slope3 > 1.6         # nan: the error is below the rounding everywhere
    assert np.isnan(slope4) or slope4 > 2.4


def test_taylor_coefficients_agree_with_the_hessian_and_the_exact_form():
    stack = make_stack("random", [5] * 3, seed=4)
    U_star, U_bs = tied_optimum(stack, 2), basis_sharing_core(stack, 2)
    phi = taylor_coefficients(stack, U_star, U_bs)
    H = log(U_star, U_bs)
    scale = stack.total_energy()
    assert abs(phi[1]) <= 1e-8 * scale                                        # U* is critical
    assert phi[2] == pytest.approx(0.5 * tied_hessian_form(stack, U_star, H), rel=1e-9)
    assert abs(phi[3]) > 1e-3 * scale                                         # why order 2 errs like t
    r = check_corollary3(stack, 2, ts=SLOPE_TS, U_star=U_star)
    slopes = [r.error_order(k, min(SLOPE_TS), max(SLOPE_TS), scale) for k in (2, 3, 4)]
    assert slopes == pytest.approx([1.0, 2.0, 3.0], abs=0.25)
    t = 1e-2
    assert taylor_prediction(phi, t, 4) == pytest.approx(exact_difference(stack, U_star, U_bs, t), rel=1e-5)
