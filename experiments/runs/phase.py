"""The Frobenius phase diagram over anchor strength lambda x tying, on one group of real weights.

For each (lambda, tied) the sections maximize the bundle energy (theory.corners.solve, the same
solver as the property tests) and the two-sided error fraction
    sum_l ||W_l - P_l W_l P_{l-1}||_F^2 / sum_l ||W_l||_F^2
is recorded. lambda is given in units of c = max_i (||W_i||_2^2 + ||W_{i+1}||_2^2), the size of
the coupling term it competes with (Theorem 1), so the grid means the same on every model; the grid of
each mode is ``experiments.runs.modes.Mode.phase_lambdas``.

Each cell records its wall-clock seconds and BCA sweeps, and the diagram the seconds of the per-layer
truncated SVD of the same stack: the cost of a sweep beside that of SVD-LLM's own factorization.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from experiments.errors import GbdError
from experiments.methods.bundle import solve_memo
from experiments.methods.metrics import frobenius_error_fraction
from experiments.methods.ranks import absolute_lambda, rank_for
from experiments.model.loading import LoadedModel
from experiments.model.lowrank import read_targets
from experiments.runs.modes import mode as mode_named
from theory.anchors import CONVENTIONS, AnchorConvention
from theory.corners import per_layer_truncated_svd, sandwich
from theory.objective import lambda_unit
from theory.stack import Stack
from theory.stopping import COMPRESSION, StoppingRule


@dataclass
class PhasePoint:
    """One cell of the diagram."""

    lam_over_c: float
    tied: bool
    convention: str
    frobenius_fraction: float
    sweeps: int | None
    converged: bool | None
    seconds: float
    stop_reason: str | None = None    # theory.stopping.STOP_REASONS (None: a corner, no BCA)



def phase_point(stack: Stack, d: int, lam_over_c: float, tied: bool, convention: AnchorConvention,
                stopping: StoppingRule) -> PhasePoint:
    """Solve one cell (BCA stopped by ``stopping``) and measure its two-sided Frobenius fraction."""
    c = lambda_unit(stack)
    start = time.perf_counter()
    solution = solve_memo(stack, d, absolute_lambda(lam_over_c, c), tied, convention, stopping)  # reused by the surgery
    seconds = time.perf_counter() - start
    frac = frobenius_error_fraction(stack.weights, sandwich(stack, solution.sections))
    run = solution.run
    return PhasePoint(lam_over_c, tied, solution.convention, frac, run.sweeps if run else None,
                      run.converged if run else None, seconds, run.stop_reason if run else None)


def phase_diagram(weights: Sequence[np.ndarray], d: int, lambdas: Sequence[float],
                  conventions: Sequence[AnchorConvention] = ("original",),
                  stopping: StoppingRule = COMPRESSION, progress: bool = True) -> dict[str, Any]:
    """All (lambda, tying) cells (untied cells once per anchor convention) plus the Eckart-Young floor."""
    try:
        stack = Stack.of(weights)
    except ValueError as e:
        raise GbdError(f"phase diagram: {e}") from e
    cells = [(lam, False, conv) for conv in conventions for lam in lambdas]
    if stack.square:
        cells += [(lam, True, "original") for lam in lambdas]
    points = [asdict(phase_point(stack, d, lam, tied, conv, stopping))
              for lam, tied, conv in tqdm(cells, desc="phase diagram", disable=not progress)]
    start = time.perf_counter()
    per_layer = per_layer_truncated_svd(stack, d)
    svd_seconds = time.perf_counter() - start
    floor = frobenius_error_fraction(stack.weights, per_layer)
    return {"d": d, "L": stack.L, "dims": list(stack.dims), "points": points, "eckart_young_fraction": floor,
            "svd_seconds": svd_seconds}


def phase_part(loaded: LoadedModel, kind: str, ratio: float, mode: str, progress: bool = True) -> dict[str, Any]:
    """The phase diagram on the model's ``kind`` targets at d = round(ratio * D), both anchor conventions."""
    _, weights, _ = read_targets(loaded.model, kind)
    budget = mode_named(mode)
    d = rank_for(weights, ratio)
    return phase_diagram(weights, d, budget.phase_lambdas, conventions=CONVENTIONS, stopping=budget.stopping,
                         progress=progress)
