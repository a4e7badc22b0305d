"""Block-coordinate ascent (BCA) on products of Grassmannians (SPEC.md section 1).

Untied: with the others fixed, E is the quadratic form tr(U_i^T M_i U_i) in U_i, with
    M_i = W_{i+1}^T P_{i+1} W_{i+1} + W_i P_{i-1} W_i^T + lambda A_i A_i^T = F_i F_i^T,
    F_i = [W_{i+1}^T U_{i+1}, W_i U_{i-1}, sqrt(lambda) A_i]   (absent terms dropped at i = 0, L),
so the exact block maximizer is the top-d eigenspace of M_i (Ky Fan) and no step lowers E.

Per-interface ranks (rectangular chains such as an MLP's up / down projections, widths D, I, D, ...):
interface i carries its own rank d_i (1 <= d_i <= n_i), U_i in Gr(n_i, d_i), and E keeps its form
    E(U) = sum_l ||U_l^T W_l U_{l-1}||_F^2 + lambda sum_i ||U_i^T A_i||_F^2   (A_i: n_i x d_i).
E is still a quadratic form tr(U_i^T M_i U_i) in each block with the same M_i, so the block step becomes
U_i <- top-d_i eigenspace of M_i and Ky Fan still makes it the exact block maximizer (monotone ascent);
the gradient and stopping rules (theory.objective) never use d. One rank per interface, not per layer, is
the natural generalization: a section is a point of one interface's Grassmannian, shared by the layer that
writes the interface and the layer that reads it, so its dimension belongs to the interface; layer l's
sandwich P_l W_l P_{l-1} then has rank <= min(d_{l-1}, d_l). An int d is d at every interface.

Tied: T(U) + lambda ||U^T A||^2 is quartic in U. The step U <- top-d eigenspace of
    M(P) + lambda A A^T + 2 c P,   M(P) = sum_l W_l P W_l^T + W_l^T P W_l,
is a minorize-maximize step that cannot lower the energy once c >= sum_l ||W_l||_2^2
(then f(P) + c tr(P^2) is a convex quadratic in P and tr(P^2) = d is constant on Gr(n, d)).
``shift="auto"`` tries c = 0 first and takes the safe c only when the plain step would lower
the energy; ``shift="none"`` is the plain fixed-point iteration (not monotone in general).

Stopping (like pymanopt's optimizers, every solve takes one ``theory.stopping.StoppingRule`` and says why it
stopped, ``StopReason``):
- "gradient": the relative Riemannian gradient ||(I - P) grad|| / ||grad|| (theory.objective) is <= rule.gtol:
  the primary rule, the only one that makes ``converged`` true;
- "stalled": the energy changed by at most rule.stall_tol * max(1, |E|) for ``STALL_SWEEPS`` sweeps in a row while
  the gradient stayed above gtol (the secondary, energy-change test: the step no longer makes progress);
- "cycle": the plain tied step (shift="none") revisits the section of two sweeps before (a period-2 cycle
  between non-critical sections, whose energy may still creep up) or stalls away from a critical point;
  a fixed point of the plain step is critical, so either means it will not converge. With shift="auto" a
  cycle (or stall) of the plain step switches to the safe shifted step for the rest of the run instead;
- "max_sweeps": the sweep limit rule.max_sweeps.

Extrapolation (untied, ``extrapolate=True``): after each sweep U -> U', the point
    Y_i = orth(U_i' + beta (U_i' - U_i Q_i)),   Q_i = the orthogonal polar factor of U_i^T U_i'
(U_i Q_i: the basis of span(U_i) closest to U_i', so U_i' - U_i Q_i is the step of the sweep on Gr(n_i, d)) is
tried, and kept only when E(Y) >= E(U'); beta grows by EXTRAPOLATION_GROWTH after a kept point and halves
after a rejected one. The energy stays monotone and the stopping rules are applied to the kept point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from theory.anchors import anchors as make_anchors
from theory.grassmann import Array, check_section, orthonormalize, sin_theta_fro, top_left_singular, top_range
from theory.objective import TiedProblem, UntiedProblem
from theory.stack import Stack
from theory.stopping import DEFAULT, STALL_SWEEPS, STOP_REASONS, TIED, StopReason, StoppingRule

__all__ = ["BCAResult", "STOP_REASONS", "StopReason", "bca_tied", "bca_untied", "basis_sharing_core"]
GRADIENT_GATE = 1e-4        # untied: the gradient is evaluated only once a sweep changes E by <= this (relative)
EXTRAPOLATION_START = 1.0  # beta of the first extrapolation
EXTRAPOLATION_GROWTH = 1.5  # beta *= this after a kept extrapolation, /= 2 after a rejected one
CYCLE_RATIO = 0.05          # period 2: d(U_{k+1}, U_{k-1}) <= CYCLE_RATIO d(U_{k+1}, U_k) (also a flip-flop
                            # that converges too slowly to matter: rate beyond 0.95 per sweep)


@dataclass
class BCAResult:
    """Sections found, energy after each sweep (entry 0: the initial point), and why the solve stopped."""

    sections: list[Array]
    history: list[float]
    sweeps: int
    stop_reason: StopReason
    grad_norm: float            # ||Riemannian gradient||_F at the end point
    rel_grad: float             # ||(I - P) grad|| / ||grad|| at the end point
    shifted_steps: int = 0
    cycles: int = 0             # tied: cycles (or stalls) of the plain step that switched to the safe step
    rule: StoppingRule = DEFAULT    # the rule the solve stopped by

    @property
    def stop_note(self) -> str:
        """Why it stopped, in words, with the rule's numbers (StoppingRule.explain)."""
        return self.rule.explain(self.stop_reason, self.sweeps)

    @property
    def energy(self) -> float:
        return self.history[-1]

    @property
    def converged(self) -> bool:
        """Stopped by the gradient rule: the end point is critical to the relative tolerance rule.gtol."""
        return self.stop_reason == "gradient"


