"""Bad input gets a clear error: shapes, ranks, NaN, singular covariances, unknown names."""
import numpy as np
import pytest

from theory.anchors import anchors
from theory.bca import bca_tied, bca_untied
from theory.corners import solve_corner
from theory.stack import Stack
from theory.whitening import whitening


def test_stack_rejects_nan_non_2d_and_unchained_shapes():
    with pytest.raises(ValueError, match="NaN"):
        Stack.of([np.array([[np.nan, 0.0], [0.0, 1.0]])])
    with pytest.raises(ValueError, match="2-D"):
        Stack.of([np.ones(3)])
    with pytest.raises(ValueError, match="chain"):
        Stack.of([np.ones((3, 2)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="at least one"):
        Stack.of([])


def test_rank_must_lie_between_one_and_the_smallest_width():
    stack = Stack.of([np.eye(3), np.eye(3)])
    for d in (0, 4):
        with pytest.raises(ValueError, match="rank"):
            bca_untied(stack, d)


def test_tied_sections_need_square_weights_and_lambda_must_be_valid():
    with pytest.raises(ValueError, match="square"):
        bca_tied(Stack.of([np.ones((3, 2)), np.ones((2, 3))]), 1)
    stack = Stack.of([np.eye(3)])
    with pytest.raises(ValueError, match="lambda"):
        bca_untied(stack, 1, lam=-1.0, anchors=anchors(stack, 1))
    with pytest.raises(ValueError, match="anchors"):
        bca_untied(stack, 1, lam=1.0)


def test_unknown_names_are_refused():
    stack = Stack.of([np.eye(3)])
    with pytest.raises(ValueError, match="convention"):
        anchors(stack, 1, "nonsense")
    with pytest.raises(ValueError, match="corner"):
        solve_corner(stack, 1, "nonsense")
    with pytest.raises(ValueError, match="whitening kind"):
        whitening(np.eye(3), "nonsense")


def test_whitening_factors_and_fallbacks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 50))
    Sigma = X @ X.T
    for kind in ("cholesky", "sqrt"):
        w = whitening(Sigma, kind)
        assert np.allclose(w.S @ w.S.T, Sigma)
        assert np.allclose(w.S @ w.S_pinv, np.eye(4))
    singular = X[:, :2] @ X[:, :2].T
    chol = whitening(singular, "cholesky")
    assert chol.jitter > 0 and "jitter" in chol.note
    root = whitening(singular, "sqrt")
    assert np.allclose(root.S @ root.S.T, singular) and "rank 2/4" in root.note
    with pytest.raises(ValueError, match="symmetric"):
        whitening(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        whitening(np.full((2, 2), np.nan))
