"""An independent solver: pymanopt's Riemannian trust regions on the product of Grassmannians.

Minimizes -E with the Euclidean gradient and Hessian of theory.objective (UntiedProblem, TiedProblem);
used to check whether BCA reached the maximum (SPEC.md section 5). Its end point is checked on its own
(theory.theorems.compare_solvers), so a wrong gradient or Hessian here fails a test. A start that is already
a critical point to the tight rule (theory.stopping.TIGHT) is returned as is: trust regions would not move, and
pymanopt's truncated CG divides 0 by 0 there. Every result keeps pymanopt's own stopping reason.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pymanopt
from pymanopt.manifolds import Grassmann, Product
from pymanopt.optimizers import TrustRegions

from theory.grassmann import Array
from theory.objective import TiedProblem, UntiedProblem
from theory.stack import Stack
from theory.stopping import TIGHT

START_IS_CRITICAL = "the start is critical (relative gradient <= {gtol:g}): not run"


class TrustRegionResult(NamedTuple):
    """End point (one section, or one per interface), its energy, and pymanopt's stopping reason."""

    point: Array | list[Array]
    value: float
    stop_reason: str


def trust_regions_untied(stack: Stack, d: int, lam: float = 0.0, anchors: Sequence[Array] | None = None,
                         init: Sequence[Array] | None = None, max_iterations: int = 200) -> TrustRegionResult:
    """Maximize E over Gr(n_0, d) x ... x Gr(n_L, d) with trust regions; returns (sections, E, stop reason)."""
    k = stack.L + 1
    objective = UntiedProblem(stack, lam, anchors if lam else None)
    manifold = Product([Grassmann(n, d) for n in stack.dims])

    @pymanopt.function.numpy(manifold)
    def cost(*U: Array) -> float:
        return -objective.cost(U)

    @pymanopt.function.numpy(manifold)
    def egrad(*U: Array) -> list[Array]:
        return [-g for g in objective.egrad(U)]

    @pymanopt.function.numpy(manifold)
    def ehess(*args: Array) -> list[Array]:
        return [-h for h in objective.ehess(args[:k], args[k:])]

    if init is not None and TIGHT.critical(objective.relative_grad(init)):
        return TrustRegionResult([np.asarray(u) for u in init], objective.cost(init),
                                 START_IS_CRITICAL.format(gtol=TIGHT.gtol))
    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    result = TrustRegions(verbosity=0, max_iterations=max_iterations).run(
        problem, initial_point=list(init) if init is not None else None)
    return TrustRegionResult([np.asarray(u) for u in result.point], -float(result.cost), result.stopping_criterion)


def trust_regions_tied(stack: Stack, d: int, init: Array | None = None,
                       max_iterations: int = 200) -> TrustRegionResult:
    """Maximize T(U) = sum_l ||U^T W_l U||^2 over Gr(n, d) with trust regions; returns (U, T, stop reason)."""
    objective = TiedProblem(stack)
    manifold = Grassmann(stack.dims[0], d)

    @pymanopt.function.numpy(manifold)
    def cost(U: Array) -> float:
        return -objective.cost(U)

    @pymanopt.function.numpy(manifold)
    def egrad(U: Array) -> Array:
        return -objective.egrad(U)

    @pymanopt.function.numpy(manifold)
    def ehess(U: Array, H: Array) -> Array:
        return -objective.ehess(U, H)

    if init is not None and TIGHT.critical(objective.relative_grad(init)):
        return TrustRegionResult(np.asarray(init), objective.cost(init), START_IS_CRITICAL.format(gtol=TIGHT.gtol))
    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    result = TrustRegions(verbosity=0, max_iterations=max_iterations).run(problem, initial_point=init)
    return TrustRegionResult(np.asarray(result.point), -float(result.cost), result.stopping_criterion)
