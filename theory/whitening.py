"""Whitening factors S with S S^T = Sigma, Sigma = sum_t x_t x_t^T (input second moment).

- ``cholesky`` (SVD-LLM V1): S = chol(Sigma), lower triangular. When Cholesky fails, retry on
  Sigma + (-lambda_min(Sigma) + eps) I as the reference code does, and report it.
- ``sqrt`` (SVD-LLM V2): Sigma = U_s S_s U_s^T, S = U_s S_s^{1/2} (its pseudo-inverse is taken on the
  eigen-support, so a singular Sigma is allowed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.grassmann import Array


@dataclass
class Whitening:
    """S with S S^T = Sigma (+ jitter I), its pseudo-inverse, and what was done to get it."""

    S: Array
    S_pinv: Array
    kind: str
    jitter: float
    note: str


def check_covariance(Sigma: Array) -> Array:
    """Validate a second-moment matrix: square, finite, symmetric to rounding; returns it symmetrized."""
    Sigma = np.asarray(Sigma, dtype=np.float64)
    if Sigma.ndim != 2 or Sigma.shape[0] != Sigma.shape[1]:
        raise ValueError(f"a second moment must be square, got shape {Sigma.shape}")
    if not np.all(np.isfinite(Sigma)):
        raise ValueError("second moment contains NaN or infinite entries")
    scale = max(np.abs(Sigma).max(), 1e-300)
    if np.abs(Sigma - Sigma.T).max() > 1e-8 * scale:
        raise ValueError("second moment is not symmetric")
    return 0.5 * (Sigma + Sigma.T)


def whitening(Sigma: Array, kind: str = "cholesky", eps: float = 1e-6) -> Whitening:
    """A whitening factor of Sigma of the named kind (module docstring)."""
    Sigma = check_covariance(Sigma)
    n = Sigma.shape[0]
    if kind == "cholesky":
        try:
            S = np.linalg.cholesky(Sigma)
            return Whitening(S, np.linalg.inv(S), kind, 0.0, "cholesky")
        except np.linalg.LinAlgError:
            lam_min = float(np.linalg.eigvalsh(Sigma)[0])
            jitter = -lam_min + eps * max(1.0, float(np.trace(Sigma)) / n)
            S = np.linalg.cholesky(Sigma + jitter * np.eye(n))
            return Whitening(S, np.linalg.inv(S), kind, jitter,
                             f"cholesky failed (lambda_min = {lam_min:.3e}); retried with jitter {jitter:.3e} I")
    if kind == "sqrt":
        vals, vecs = np.linalg.eigh(Sigma)
        cutoff = max(vals.max(), 0.0) * n * np.finfo(float).eps
        keep = vals > cutoff
        root = np.sqrt(np.where(keep, vals, 0.0))
        inv_root = np.where(keep, 1.0 / np.where(keep, root, 1.0), 0.0)
        note = "eigen square root" if keep.all() else f"eigen square root on a support of rank {keep.sum()}/{n}"
        return Whitening(vecs * root, (vecs * inv_root).T, kind, 0.0, note)
    raise ValueError(f"unknown whitening kind {kind!r}; choose 'cholesky' or 'sqrt'")
