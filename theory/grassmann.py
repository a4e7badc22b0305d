"""Points of Grassmannians Gr(n, d) stored as n x d matrices with orthonormal columns.

Names follow pymanopt's Grassmann manifold: ``projection`` (to the tangent space),
``exp`` / ``log`` (geodesics); plus the sin-theta distance and the projectors the paper's
statements use.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def check_section(U: Array, n: int | None = None, d: int | None = None, atol: float = 1e-8) -> None:
    """Raise ValueError unless U is n x d, finite, with U^T U = I_d."""
    if U.ndim != 2:
        raise ValueError(f"a section must be a 2-D array, got shape {U.shape}")
    if (n is not None and U.shape[0] != n) or (d is not None and U.shape[1] != d):
        raise ValueError(f"section has shape {U.shape}, expected ({n}, {d})")
    if not np.all(np.isfinite(U)):
        raise ValueError("section contains NaN or infinite entries")
    err = np.abs(U.T @ U - np.eye(U.shape[1])).max()
    if err > atol:
        raise ValueError(f"section columns are not orthonormal (max |U^T U - I| = {err:.2e})")


def orthonormalize(X: Array) -> Array:
    """An orthonormal basis of span(X) (thin QR with signs fixed so diag(R) >= 0)."""
    Q, R = np.linalg.qr(X)
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0
    return Q * signs


def random_section(n: int, d: int, rng: np.random.Generator) -> Array:
    """A Haar-random point of Gr(n, d)."""
    check_rank(n, d)
    return orthonormalize(rng.standard_normal((n, d)))


def check_rank(n: int, d: int) -> None:
    """Raise ValueError unless 1 <= d <= n."""
    if not 1 <= d <= n:
        raise ValueError(f"rank d={d} must satisfy 1 <= d <= n={n}")


def projector(U: Array) -> Array:
    """P = U U^T, the orthogonal projector onto span(U)."""
    return U @ U.T


def top_eigenspace(M: Array, d: int) -> Array:
    """Orthonormal basis of the top-d eigenspace of the symmetric matrix M (eigh, ascending order)."""
    check_rank(M.shape[0], d)
    M = 0.5 * (M + M.T)
    if not np.all(np.isfinite(M)):
        raise ValueError("operator contains NaN or infinite entries")
    _, vecs = np.linalg.eigh(M)
    return vecs[:, ::-1][:, :d].copy()


def top_left_singular(W: Array, d: int) -> Array:
    """Top-d left singular subspace of W (n x m)."""
    check_rank(min(W.shape), d)
    U, _, _ = np.linalg.svd(W, full_matrices=False)
    return U[:, :d].copy()


def projection(U: Array, Z: Array) -> Array:
    """Tangent-space projection at U: (I - U U^T) Z (horizontal lift, pymanopt's ``projection``)."""
    return Z - U @ (U.T @ Z)


def sin_theta_fro(U: Array, V: Array) -> float:
    """||sin Theta(U, V)||_F = ||(I - V V^T) U||_F for equal dimensions."""
    return float(np.linalg.norm(projection(V, U)))


def exp(U: Array, H: Array) -> Array:
    """Geodesic Exp_U(H) = U V cos(S) V^T + Q sin(S) V^T, H = Q S V^T (thin SVD), H horizontal."""
    Q, S, Vt = np.linalg.svd(H, full_matrices=False)
    Y = U @ Vt.T @ np.diag(np.cos(S)) @ Vt + Q @ np.diag(np.sin(S)) @ Vt
    return orthonormalize(Y)


def log(U: Array, Y: Array) -> Array:
    """Log_U(Y) = Q arctan(S) V^T, where (I - U U^T) Y (U^T Y)^{-1} = Q S V^T.

    Requires U^T Y invertible (all principal angles < pi/2).
    """
    UtY = U.T @ Y
    if np.linalg.cond(UtY) > 1e12:
        raise ValueError("log undefined: a principal angle between the sections is pi/2")
    Z = projection(U, Y) @ np.linalg.inv(UtY)
    Q, S, Vt = np.linalg.svd(Z, full_matrices=False)
    return Q @ np.diag(np.arctan(S)) @ Vt


GRAM_ACCURACY = 1e-10  # largest eps * s_1^2 / (s_d^2 - s_{d+1}^2) the Gram route of ``top_range`` accepts


def top_range(F: Array, d: int) -> Array:
    """Top-d eigenspace of the PSD operator M = F F^T, computed from the factor F (n x k).

    k < n: the Gram route (``top_range_gram``) when its accuracy bound holds, else the thin SVD of F
    (``top_range_svd``, the reference: exact for rank-deficient F); k >= n: eigh of F F^T.
    """
    n, k = F.shape
    check_rank(n, d)
    if not np.all(np.isfinite(F)):
        raise ValueError("operator factor contains NaN or infinite entries")
    if k >= n:
        return top_eigenspace(F @ F.T, d)
    U = top_range_gram(F, d) if k >= d else None
    return top_range_svd(F, d) if U is None else U


def top_range_svd(F: Array, d: int) -> Array:
    """Top-d left singular subspace of F (n x k, k < n) by thin SVD; zero columns pad F when k < d."""
    n, k = F.shape
    if k < d:
        F = np.hstack([F, np.zeros((n, d - k))])
    return np.linalg.svd(F, full_matrices=False)[0][:, :d].copy()


def top_range_gram(F: Array, d: int) -> Array | None:
    """Top-d left singular subspace of F (n x k, d <= k) from the k x k Gram matrix, or None when unsafe.

    F^T F = V diag(s^2) V^T (eigh), U = F V_d diag(1 / s_d): the top-d left singular vectors. Forming
    F^T F squares the singular values, so a rounding error of eps s_1^2 in it turns the subspace by about
    eps s_1^2 / (s_d^2 - s_{d+1}^2) (Davis-Kahan; s_{k+1} = 0). None when that exceeds ``GRAM_ACCURACY``
    (the thin SVD is then the accurate way). U's columns are orthonormal to eps s_1^2 / s_d^2; above
    1e-13 they are re-orthonormalized (the span is unchanged).
    """
    k = F.shape[1]
    evals, V = np.linalg.eigh(F.T @ F)               # ascending
    top, gap = evals[-1], evals[k - d] - (evals[k - d - 1] if k > d else 0.0)
    eps = np.finfo(np.float64).eps
    if top <= 0 or gap <= 0 or eps * top > GRAM_ACCURACY * gap:
        return None
    U = F @ (V[:, k - d:][:, ::-1] / np.sqrt(evals[k - d:][::-1]))
    return orthonormalize(U) if eps * top > 1e-13 * evals[k - d] else U
