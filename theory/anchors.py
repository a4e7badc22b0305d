"""Anchors A_0..A_L in the paper's two conventions (Table 4), SVD-derived, orthonormal n_i x d.

- ``original``:  A_i = top-d RIGHT singular subspace of W_{i+1}, the layer that reads interface i;
                 the last interface (no reader) takes the top-d LEFT singular subspace of W_L.
- ``v1-output``: A_i = top-d LEFT singular subspace of W_i, the layer that writes interface i;
                 interface 0 (no writer) takes the top-d RIGHT singular subspace of W_1.
Pass the whitened stack (W_l S_l) to get the activation-aware anchors. ``d`` is one rank or one per
interface (d_0, ..., d_L): A_i then has d_i columns.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from theory.grassmann import Array, top_left_singular
from theory.stack import Stack

AnchorConvention = Literal["original", "v1-output"]
CONVENTIONS: tuple[str, ...] = ("original", "v1-output")


def _top_left(W: Array, d: int) -> Array:
    """Top-d left singular subspace of W (n x m); for d > min(n, m) (possible with per-interface ranks) the
    leading min(n, m) singular vectors completed by an orthonormal basis of the null space of W^T."""
    if d <= min(W.shape):
        return top_left_singular(W, d)
    return np.linalg.svd(W, full_matrices=True)[0][:, :d].copy()


def anchors(stack: Stack, d: int | Sequence[int], convention: AnchorConvention = "original") -> list[Array]:
    """The anchors A_0..A_L of ``stack`` at rank d (or d_i at interface i) in the named convention."""
    ds = stack.ranks(d)
    Ws = stack.weights
    if convention == "original":
        return [_top_left(W.T, di) for W, di in zip(Ws, ds)] + [_top_left(Ws[-1], ds[-1])]
    if convention == "v1-output":
        return [_top_left(Ws[0].T, ds[0])] + [_top_left(W, di) for W, di in zip(Ws, ds[1:])]
    raise ValueError(f"unknown anchor convention {convention!r}; choose one of {CONVENTIONS}")
