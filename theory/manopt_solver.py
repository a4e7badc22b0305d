"""An independent solver: pymanopt's Riemannian trust regions on the product of Grassmannians.

Minimizes -E with the Euclidean gradient and Hessian written out below; used to check whether
BCA reached the maximum (SPEC.md section 5). A start that is already a critical point is returned
as is: trust regions would not move, and pymanopt's truncated CG divides 0 by 0 there.
    untied: grad_{U_i} E = 2 M_i U_i,
            D(grad_i)[H] = 2 M_i H_i + 2 (W_{i+1}^T dP_{i+1} W_{i+1} + W_i dP_{i-1} W_i^T) U_i,
    tied:   grad T = 2 M(P) U,  D(grad)[H] = 2 M(P) H + 2 M(dP) U,   dP = H U^T + U H^T.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pymanopt
from pymanopt.manifolds import Grassmann, Product
from pymanopt.optimizers import TrustRegions

from theory.bca import tied_riemannian_grad_norm, untied_riemannian_grad_norm
from theory.energy import bundle_energy, tied_energy, tied_operator
from theory.grassmann import Array
from theory.stack import Stack

_CRITICAL = 1e-13   # relative Riemannian gradient norm below which a start counts as critical


def _coupling(stack: Stack, P: Sequence[Array], i: int) -> Array:
    """W_{i+1}^T P_{i+1} W_{i+1} + W_i P_{i-1} W_i^T (terms absent at the ends dropped)."""
    Ws, n = stack.weights, stack.dims[i]
    M = np.zeros((n, n))
    if i < stack.L:
        M += Ws[i].T @ P[i + 1] @ Ws[i]
    if i > 0:
        M += Ws[i - 1] @ P[i - 1] @ Ws[i - 1].T
    return M


def trust_regions_untied(stack: Stack, d: int, lam: float = 0.0, anchors: Sequence[Array] | None = None,
                         init: Sequence[Array] | None = None, max_iterations: int = 200) -> tuple[list[Array], float]:
    """Maximize E over Gr(n_0, d) x ... x Gr(n_L, d) with trust regions; returns (sections, E)."""
    k = stack.L + 1
    AA = [A @ A.T for A in anchors] if lam else [0.0] * k
    manifold = Product([Grassmann(n, d) for n in stack.dims])

    @pymanopt.function.numpy(manifold)
    def cost(*U: Array) -> float:
        return -bundle_energy(stack, U, lam, anchors)

    @pymanopt.function.numpy(manifold)
    def egrad(*U: Array) -> list[Array]:
        P = [u @ u.T for u in U]
        return [-2.0 * (_coupling(stack, P, i) + lam * AA[i]) @ U[i] for i in range(k)]

    @pymanopt.function.numpy(manifold)
    def ehess(*args: Array) -> list[Array]:
        U, H = args[:k], args[k:]
        P = [u @ u.T for u in U]
        dP = [h @ u.T + u @ h.T for u, h in zip(U, H)]
        return [-2.0 * ((_coupling(stack, P, i) + lam * AA[i]) @ H[i] + _coupling(stack, dP, i) @ U[i])
                for i in range(k)]

    if init is not None and untied_riemannian_grad_norm(stack, init, lam, anchors) <= _CRITICAL * stack.total_energy():
        return [np.asarray(u) for u in init], bundle_energy(stack, init, lam, anchors)
    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    result = TrustRegions(verbosity=0, max_iterations=max_iterations).run(
        problem, initial_point=list(init) if init is not None else None)
    return [np.asarray(u) for u in result.point], -float(result.cost)


def trust_regions_tied(stack: Stack, d: int, init: Array | None = None,
                       max_iterations: int = 200) -> tuple[Array, float]:
    """Maximize T(U) = sum_l ||U^T W_l U||^2 over Gr(n, d) with trust regions; returns (U, T)."""
    manifold = Grassmann(stack.dims[0], d)

    @pymanopt.function.numpy(manifold)
    def cost(U: Array) -> float:
        return -tied_energy(stack, U)

    @pymanopt.function.numpy(manifold)
    def egrad(U: Array) -> Array:
        return -2.0 * tied_operator(stack, U @ U.T) @ U

    @pymanopt.function.numpy(manifold)
    def ehess(U: Array, H: Array) -> Array:
        return -2.0 * (tied_operator(stack, U @ U.T) @ H + tied_operator(stack, H @ U.T + U @ H.T) @ U)

    if init is not None and tied_riemannian_grad_norm(stack, init) <= _CRITICAL * stack.total_energy():
        return np.asarray(init), tied_energy(stack, init)
    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    result = TrustRegions(verbosity=0, max_iterations=max_iterations).run(problem, initial_point=init)
    return np.asarray(result.point), -float(result.cost)
