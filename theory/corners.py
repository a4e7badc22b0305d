"""The corners of the (lambda, tying) square and the general solve (SPEC.md section 1).

| corner               | lambda   | sections |
| svd-llm              | infinity | untied: U_i = A_i (anchors)                      |
| basis-sharing-core   | infinity | tied:   U = U_BS (top-d left sing. of [W_1..W_L]) |
| gbd                  | 0        | untied: BCA on the pure bundle energy            |
| gbd-tied             | 0        | tied:   BCA on T(U)                              |

Every solve returns L+1 sections (a tied solve repeats its one U); ``sandwich`` turns them
into compressed weights P_l W_l P_{l-1}. The activation-aware variant passes the whitened
stack W_l S_l (experiments.compress maps the result back).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from theory.anchors import AnchorConvention, anchors as make_anchors
from theory.bca import BCAResult, basis_sharing_core, bca_tied, bca_untied
from theory.grassmann import Array, projector
from theory.stack import Stack
from theory.stopping import COMPRESSION, StoppingRule

CORNERS: dict[str, tuple[float, bool]] = {
    "svd-llm": (np.inf, False),
    "basis-sharing-core": (np.inf, True),
    "gbd": (0.0, False),
    "gbd-tied": (0.0, True),
}


@dataclass
class Solution:
    """Sections U_0..U_L of one configuration and the BCA run that found them (None at lambda = inf)."""

    sections: list[Array]
    lam: float
    tied: bool
    convention: str
    run: BCAResult | None


def solve(stack: Stack, d: int | Sequence[int], lam: float, tied: bool, convention: AnchorConvention = "original",
          rule: StoppingRule = COMPRESSION) -> Solution:
    """Maximize the bundle energy at anchor strength ``lam`` (np.inf: the anchors themselves) by BCA stopped by
    ``rule``; ``d`` one rank or, untied, one per interface (theory.bca)."""
    ranks = stack.ranks(d)
    if tied:
        if len(set(ranks)) > 1:
            raise ValueError(f"tied sections need one rank at every interface, got {ranks}")
        d = ranks[0]
        A = basis_sharing_core(stack, d)
        if np.isinf(lam):
            return Solution([A] * (stack.L + 1), lam, True, "basis-sharing", None)
        run = bca_tied(stack, d, lam=lam, anchor=A, init=A, rule=rule)
        return Solution([run.sections[0]] * (stack.L + 1), lam, True, "basis-sharing", run)
    A = make_anchors(stack, d, convention)
    if np.isinf(lam):
        return Solution(A, lam, False, convention, None)
    run = bca_untied(stack, d, lam=lam, anchors=A, init=A, rule=rule)
    return Solution(run.sections, lam, False, convention, run)


def solve_corner(stack: Stack, d: int, corner: str, convention: AnchorConvention = "original") -> Solution:
    """One of ``CORNERS`` by name."""
    if corner not in CORNERS:
        raise ValueError(f"unknown corner {corner!r}; choose one of {sorted(CORNERS)}")
    lam, tied = CORNERS[corner]
    return solve(stack, d, lam, tied, convention)


def sandwich(stack: Stack, sections: Sequence[Array]) -> list[Array]:
    """W_hat_l = P_l W_l P_{l-1}."""
    return [projector(sections[l]) @ W @ projector(sections[l - 1]) for l, W in enumerate(stack.weights, 1)]


def per_layer_truncated_svd(stack: Stack, d: int) -> list[Array]:
    """Each layer's own best rank-d approximation (Eckart-Young), with no shared interfaces."""
    out = []
    for W in stack.weights:
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        out.append((U[:, :d] * s[:d]) @ Vt[:d])
    return out
