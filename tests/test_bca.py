"""BCA: monotone in the energy, reaches critical points, agrees with an independent Riemannian solver."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from theory.anchors import anchors
from theory.bca import basis_sharing_core, bca_tied, bca_untied, tied_objective
from theory.energy import bundle_energy, e1, eckart_young_floor, two_sided_error
from theory.grassmann import exp, projection, random_section
from theory.manopt_solver import trust_regions_tied
from theory.strategies import SQUARE_FAMILIES, make_stack, stacks
from theory.theorems import compare_solvers

LAMBDAS = st.sampled_from([0.0, 0.3, 3.0, 30.0])


def _nondecreasing(history: list[float]) -> bool:
    h = np.asarray(history)
    return bool(np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))))


@given(stacks(), LAMBDAS)
def test_untied_bca_never_lowers_the_energy(stack_d, lam):
    stack, d = stack_d
    A = anchors(stack, d)
    run = bca_untied(stack, d, lam=lam, anchors=A if lam else None, max_sweeps=200)
    assert _nondecreasing(run.history)
    assert run.energy == pytest.approx(bundle_energy(stack, run.sections, lam, A if lam else None), rel=1e-12)


@given(stacks(families=SQUARE_FAMILIES), LAMBDAS)
def test_tied_bca_with_the_safe_shift_never_lowers_the_energy(stack_d, lam):
    stack, d = stack_d
    run = bca_tied(stack, d, lam=lam, max_sweeps=300)
    assert _nondecreasing(run.history)
    assert run.energy == pytest.approx(tied_objective(stack, run.sections[0], lam, basis_sharing_core(stack, d)
                                                      if lam else None), rel=1e-12)


@given(stacks(), st.integers(0, 2**32 - 1))
def test_converged_untied_bca_is_a_critical_point_that_nearby_points_do_not_beat(stack_d, seed):
    stack, d = stack_d
    run = bca_untied(stack, d, tol=1e-14, max_sweeps=3000)
    assume(run.converged)
    scale = stack.total_energy()
    assert run.grad_norm <= 1e-5 * scale
    rng = np.random.default_rng(seed)
    for _ in range(5):
        nearby = [exp(U, 1e-3 * projection(U, rng.standard_normal(U.shape))) for U in run.sections]
        assert bundle_energy(stack, nearby) <= run.energy + 1e-8 * scale


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
def test_bca_matches_trust_regions_and_restarts_on_fixed_stacks(family):
    stack = make_stack(family, [6] * 4, seed=7)
    for tied in (False, True):
        comparison = compare_solvers(stack, 2, tied=tied, restarts=4, seed=1)
        assert comparison.relative_gap <= 1e-3, (family, tied, comparison)


def test_trust_regions_tied_agrees_with_bca_from_the_same_start():
    stack = make_stack("random", [5] * 3, seed=3)
    run = bca_tied(stack, 2, tol=1e-15, max_sweeps=5000)
    _, value = trust_regions_tied(stack, 2, init=run.sections[0])
    assert value == pytest.approx(run.energy, rel=1e-9)


def test_plain_tied_fixed_point_can_lower_the_energy_but_the_shifted_one_cannot():
    """The reason for the minorize-maximize shift: found on a random 20 x 20, L = 4 stack."""
    stack = make_stack("random", [20] * 5, seed=0)
    drops = []
    for seed in range(5):
        U0 = random_section(20, 5, np.random.default_rng(seed))
        plain = bca_tied(stack, 5, init=U0, shift="none", max_sweeps=60)
        drops.append(float(np.min(np.diff(plain.history))))
        assert _nondecreasing(bca_tied(stack, 5, init=U0, shift="auto", max_sweeps=60).history)
    assert min(drops) < 0
