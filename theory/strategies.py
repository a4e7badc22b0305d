"""Hypothesis strategies for weight stacks: the families the property tests and the report search over.

| family          | W_l                                                                  |
| random          | i.i.d. Gaussian entries                                              |
| low-rank        | G_l H_l^T with inner dimension r < n (shared singular structure absent) |
| near-symmetric  | S_l + eps N_l, S_l symmetric, eps small                               |
| block           | blockdiag(A_l, eps C_l): A blocks (k x k) dominate, the SPEC.md section 5 doubt |
| rectangular     | n_l x n_{l-1} with varying widths (untied statements only)            |

Entries come from a seeded numpy generator (the seed and the shape parameters are what
hypothesis draws and shrinks), so every example is reproducible from its printed parameters.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from hypothesis import strategies as st

from theory.stack import Stack

SQUARE_FAMILIES: tuple[str, ...] = ("random", "low-rank", "near-symmetric", "block")
FAMILIES: tuple[str, ...] = SQUARE_FAMILIES + ("rectangular",)


def make_stack(family: str, dims: Sequence[int], seed: int, eps: float = 0.05, rank: int = 1) -> Stack:
    """The stack of one family with interface widths ``dims`` (all equal except for ``rectangular``)."""
    rng = np.random.default_rng(seed)
    pairs = list(zip(dims[1:], dims[:-1]))
    if family in ("random", "rectangular"):
        return Stack.of([rng.standard_normal(shape) for shape in pairs])
    n = dims[0]
    if family == "low-rank":
        return Stack.of([rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n)) for _ in pairs])
    if family == "near-symmetric":
        sym = [rng.standard_normal((n, n)) for _ in pairs]
        return Stack.of([(S + S.T) / 2 + eps * rng.standard_normal((n, n)) for S in sym])
    if family == "block":
        k = max(1, n // 2)
        ws = []
        for _ in pairs:
            W = eps * rng.standard_normal((n, n))
            W[:k, k:] = 0.0
            W[k:, :k] = 0.0
            W[:k, :k] = 3.0 * np.eye(k) + rng.standard_normal((k, k))
            ws.append(W)
        return Stack.of(ws)
    raise ValueError(f"unknown stack family {family!r}; choose one of {FAMILIES}")


@st.composite
def stacks(draw: st.DrawFn, families: Sequence[str] = FAMILIES, max_n: int = 6, max_L: int = 4,
           min_n: int = 2) -> tuple[Stack, int]:
    """A (stack, d) pair with 1 <= d < min width, from one of ``families``."""
    family = draw(st.sampled_from(list(families)))
    L = draw(st.integers(1, max_L))
    if family == "rectangular":
        dims = draw(st.lists(st.integers(min_n, max_n), min_size=L + 1, max_size=L + 1))
    else:
        dims = [draw(st.integers(min_n, max_n))] * (L + 1)
    d = draw(st.integers(1, min(dims) - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    eps = draw(st.sampled_from([0.01, 0.05, 0.2]))
    rank = draw(st.integers(1, max(1, dims[0] - 1)))
    return make_stack(family, dims, seed, eps, rank), d
