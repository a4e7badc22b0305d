"""The paper's bundle family on the product of Grassmannians and its corners, and Basis-Sharing-core.

- ``bundle``: sections U_0..U_L from ``theory.corners.solve`` on the (optionally whitened) stack, anchor strength
  lambda, tied or untied; installed by the generalized projection or the sandwich (``factors.section_factors``).
- ``corner(lam, tied)``: ``gbd`` (0, untied), ``gbd-tied`` (0, tied), ``bs-core-two-sided`` (inf, tied: U_BS on
  both sides), ``anchored`` (inf, untied).
- ``bs_core``: Basis-Sharing-core as the paper's section 7.1 describes it: the tied OUTPUT section U_BS (top-d left
  singular subspace of [W_1 ... W_L]) shared by every layer, per-layer INPUT sections V_l (top-d right singular
  subspace of W_l).
All solver mathematics lives in ``theory``; this module only assembles factors.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from experiments.cache import cache_key
from experiments.errors import GbdError
from experiments.methods.factors import Compression, Request, section_factors, whiten
from theory.corners import Solution, solve
from theory.grassmann import top_left_singular
from theory.stack import Stack
from theory.stopping import StoppingRule

SOLVE_MEMO_SIZE = 16


_solutions: OrderedDict[str, Solution] = OrderedDict()


def solve_memo(stack: Stack, d: int | Sequence[int], lam: float, tied: bool, convention: str,
               stopping: StoppingRule) -> Solution:
    """theory.corners.solve, remembered in this process (the last SOLVE_MEMO_SIZE) under the exact inputs:
    every weight's shape and float64 bytes, d, lambda, tying, convention and the whole stopping rule
    (StoppingRule.key). The phase diagram and the surgery runs solve identical problems (GBD and its sandwich variant, the lambda = c rows, BS-core);
    each is solved once. The Solution returned is shared: callers must not modify it."""
    key = cache_key(*(f"{W.shape}" for W in stack.weights),
                    *(np.ascontiguousarray(W, dtype=np.float64).tobytes() for W in stack.weights),
                    repr((stack.ranks(d), float(lam), bool(tied), str(convention), stopping.key())))
    if key in _solutions:
        _solutions.move_to_end(key)
        return _solutions[key]
    solution = solve(stack, d, lam, tied, convention, rule=stopping)
    _solutions[key] = solution
    while len(_solutions) > SOLVE_MEMO_SIZE:
        _solutions.popitem(last=False)
    return solution


def bundle(req: Request) -> Compression:
    """Sections U_0..U_L from theory.corners.solve; layer l installed with U_out = U_l, U_in = U_{l-1}.

    Input basis V: V = U_in on the raw stack. On the whitened stack W_l S_l, U_in lives in whitened
    coordinates and the layer reads x through U_in^T S^+ x, i.e. V = (S^+)^T U_in. Then (A = C V^T, B = U_out)
    - sandwich:   C = U_out^T (W S) U_in, so W_hat = P_out W S P_in S^+ (raw: P_out W P_in);
    - projection: C = U_out^T W Sigma V (V^T Sigma V)^{-1} (``generalized_projection``).
    When S S^T = Sigma exactly and S is invertible, Sigma V = S U_in and V^T Sigma V = I, so the whitened
    projection coincides with the whitened sandwich; they differ only under a Cholesky jitter.
    ``bca=False`` keeps the initial sections (anchors untied, U_BS tied) to isolate what BCA adds.
    """
    notes: list[str] = []
    whs = ([whiten(S, req.whitening, f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
           if req.whitened else None)
    try:
        stack = Stack.of(req.weights)
        if whs is not None:
            stack = stack.whitened([w.S for w in whs])
        sol = solve_memo(stack, req.d, req.lam if req.bca else np.inf, req.tied, req.convention,
                         req.stopping)
    except ValueError as e:
        raise GbdError(f"{req.method}: {e}") from e
    layers = [section_factors(W, Sigma, sol.sections[l], sol.sections[l - 1], None if whs is None else whs[l - 1],
                              req.installation, f"layer {l}", notes)
              for l, (W, Sigma) in enumerate(zip(req.weights, req.sigmas), start=1)]
    notes.append(f"lambda={req.lam}, tied={req.tied}, convention={sol.convention}, installation="
                 f"{req.installation}, whitened={req.whitened}" + ("" if req.bca else ", no BCA (initial sections)"))
    if sol.run is not None and not sol.run.converged:
        notes.append(sol.run.stop_note)
    run = sol.run
    return Compression(req.method, layers, [req.d] * len(layers), notes, sol.sections,
                       run.sweeps if run else None, run.history if run else None)


def corner(lam: float, tied: bool) -> Callable[[Request], Compression]:
    """A named corner: ``bundle`` with (lambda, tied) fixed, whatever the caller passed."""
    return lambda req: bundle(replace(req, lam=lam, tied=tied))


def bs_core(req: Request) -> Compression:
    """Basis-Sharing-core as the paper's section 7.1 describes it: tied output, per-layer input.

    Output section U_BS = top-d left singular subspace of [W~_1 ... W~_L] (SPEC section 1; it minimizes the
    one-sided error sum_l ||W~_l - P W~_l||^2), the same for every layer; input section of layer l: the top-d
    right singular subspace of W~_l alone. W~_l = W_l, or W_l S_l when ``whitened`` (then the input section lives
    in whitened coordinates). Installed by ``section_factors`` like the bundle family (generalized projection
    or sandwich). At d = n every section is the whole space and W_hat_l = W_l.
    """
    notes: list[str] = []
    whs = ([whiten(S, req.whitening, f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
           if req.whitened else None)
    stack = Stack.of(req.weights)
    if whs is not None:
        stack = stack.whitened([w.S for w in whs])
    n_out = stack.weights[0].shape[0]
    if any(W.shape[0] != n_out for W in stack.weights):
        raise GbdError(f"bs-core: a tied output section needs one output width, got "
                       f"{[W.shape[0] for W in stack.weights]}")
    U_BS = top_left_singular(np.hstack(stack.weights), req.d)
    layers = [section_factors(W, Sigma, U_BS, top_left_singular(Wt.T, req.d), None if whs is None else whs[l - 1],
                              req.installation, f"layer {l}", notes)
              for l, (W, Sigma, Wt) in enumerate(zip(req.weights, req.sigmas, stack.weights), start=1)]
    notes.append(f"Basis-Sharing-core (section 7.1): tied output U_BS, per-layer input sections, installation="
                 f"{req.installation}, whitened={req.whitened}")
    return Compression(req.method, layers, [req.d] * len(layers), notes)

