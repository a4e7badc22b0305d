"""Independent recomputations for the theory tests (no theory.energy, no theory.objective).

Energies by projector traces, gradients and Hessians by central finite differences along geodesics.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from theory.grassmann import exp


def untied_energy_by_traces(weights: Sequence[np.ndarray], sections: Sequence[np.ndarray], lam: float = 0.0,
                            anchors: Sequence[np.ndarray] | None = None) -> float:
    """sum_l tr(P_l W_l P_{l-1} W_l^T) + lambda sum_i tr(P_i A_i A_i^T)."""
    P = [U @ U.T for U in sections]
    val = sum(np.trace(P[l] @ W @ P[l - 1] @ W.T) for l, W in enumerate(weights, start=1))
    if lam:
        val += lam * sum(np.trace(Pi @ A @ A.T) for Pi, A in zip(P, anchors))
    return float(val)


def untied_fd_gradient_norms(weights: Sequence[np.ndarray], sections: Sequence[np.ndarray]) -> list[float]:
    """Per block i, ||Riemannian gradient of E in U_i|| by finite differences of ``untied_energy_by_traces``."""
    def block(i: int) -> Callable[[np.ndarray], float]:
        return lambda V: untied_energy_by_traces(weights, list(sections[:i]) + [V] + list(sections[i + 1:]))
    return [fd_gradient_norm(block(i), U) for i, U in enumerate(sections)]


def tied_energy_by_traces(weights: Sequence[np.ndarray], U: np.ndarray, lam: float = 0.0,
                          anchor: np.ndarray | None = None) -> float:
    """sum_l tr(P W_l P W_l^T) + lambda tr(P A A^T)."""
    P = U @ U.T
    val = sum(np.trace(P @ W @ P @ W.T) for W in weights)
    return float(val + (lam * np.trace(P @ anchor @ anchor.T) if lam else 0.0))


def tangent_basis(U: np.ndarray) -> list[np.ndarray]:
    """Orthonormal basis of {H : U^T H = 0} from a full QR of [U, I]."""
    n, d = U.shape
    perp = np.linalg.qr(np.hstack([U, np.eye(n)]))[0][:, d:n]
    return [np.outer(perp[:, j], np.eye(d)[k]) for j in range(n - d) for k in range(d)]


def fd_gradient_norm(f: Callable[[np.ndarray], float], U: np.ndarray, h: float = 1e-5) -> float:
    """||Riemannian gradient|| of f at U by central differences along the geodesics t -> Exp_U(t E)."""
    return float(np.sqrt(sum(((f(exp(U, h * E)) - f(exp(U, -h * E))) / (2 * h)) ** 2 for E in tangent_basis(U))))


def fd_second_derivatives(f: Callable[[np.ndarray], float], U: np.ndarray, h: float = 1e-4) -> list[float]:
    """d^2/dt^2 f(Exp_U(t E)) at 0 for every basis direction E."""
    f0 = f(U)
    return [(f(exp(U, h * E)) - 2 * f0 + f(exp(U, -h * E))) / h ** 2 for E in tangent_basis(U)]


# The stack of issue 26 (failed under OpenBLAS's Haswell kernel: two definitions of "critical" at two scales disagreed
# on U_BS, whose interesting block is 1e-2 of the rest), and its one-layer version.
ISSUE26 = [np.array([[2.44617716, 0, 0], [0, 0.01799707, 0.01144166], [0, 0.00773807, 0.00281211]]),
           np.array([[2.10772596, 0, 0], [0, 0.00454958, -0.00099198], [0, -0.00607186, 0.00126828]])]
