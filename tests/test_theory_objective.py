"""The objectives written once (theory.objective): gradient and Hessian against finite differences of the
energy recomputed by projector traces, the lambda unit, and the whitened stack."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.theory_checks import tied_energy_by_traces, untied_energy_by_traces
from theory.anchors import anchors
from theory.bca import basis_sharing_core
from theory.objective import TiedProblem, UntiedProblem, coupling_norms, lambda_unit, spectrum
from theory.stack import Stack
from theory.strategies import SQUARE_FAMILIES, stacks

H_STEP = 1e-6


def _sections(stack: Stack, d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.linalg.qr(rng.standard_normal((n, d)))[0] for n in stack.dims]


@given(stacks(max_n=5, max_L=3), st.sampled_from([0.0, 2.0]), st.integers(0, 2**16))
def test_untied_gradient_and_hessian_match_finite_differences(stack_d, lam, seed):
    stack, d = stack_d
    A = anchors(stack, d)
    problem = UntiedProblem(stack, lam, A if lam else None)
    U = _sections(stack, d, seed)
    rng = np.random.default_rng(seed + 1)
    H = [rng.standard_normal(V.shape) for V in U]          # Euclidean directions: egrad and ehess are Euclidean
    def f(X):
        return untied_energy_by_traces(stack.weights, X, lam, A)
    fd = (f([V + H_STEP * h for V, h in zip(U, H)]) - f([V - H_STEP * h for V, h in zip(U, H)])) / (2 * H_STEP)
    g = problem.egrad(U)
    assert sum(float(np.sum(gi * hi)) for gi, hi in zip(g, H)) == pytest.approx(fd, rel=1e-6, abs=1e-6)
    g_plus = problem.egrad([V + H_STEP * h for V, h in zip(U, H)])
    g_minus = problem.egrad([V - H_STEP * h for V, h in zip(U, H)])
    for hess, gp, gm in zip(problem.ehess(U, H), g_plus, g_minus):
        assert np.allclose(hess, (gp - gm) / (2 * H_STEP), rtol=1e-5, atol=1e-5)


@given(stacks(families=SQUARE_FAMILIES, max_n=5, max_L=3), st.sampled_from([0.0, 2.0]), st.integers(0, 2**16))
def test_tied_gradient_and_hessian_match_finite_differences(stack_d, lam, seed):
    stack, d = stack_d
    A = basis_sharing_core(stack, d)
    problem = TiedProblem(stack, lam, A if lam else None)
    U = _sections(stack, d, seed)[0]
    H = np.random.default_rng(seed + 1).standard_normal(U.shape)
    def f(X):
        return tied_energy_by_traces(stack.weights, X, lam, A)
    fd = (f(U + H_STEP * H) - f(U - H_STEP * H)) / (2 * H_STEP)
    assert float(np.sum(problem.egrad(U) * H)) == pytest.approx(fd, rel=1e-6, abs=1e-6)
    hess_fd = (problem.egrad(U + H_STEP * H) - problem.egrad(U - H_STEP * H)) / (2 * H_STEP)
    assert np.allclose(problem.ehess(U, H), hess_fd, rtol=1e-5, atol=1e-5)


def test_lambda_unit_and_spectrum_by_their_definitions():
    W1, W2 = np.diag([3.0, 1.0]), np.array([[0.0, 2.0], [0.0, 0.0]])
    stack = Stack.of([W1, W2])
    assert coupling_norms(stack) == pytest.approx([9.0, 13.0, 4.0])
    assert lambda_unit(stack) == pytest.approx(13.0)
    assert spectrum(stack) ** 2 == pytest.approx([13.0, 1.0])      # eigenvalues of W1 W1^T + W2 W2^T


@given(st.integers(2, 6), st.integers(0, 2**16))
def test_whitened_stack_carries_the_activation_energy(n, seed):
    """||W S||_F^2 = tr(W Sigma W^T) for Sigma = S S^T (S lower triangular: W S^T would differ)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n))
    X = rng.standard_normal((n, 3 * n))
    Sigma = X @ X.T
    S = np.linalg.cholesky(Sigma)
    whitened = Stack.of([W]).whitened([S])
    assert float(np.sum(whitened.weights[0] ** 2)) == pytest.approx(float(np.sum((W @ X) ** 2)), rel=1e-10)
    assert np.allclose(whitened.weights[0] @ whitened.weights[0].T, W @ Sigma @ W.T)
