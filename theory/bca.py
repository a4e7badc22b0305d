"""Block-coordinate ascent (BCA) on products of Grassmannians (SPEC.md section 1).

Untied: with the others fixed, E is the quadratic form tr(U_i^T M_i U_i) in U_i, with
    M_i = W_{i+1}^T P_{i+1} W_{i+1} + W_i P_{i-1} W_i^T + lambda A_i A_i^T = F_i F_i^T,
    F_i = [W_{i+1}^T U_{i+1}, W_i U_{i-1}, sqrt(lambda) A_i]   (absent terms dropped at i = 0, L),
so the exact block maximizer is the top-d eigenspace of M_i (Ky Fan) and no step lowers E.

Tied: T(U) + lambda ||U^T A||^2 is quartic in U. The step U <- top-d eigenspace of
    M(P) + lambda A A^T + 2 c P,   M(P) = sum_l W_l P W_l^T + W_l^T P W_l,
is a minorize-maximize step that cannot lower the energy once c >= sum_l ||W_l||_2^2
(then f(P) + c tr(P^2) is a convex quadratic in P and tr(P^2) = d is constant on Gr(n, d)).
``shift="auto"`` tries c = 0 first and takes the safe c only when the plain step would lower
the energy; ``shift="none"`` is the plain fixed-point iteration (not monotone in general).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from theory.anchors import anchors as make_anchors
from theory.energy import bundle_energy, tied_energy, tied_factor
from theory.grassmann import Array, check_section, projection, top_left_singular, top_range
from theory.stack import Stack


@dataclass
class BCAResult:
    """Sections found, energy after each sweep (entry 0: the initial point), convergence facts."""

    sections: list[Array]
    history: list[float]
    sweeps: int
    converged: bool
    grad_norm: float
    shifted_steps: int = 0

    @property
    def energy(self) -> float:
        return self.history[-1]


def _converged(history: Sequence[float], tol: float) -> bool:
    return abs(history[-1] - history[-2]) <= tol * max(1.0, abs(history[-1]))


def untied_factor(stack: Stack, sections: Sequence[Array], i: int, lam: float,
                   anchors: Sequence[Array] | None) -> Array:
    """F_i with M_i = F_i F_i^T (module docstring)."""
    Ws, L = stack.weights, stack.L
    cols = []
    if i < L:
        cols.append(Ws[i].T @ sections[i + 1])      # W_{i+1}^T U_{i+1}
    if i > 0:
        cols.append(Ws[i - 1] @ sections[i - 1])    # W_i U_{i-1}
    if lam and anchors is not None:
        cols.append(np.sqrt(lam) * anchors[i])
    return np.hstack(cols)


def untied_sweep(stack: Stack, sections: Sequence[Array], d: int, lam: float = 0.0,
                 anchors: Sequence[Array] | None = None,
                 top: Callable[[Array, int], Array] = top_range) -> list[Array]:
    """One Gauss-Seidel sweep on a copy: U_i <- top-d range of F_i (``top``), i = 0..L in order."""
    out = list(sections)
    for i in range(stack.L + 1):
        out[i] = top(untied_factor(stack, out, i, lam, anchors), d)
    return out


def untied_riemannian_grad_norm(stack: Stack, sections: Sequence[Array], lam: float = 0.0,
                                anchors: Sequence[Array] | None = None) -> float:
    """sqrt(sum_i ||(I - P_i) M_i U_i||_F^2): zero exactly at critical points of E."""
    total = 0.0
    for i, U in enumerate(sections):
        F = untied_factor(stack, sections, i, lam, anchors)
        total += float(np.sum(projection(U, F @ (F.T @ U)) ** 2))
    return float(np.sqrt(total))


def _check_lambda(lam: float, anchors: object) -> None:
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda must be finite and >= 0, got {lam}")
    if lam > 0 and anchors is None:
        raise ValueError("lambda > 0 needs anchors")


def bca_untied(stack: Stack, d: int, lam: float = 0.0, anchors: Sequence[Array] | None = None,
               init: Sequence[Array] | None = None, tol: float = 1e-12, max_sweeps: int = 500) -> BCAResult:
    """Maximize E(U_0..U_L) by sweeping U_i <- top-d eigenspace of M_i, i = 0..L.

    ``init`` defaults to the anchors when given, else the ``original``-convention anchors.
    Stops when a sweep changes E by at most tol * max(1, |E|) or after ``max_sweeps``.
    """
    stack.check_rank(d)
    _check_lambda(lam, anchors)
    sections = [U.copy() for U in (init if init is not None else anchors if anchors is not None
                                   else make_anchors(stack, d, "original"))]
    if len(sections) != stack.L + 1:
        raise ValueError(f"need L+1 = {stack.L + 1} initial sections, got {len(sections)}")
    for U, n in zip(sections, stack.dims):
        check_section(U, n, d)
    history = [bundle_energy(stack, sections, lam, anchors)]
    converged, sweeps = False, 0
    while sweeps < max_sweeps and not converged:
        sections = untied_sweep(stack, sections, d, lam, anchors)
        sweeps += 1
        history.append(bundle_energy(stack, sections, lam, anchors))
        converged = _converged(history, tol)
    return BCAResult(sections, history, sweeps, converged,
                     untied_riemannian_grad_norm(stack, sections, lam, anchors))


def basis_sharing_core(stack: Stack, d: int) -> Array:
    """U_BS = top-d left singular subspace of [W_1, ..., W_L]: the exact minimizer of E1."""
    return top_left_singular(np.hstack(stack.weights), d)


def tied_objective(stack: Stack, U: Array, lam: float = 0.0, anchor: Array | None = None) -> float:
    """T(U) + lambda ||U^T A||_F^2."""
    val = tied_energy(stack, U)
    return val + lam * float(np.sum((U.T @ anchor) ** 2)) if lam else val


def tied_riemannian_grad_norm(stack: Stack, U: Array, lam: float = 0.0, anchor: Array | None = None) -> float:
    """||(I - U U^T) (M(P) + lambda A A^T) U||_F (half the Riemannian gradient of the tied objective)."""
    G = tied_factor(stack, U)
    G = G @ (G.T @ U)
    if lam:
        G = G + lam * anchor @ (anchor.T @ U)
    return float(np.linalg.norm(projection(U, G)))


def bca_tied(stack: Stack, d: int, lam: float = 0.0, anchor: Array | None = None, init: Array | None = None,
             tol: float = 1e-12, max_sweeps: int = 2000,
             shift: Literal["auto", "none"] = "auto") -> BCAResult:
    """Maximize T(U) + lambda ||U^T A||^2 over one shared U (square stacks); see module docstring.

    ``init`` defaults to the anchor when given, else U_BS. ``anchor`` defaults to U_BS
    (so lambda -> infinity gives Basis-Sharing-core).
    """
    if not stack.square:
        raise ValueError(f"tied sections need square weights of one size, got interface widths {stack.dims}")
    stack.check_rank(d)
    n = stack.dims[0]
    if lam and anchor is None:
        anchor = basis_sharing_core(stack, d)
    _check_lambda(lam, anchor)
    U = (init if init is not None else anchor if anchor is not None else basis_sharing_core(stack, d)).copy()
    check_section(U, n, d)
    c_safe = float(sum(np.linalg.norm(W, 2) ** 2 for W in stack.weights))
    history = [tied_objective(stack, U, lam, anchor)]
    converged, sweeps, shifted = False, 0, 0
    while sweeps < max_sweeps and not converged:
        F = tied_factor(stack, U)                   # M(P) + lambda A A^T = F F^T
        if lam:
            F = np.hstack([F, np.sqrt(lam) * anchor])
        candidate = top_range(F, d)
        value = tied_objective(stack, candidate, lam, anchor)
        if shift == "auto" and value < history[-1]:
            candidate = top_range(np.hstack([F, np.sqrt(2.0 * c_safe) * U]), d)   # + 2 c P
            value = tied_objective(stack, candidate, lam, anchor)
            shifted += 1
        U = candidate
        sweeps += 1
        history.append(value)
        converged = _converged(history, tol)
    return BCAResult([U], history, sweeps, converged, tied_riemannian_grad_norm(stack, U, lam, anchor), shifted)
