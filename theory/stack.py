"""Weight stacks W_1..W_L (W_l : R^{n_{l-1}} -> R^{n_l}, stored as n_l x n_{l-1} arrays), validated."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from theory.grassmann import Array, check_rank


@dataclass(frozen=True)
class Stack:
    """A validated chain of linear maps; ``dims[i]`` is n_i, the width of interface i (i = 0..L)."""

    weights: tuple[Array, ...]

    @classmethod
    def of(cls, weights: Sequence[Array]) -> "Stack":
        """Validate and copy to float64: non-empty, 2-D, finite, chained shapes n_l x n_{l-1}."""
        if len(weights) == 0:
            raise ValueError("a stack needs at least one weight matrix")
        ws = []
        for l, W in enumerate(weights, start=1):
            W = np.asarray(W, dtype=np.float64)
            if W.ndim != 2:
                raise ValueError(f"W_{l} must be 2-D, got shape {W.shape}")
            if not np.all(np.isfinite(W)):
                raise ValueError(f"W_{l} contains NaN or infinite entries")
            if ws and ws[-1].shape[0] != W.shape[1]:
                raise ValueError(
                    f"W_{l} reads {W.shape[1]} inputs but W_{l-1} writes {ws[-1].shape[0]}: shapes do not chain"
                )
            ws.append(W)
        return cls(tuple(ws))

    @property
    def L(self) -> int:
        return len(self.weights)

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    @property
    def square(self) -> bool:
        """All W_l are n x n with one n (the setting of tied sections)."""
        return len(set(self.dims)) == 1

    def ranks(self, d: int | Sequence[int]) -> tuple[int, ...]:
        """Per-interface ranks (d_0, ..., d_L), each 1 <= d_i <= n_i; an int d means d at every interface."""
        ds = (d,) * (self.L + 1) if isinstance(d, (int, np.integer)) else tuple(d)
        if len(ds) != self.L + 1:
            raise ValueError(f"need L+1 = {self.L + 1} interface ranks, got {len(ds)}")
        for n, di in zip(self.dims, ds):
            check_rank(n, di)
        return tuple(int(di) for di in ds)

    def check_rank(self, d: int | Sequence[int]) -> None:
        """Raise ValueError unless ``ranks(d)`` is valid."""
        self.ranks(d)

    def total_energy(self) -> float:
        """sum_l ||W_l||_F^2."""
        return float(sum(np.sum(W * W) for W in self.weights))

    def whitened(self, S: Sequence[Array]) -> "Stack":
        """The activation-aware stack W_l S_l (S_l a whitening factor of layer l's input second moment)."""
        if len(S) != self.L:
            raise ValueError(f"need {self.L} whitening factors, got {len(S)}")
        return Stack.of([W @ Sl for W, Sl in zip(self.weights, S)])
