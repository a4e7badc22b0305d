"""Corollary 3, exactly: E2(U_BS) - E2(U*) as a finite trigonometric polynomial in the principal angles.

Let U* be a tied optimum, H = Log_{U*}(U_BS) = Q diag(theta) V^T (thin SVD: theta the principal angles,
Q the principal vectors in the complement of U*, X = U* V those in span U*; X^T X = I, X^T Q = 0 where
theta != 0). The geodesic gamma(t) = Exp_{U*}(t H) spans the columns of Y(t) = X C_t + Q S_t,
C_t = diag(cos t theta), S_t = diag(sin t theta), and Y(t)^T Y(t) = C^2 + S^2 = I, so with the blocks
    a_l = X^T W_l X,  b_l = X^T W_l Q,  e_l = Q^T W_l X,  f_l = Q^T W_l Q
    Y^T W_l Y = C a_l C + C b_l S + S e_l C + S f_l S,
and T(gamma(t)) = sum_l ||C a_l C + C b_l S + S e_l C + S f_l S||_F^2. At t = 0 this is sum_l ||a_l||^2
= T(U*) (X spans U*), and at t = 1 gamma spans U_BS, so, exactly,
    E2(U_BS) - E2(U*) = sum_l ( ||a_l||_F^2 - ||C a_l C + C b_l S + S e_l C + S f_l S||_F^2 ).
Its Taylor series in t: cos(t theta) = 1 - t^2 theta^2/2 + t^4 theta^4/24 - ..., sin(t theta) = t theta -
t^3 theta^3/6 + ..., so Y(t) = sum_k t^k Y_k with Y_0 = X, Y_1 = Q Theta, Y_2 = -X Theta^2/2,
Y_3 = -Q Theta^3/6, Y_4 = X Theta^4/24, and T(gamma(t)) = sum_k phi_k t^k with
    phi_k = sum_l sum_{i+j=k} <K_{l,i}, K_{l,j}>,   K_{l,m} = sum_{p+q=m} Y_p^T W_l Y_q.
phi_1 = 0 at a critical U*; phi_2 = Hess T(U*)[H, H] / 2 is the paper's second-order term; phi_3 != 0 in
general, which is why the second-order form has a relative error linear in t; after the 3rd and 4th order
terms the relative error falls like t^3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.grassmann import Array, log
from theory.stack import Stack

TAYLOR_ORDER = 4


@dataclass(frozen=True)
class PrincipalBlocks:
    """theta, and the per-layer blocks a_l, b_l, e_l, f_l of the module docstring."""

    theta: Array
    a: list[Array]
    b: list[Array]
    e: list[Array]
    f: list[Array]
    X: Array
    Q: Array


def blocks_along(stack: Stack, U: Array, H: Array) -> PrincipalBlocks:
    """theta, Q, X = U V of the thin SVD H = Q diag(theta) V^T of a tangent vector at U, and the blocks of every W_l."""
    Q, theta, Vt = np.linalg.svd(H, full_matrices=False)
    X = U @ Vt.T
    Ws = stack.weights
    return PrincipalBlocks(theta, [X.T @ W @ X for W in Ws], [X.T @ W @ Q for W in Ws],
                           [Q.T @ W @ X for W in Ws], [Q.T @ W @ Q for W in Ws], X, Q)


def principal_blocks(stack: Stack, U_star: Array, U_bs: Array) -> PrincipalBlocks:
    """Principal angles and vectors of H = Log_{U*}(U_BS) and the blocks of every W_l in them."""
    return blocks_along(stack, U_star, log(U_star, U_bs))


def energy_change(stack: Stack, U: Array, H: Array) -> float:
    """T(Exp_U(H)) - T(U) = sum_l <K_l - a_l, K_l + a_l>, K_l = C a_l C + C b_l S + S e_l C + S f_l S (module
    docstring at t = 1), with K_l - a_l = (C - I) a_l C + a_l (C - I) + C b_l S + S e_l C + S f_l S and
    C - I = -2 sin^2(theta / 2): no difference of two values of T is taken, so a gain far below the rounding of
    T itself keeps its sign."""
    pb = blocks_along(stack, U, H)
    c, s, cm1 = np.cos(pb.theta), np.sin(pb.theta), -2.0 * np.sin(pb.theta / 2) ** 2
    total = 0.0
    for a, b, e, f in zip(pb.a, pb.b, pb.e, pb.f):
        delta = (cm1[:, None] * a * c + a * cm1 + c[:, None] * b * s + s[:, None] * e * c + s[:, None] * f * s)
        total += float(np.sum(delta * (2.0 * a + delta)))
    return total


def exact_difference(stack: Stack, U_star: Array, U_bs: Array, t: float = 1.0) -> float:
    """E2(gamma(t)) - E2(U*) = sum_l ||a_l||^2 - ||C a_l C + C b_l S + S e_l C + S f_l S||^2 (exact)."""
    pb = principal_blocks(stack, U_star, U_bs)
    c, s = np.cos(t * pb.theta), np.sin(t * pb.theta)
    total = 0.0
    for a, b, e, f in zip(pb.a, pb.b, pb.e, pb.f):
        K = c[:, None] * a * c + c[:, None] * b * s + s[:, None] * e * c + s[:, None] * f * s
        total += float(np.sum(a * a) - np.sum(K * K))
    return total


def taylor_coefficients(stack: Stack, U_star: Array, U_bs: Array, order: int = TAYLOR_ORDER) -> list[float]:
    """phi_0..phi_order of T(gamma(t)) = sum_k phi_k t^k (module docstring); order <= 4."""
    if not 0 <= order <= TAYLOR_ORDER:
        raise ValueError(f"order must be in 0..{TAYLOR_ORDER}, got {order}")
    pb = principal_blocks(stack, U_star, U_bs)
    th = pb.theta
    Y = [pb.X, pb.Q * th, -pb.X * th ** 2 / 2, -pb.Q * th ** 3 / 6, pb.X * th ** 4 / 24][:order + 1]
    phi = [0.0] * (order + 1)
    for W in stack.weights:
        K = [sum(Y[p].T @ W @ Y[m - p] for p in range(m + 1)) for m in range(order + 1)]
        for k in range(order + 1):
            phi[k] += float(sum(np.sum(K[i] * K[k - i]) for i in range(k + 1)))
    return phi


def taylor_prediction(phi: list[float], t: float, order: int) -> float:
    """E2(gamma(t)) - E2(U*) to order ``order`` in t: -sum_{1<=k<=order} phi_k t^k."""
    return -sum(phi[k] * t ** k for k in range(1, order + 1))
