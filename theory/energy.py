"""Energies and error metrics of SPEC.md sections 1 and 3.

Untied sections U_0..U_L (U_i: n_i x d). Bundle energy
    E(U) = sum_l ||U_l^T W_l U_{l-1}||_F^2 + lambda sum_i ||U_i^T A_i||_F^2.
Tied section U (square stacks): T(U) = sum_l ||U^T W_l U||_F^2,
    E2(U) = sum_l ||W_l||_F^2 - T(U),  E1(U) = sum_l ||W_l - U U^T W_l||_F^2.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from theory.grassmann import Array
from theory.stack import Stack


def layer_energies(stack: Stack, sections: Sequence[Array]) -> Array:
    """e_l = ||U_l^T W_l U_{l-1}||_F^2 for l = 1..L."""
    if len(sections) != stack.L + 1:
        raise ValueError(f"need L+1 = {stack.L + 1} sections, got {len(sections)}")
    return np.array(
        [np.sum((sections[l].T @ W @ sections[l - 1]) ** 2) for l, W in enumerate(stack.weights, start=1)]
    )


def anchor_energy(sections: Sequence[Array], anchors: Sequence[Array]) -> float:
    """sum_i ||U_i^T A_i||_F^2."""
    return float(sum(np.sum((U.T @ A) ** 2) for U, A in zip(sections, anchors, strict=True)))


def bundle_energy(stack: Stack, sections: Sequence[Array], lam: float = 0.0,
                  anchors: Sequence[Array] | None = None) -> float:
    """E(U) = sum_l ||U_l^T W_l U_{l-1}||^2 + lambda sum_i ||U_i^T A_i||^2."""
    E = float(layer_energies(stack, sections).sum())
    if lam:
        if anchors is None:
            raise ValueError("lambda > 0 needs anchors")
        E += lam * anchor_energy(sections, anchors)
    return E


def two_sided_error(stack: Stack, sections: Sequence[Array]) -> float:
    """sum_l ||W_l - P_l W_l P_{l-1}||_F^2 = sum_l ||W_l||^2 - ||U_l^T W_l U_{l-1}||^2."""
    return stack.total_energy() - float(layer_energies(stack, sections).sum())


def tied_energy(stack: Stack, U: Array) -> float:
    """T(U) = sum_l ||U^T W_l U||_F^2."""
    return float(sum(np.sum((U.T @ W @ U) ** 2) for W in stack.weights))


def e2(stack: Stack, U: Array) -> float:
    """Two-sided tied error E2(U) = sum_l ||W_l||^2 - T(U)."""
    return stack.total_energy() - tied_energy(stack, U)


def e1(stack: Stack, U: Array) -> float:
    """One-sided tied error E1(U) = sum_l ||W_l - U U^T W_l||^2 = sum_l ||W_l||^2 - ||U^T [W_1..W_L]||^2."""
    return stack.total_energy() - float(sum(np.sum((U.T @ W) ** 2) for W in stack.weights))


def eckart_young_floor(stack: Stack, d: int) -> float:
    """sum_l sum_{k>d} sigma_k(W_l)^2: no rank-d approximation of each layer can do better (Eckart-Young)."""
    return float(sum(np.sum(np.linalg.svd(W, compute_uv=False)[d:] ** 2) for W in stack.weights))


def frobenius_fraction(weights: Sequence[Array], approximations: Sequence[Array]) -> float:
    """sum_l ||W_l - W_hat_l||_F^2 / sum_l ||W_l||_F^2."""
    num = sum(float(np.sum((W - Wh) ** 2)) for W, Wh in zip(weights, approximations, strict=True))
    return num / sum(float(np.sum(W * W)) for W in weights)


def activation_error(W: Array, W_hat: Array, Sigma: Array) -> float:
    """tr((W - W_hat) Sigma (W - W_hat)^T) = ||(W - W_hat) X||_F^2 for Sigma = X X^T."""
    D = W - W_hat
    return float(np.sum((D @ Sigma) * D))


def activation_fraction(weights: Sequence[Array], approximations: Sequence[Array],
                        sigmas: Sequence[Array]) -> float:
    """sum_l tr(D_l Sigma_l D_l^T) / sum_l tr(W_l Sigma_l W_l^T), D_l = W_l - W_hat_l."""
    num = sum(activation_error(W, Wh, S) for W, Wh, S in zip(weights, approximations, sigmas, strict=True))
    den = sum(activation_error(W, np.zeros_like(W), S) for W, S in zip(weights, sigmas, strict=True))
    return num / den
