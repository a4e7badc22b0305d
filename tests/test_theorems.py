"""Theorem 1, Theorem 2 (as stated and as it really holds) and Corollary 3 as executable properties."""
import numpy as np
import pytest
from hypothesis import assume, given

from theory.counterexamples import HAND_COUNTEREXAMPLE, minimal_counterexample, prove_exactly
from theory.stack import Stack
from theory.strategies import SQUARE_FAMILIES, make_stack, stacks
from theory.theorems import check_corollary3, check_theorem1, check_theorem2

SMALL_TS = tuple(2.0 ** -k for k in range(6, 10))


@given(stacks(max_L=3))
def test_theorem1_davis_kahan_bounds_hold_and_the_decay_is_one_over_lambda(stack_d):
    stack, d = stack_d
    result = check_theorem1(stack, d)
    assert result.bound_holds
    if np.isnan(result.slope):      # the anchors are already a fixed point: distance 0 for large lambda
        assert max(x for lam, x in zip(result.lambdas, result.distance) if lam >= result.fit_from) <= 1e-12
    else:
        assert result.slope == pytest.approx(-1.0, abs=0.1)


@given(stacks(families=SQUARE_FAMILIES, max_n=5, max_L=3))
def test_theorem2_strictness_holds_exactly_when_u_bs_is_not_a_global_maximizer(stack_d):
    """The condition that really holds: strict <=> U_BS is not a global maximizer of T, certified by
    a nonzero Riemannian gradient (=> strict) or by T(U_BS) reaching sum_{k<=d} sigma_k^2 (=> equality)."""
    stack, d = stack_d
    r = check_theorem2(stack, d)
    assert r.gap >= -1e-9 * r.scale
    if r.bs_certified_max:
        assert r.gap <= 1e-8 * r.scale
    if r.grad_at_bs > 1e-6 * r.scale:
        assert r.gap > 0


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


@given(stacks(families=SQUARE_FAMILIES, min_n=3, max_n=6, max_L=3))
def test_corollary3_second_order_expansion_has_relative_error_linear_in_the_angle(stack_d):
    stack, d = stack_d
    r = check_corollary3(stack, d, ts=SMALL_TS)
    scale = stack.total_energy()
    assume(max(r.angles) > 1e-2 and r.grad_at_star < 1e-9 * scale)
    assume(abs(r.direct[-1]) > 1e-9 * scale)
    errors = r.relative_errors
    assert errors[-1] < 0.02
    assert errors[-1] <= 0.7 * errors[0] + 1e-6      # shrinks (at least) linearly as t halves thrice
