"""Error measures of a compression: Frobenius and activation error fractions, total and per layer, and the one-sided
fraction (the best any weight with the method's output space can do)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.linalg

from experiments.errors import GbdError
from experiments.methods.factors import Compression
from theory.energy import activation_error
from theory.grassmann import Array


def error_fraction(error: float, total: float) -> float:
    """error / total, with 0 / 0 = 0: a zero layer (total 0) that its approximation leaves at zero loses nothing;
    a nonzero error against a zero total is inf."""
    if total > 0:
        return error / total
    return 0.0 if error == 0 else float("inf")


def frobenius_error_fraction(weights: Sequence[Array], approximations: Sequence[Array]) -> float:
    """sum_l ||W_l - W_hat_l||_F^2 / sum_l ||W_l||_F^2, through ``error_fraction`` (0 for an all-zero stack
    approximated by zero)."""
    return error_fraction(sum(float(np.sum((W - Wh) ** 2)) for W, Wh in zip(weights, approximations, strict=True)),
                          sum(float(np.sum(W * W)) for W in weights))


def errors(weights: Sequence[Array], sigmas: Sequence[Array], compression: Compression) -> dict:
    """Frobenius fraction sum ||W - W_hat||^2 / sum ||W||^2 and activation fraction
    sum tr((W - W_hat) Sigma (W - W_hat)^T) / sum tr(W Sigma W^T), total and per layer (``error_fraction``:
    defined for zero layers), plus the unnormalized activation errors."""
    Ws = [np.asarray(W, dtype=np.float64) for W in weights]
    Ss = [np.asarray(S, dtype=np.float64) for S in sigmas]
    Whs = compression.W_hats
    if not len(Ws) == len(Ss) == len(Whs):
        raise GbdError(f"got {len(Ws)} weights, {len(Ss)} second moments, {len(Whs)} compressed layers")
    frob = [(float(np.sum((W - Wh) ** 2)), float(np.sum(W * W))) for W, Wh in zip(Ws, Whs)]
    act = [(activation_error(W, Wh, S), activation_error(W, np.zeros_like(W), S)) for W, Wh, S in zip(Ws, Whs, Ss)]
    per_layer = [{"frobenius_fraction": error_fraction(*f), "activation_fraction": error_fraction(*a),
                  "activation_error": a[0]} for f, a in zip(frob, act)]
    return {"frobenius_fraction": error_fraction(*np.sum(frob, axis=0)),
            "activation_fraction": error_fraction(*np.sum(act, axis=0)),
            "activation_error": float(sum(a[0] for a in act)),
            "per_layer": per_layer}


def left_singular(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, s) of the thin SVD M = U diag(s) V^T: LAPACK's divide and conquer (gesdd), and where it fails to converge
    (it can on an exactly low-rank matrix, such as a rank-d approximation, depending on the BLAS threads that made
    it) the QR-iteration driver gesvd, which converges on the same matrices."""
    try:
        U, s, _ = np.linalg.svd(M, full_matrices=False)
    except np.linalg.LinAlgError:
        U, s, _ = scipy.linalg.svd(M, full_matrices=False, lapack_driver="gesvd")
    return U, s


def one_sided_fraction(weights: Sequence[np.ndarray], approximations: Sequence[np.ndarray]) -> float:
    """sum_l ||W_l - P_l W_l||^2 / sum_l ||W_l||^2, P_l the orthogonal projector onto the range of W_hat_l (the
    method's output space): the best any weight with that output space can do. Rank-d SVD of W_l (Eckart-Young)
    gives the per-layer floor."""
    projected = []
    for W, Wh in zip(weights, approximations, strict=True):
        U, s = left_singular(np.asarray(Wh, dtype=np.float64))
        U = U[:, s > s[0] * max(Wh.shape) * np.finfo(np.float64).eps] if s.size and s[0] > 0 else U[:, :0]
        projected.append(U @ (U.T @ np.asarray(W, dtype=np.float64)))
    return frobenius_error_fraction([np.asarray(W, dtype=np.float64) for W in weights], projected)