def _grad_norm(rgrad: Array | Sequence[Array]) -> float:
    parts = rgrad if isinstance(rgrad, list) else [rgrad]
    return float(np.sqrt(sum(np.sum(g ** 2) for g in parts)))


def untied_factor(stack: Stack, sections: Sequence[Array], i: int, lam: float,
                  anchors: Sequence[Array] | None) -> Array:
    """F_i with M_i = F_i F_i^T (theory.objective.UntiedProblem.factor)."""
    return UntiedProblem(stack, lam, anchors if lam else None).factor(sections, i)


def untied_sweep(stack: Stack, sections: Sequence[Array], d: int | Sequence[int], lam: float = 0.0,
                 anchors: Sequence[Array] | None = None,
                 top: Callable[[Array, int], Array] = top_range) -> list[Array]:
    """One Gauss-Seidel sweep on a copy: U_i <- top-d_i range of F_i (``top``), i = 0..L in order."""
    return swept(UntiedProblem(stack, lam, anchors if lam else None), sections, d, top)[0]


def swept(problem: UntiedProblem, sections: Sequence[Array], d: int | Sequence[int],
          top: Callable[[Array, int], Array] = top_range) -> tuple[list[Array], float]:
    """``untied_sweep`` and the energy E of its end point from the products it made: once U_i is set, the
    columns of F_i after W_{i+1}^T U_{i+1} (its first d_{i+1} columns; the rest are W_i U_{i-1} and
    sqrt(lambda) A_i) are final, so E = sum_i ||U_i^T F_i[:, d_{i+1}:]||^2 (i < L), ||U_L^T F_L||^2 (i = L)."""
    out, energy, L = list(sections), 0.0, problem.stack.L
    ranks = problem.stack.ranks(d)
    for i in range(L + 1):
        F = problem.factor(out, i)
        out[i] = top(F, ranks[i])
        energy += float(np.sum((out[i].T @ F[:, ranks[i + 1] if i < L else 0:]) ** 2))
    return out, energy


def extrapolated(previous: Sequence[Array], current: Sequence[Array], beta: float) -> list[Array]:
    """Y_i = orth(U_i' + beta (U_i' - U_i Q_i)), Q_i the orthogonal polar factor of U_i^T U_i' (module docstring)."""
    out = []
    for U, V in zip(previous, current, strict=True):
        A, _, Bt = np.linalg.svd(U.T @ V)
        out.append(orthonormalize(V + beta * (V - U @ (A @ Bt))))
    return out


def _check_lambda(lam: float, anchors: object) -> None:
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda must be finite and >= 0, got {lam}")
    if lam > 0 and anchors is None:
        raise ValueError("lambda > 0 needs anchors")


