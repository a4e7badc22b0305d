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


def top_range(F: Array, d: int) -> Array:
    """Top-d eigenspace of the PSD operator M = F F^T, computed from the factor F (n x k).

    Thin SVD of F when k < n (cheaper, and exact for rank-deficient F), else eigh of F F^T.
    """
    n, k = F.shape
    check_rank(n, d)
    if not np.all(np.isfinite(F)):
        raise ValueError("operator factor contains NaN or infinite entries")
    if k < n:
        if k < d:
            F = np.hstack([F, np.zeros((n, d - k))])
        return np.linalg.svd(F, full_matrices=False)[0][:, :d].copy()
    return top_eigenspace(F @ F.T, d)
