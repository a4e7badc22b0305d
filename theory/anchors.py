"""Anchors A_0..A_L in the paper's two conventions (Table 4), SVD-derived, orthonormal n_i x d.

- ``original``:  A_i = top-d RIGHT singular subspace of W_{i+1}, the layer that reads interface i;
                 the last interface (no reader) takes the top-d LEFT singular subspace of W_L.
- ``v1-output``: A_i = top-d LEFT singular subspace of W_i, the layer that writes interface i;
                 interface 0 (no writer) takes the top-d RIGHT singular subspace of W_1.
Pass the whitened stack (W_l S_l) to get the activation-aware anchors.
"""
from __future__ import annotations

from typing import Literal

from theory.grassmann import Array, top_left_singular
from theory.stack import Stack

AnchorConvention = Literal["original", "v1-output"]
CONVENTIONS: tuple[str, ...] = ("original", "v1-output")


def anchors(stack: Stack, d: int, convention: AnchorConvention = "original") -> list[Array]:
    """The anchors A_0..A_L of ``stack`` at rank d in the named convention."""
    stack.check_rank(d)
    Ws = stack.weights
    if convention == "original":
        return [top_left_singular(W.T, d) for W in Ws] + [top_left_singular(Ws[-1], d)]
    if convention == "v1-output":
        return [top_left_singular(Ws[0].T, d)] + [top_left_singular(W, d) for W in Ws]
    raise ValueError(f"unknown anchor convention {convention!r}; choose one of {CONVENTIONS}")