def bca_untied(stack: Stack, d: int | Sequence[int], lam: float = 0.0, anchors: Sequence[Array] | None = None,
               init: Sequence[Array] | None = None, rule: StoppingRule = DEFAULT,
               extrapolate: bool = True) -> BCAResult:
    """Maximize E(U_0..U_L) by sweeping U_i <- top-d_i eigenspace of M_i, i = 0..L (stopping, the safeguarded
    extrapolation ``extrapolate``: module docstring).

    ``d``: one rank, or one per interface (d_0, ..., d_L). ``init`` defaults to the anchors when given, else the
    ``original``-convention anchors.
    """
    ranks = stack.ranks(d)
    _check_lambda(lam, anchors)
    problem = UntiedProblem(stack, lam, anchors if lam else None)
    sections = [U.copy() for U in (init if init is not None else anchors if anchors is not None
                                   else make_anchors(stack, d, "original"))]
    if len(sections) != stack.L + 1:
        raise ValueError(f"need L+1 = {stack.L + 1} initial sections, got {len(sections)}")
    for U, n, di in zip(sections, stack.dims, ranks):
        check_section(U, n, di)
    history = [problem.cost(sections)]
    sweeps, stalled, beta = 0, 0, EXTRAPOLATION_START
    stop = rule.reason(np.inf, 0, 0)
    while stop is None:
        previous, (sections, energy) = sections, swept(problem, sections, d)
        sweeps += 1
        if extrapolate:
            trial = extrapolated(previous, sections, beta)
            trial_energy = problem.cost(trial)
            if trial_energy >= energy:
                sections, energy, beta = trial, trial_energy, beta * EXTRAPOLATION_GROWTH
            else:
                beta /= 2.0
        history.append(energy)
        gated = abs(energy - history[-2]) <= GRADIENT_GATE * max(1.0, abs(energy))
        stalled = stalled + 1 if rule.small_change(history[-2], energy) else 0
        stop = rule.reason(problem.relative_grad(sections) if gated else np.inf, stalled, sweeps)
    return BCAResult(sections, history, sweeps, stop, _grad_norm(problem.rgrad(sections)),
                     problem.relative_grad(sections), rule=rule)


def basis_sharing_core(stack: Stack, d: int) -> Array:
    """U_BS = top-d left singular subspace of [W_1, ..., W_L]: the exact minimizer of E1."""
    return top_left_singular(np.hstack(stack.weights), d)


def _cycling(new: Array, previous: list[Array]) -> bool:
    """A period-2 cycle: the new section is (nearly) the one of two steps before, not the last one."""
    if len(previous) < 2:
        return False
    return sin_theta_fro(new, previous[-2]) <= CYCLE_RATIO * sin_theta_fro(new, previous[-1])


def bca_tied(stack: Stack, d: int, lam: float = 0.0, anchor: Array | None = None, init: Array | None = None,
             rule: StoppingRule = TIED, shift: Literal["auto", "none"] = "auto") -> BCAResult:
    """Maximize T(U) + lambda ||U^T A||^2 over one shared U (square stacks); see module docstring.

    ``init`` defaults to the anchor when given, else U_BS. ``anchor`` defaults to U_BS
    (so lambda -> infinity gives Basis-Sharing-core).
    """
    if not stack.square:
        raise ValueError(f"tied sections need square weights of one size, got interface widths {stack.dims}")
    if shift not in ("auto", "none"):
        raise ValueError(f"shift must be 'auto' or 'none', got {shift!r}")
    stack.check_rank(d)
    n = stack.dims[0]
    if lam and anchor is None:
        anchor = basis_sharing_core(stack, d)
    _check_lambda(lam, anchor)
    problem = TiedProblem(stack, lam, anchor if lam else None)
    U = (init if init is not None else anchor if anchor is not None else basis_sharing_core(stack, d)).copy()
    check_section(U, n, d)
    c_safe = float(sum(np.linalg.norm(W, 2) ** 2 for W in stack.weights))
    history = [problem.cost(U)]
    recent: list[Array] = [U]
    sweeps, stalled, shifted, cycles, plain, stop = 0, 0, 0, 0, True, None
    while stop is None:
        F = problem.factor(U)                       # M(P) + lambda A A^T = F F^T
        G = F @ (F.T @ U)                           # half the Euclidean gradient at U
        g_norm = float(np.linalg.norm(G))
        rel_grad = float(np.linalg.norm(G - U @ (U.T @ G))) / g_norm if g_norm > 0 else 0.0
        stop = rule.reason(rel_grad, 0 if plain else stalled, sweeps)   # a plain stall switches to the safe step
        if stop is not None:
            break
        candidate = top_range(F, d) if plain else None
        if plain and (_cycling(candidate, recent) or stalled >= STALL_SWEEPS):
            if shift == "none":
                stop = "cycle"
                break
            plain, cycles, stalled = False, cycles + 1, 0
        value = problem.cost(candidate) if plain else -np.inf
        if not plain or (shift == "auto" and value < history[-1]):
            candidate = top_range(np.hstack([F, np.sqrt(2.0 * c_safe) * U]), d)   # + 2 c P
            value = problem.cost(candidate)
            shifted += 1
        U = candidate
        recent = [recent[-1], U]
        sweeps += 1
        history.append(value)
        stalled = stalled + 1 if rule.small_change(history[-2], value) else 0
    return BCAResult([U], history, sweeps, stop, _grad_norm(problem.rgrad(U)), problem.relative_grad(U),
                     shifted, cycles, rule)
