"""Which perplexity windows and HellaSwag items a run evaluates: one draw per run, shared by every configuration.

A run's ``Sample`` is its design ("random" or "first") and its seed (the run's ``--seed``, never a calibration
seed of the seed-spread rows). "random" draws k of the N units uniformly without replacement:
    permutation = default_rng([seed, stream]).permutation(N),   indices = sorted(permutation[:k]),
``stream`` 0 for perplexity windows and 1 for HellaSwag items, so the two draws are independent and a smaller
sample of the same run (the section "What the paper left open") is a subset of a larger one. "first" takes
0..k-1 (the protocol of the SVD-LLM code; contiguous windows are correlated, so its intervals undercover: see
``experiments.audit.statistics.coverage``). Indices are in protocol order (ascending), the order the per-window
and per-item data of a row follow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.errors import GbdError

SAMPLINGS = ("random", "first")
STREAMS = {"windows": 0, "items": 1}


@dataclass(frozen=True)
class Sample:
    """How a run picks its windows and items: ``how`` one of SAMPLINGS, ``seed`` the run's seed."""

    how: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self.how)

    def draw(self, population: int, k: int | None, unit: str) -> tuple[int, ...]:
        """Indices of the ``k`` ``unit``s ("windows" or "items", STREAMS) evaluated out of ``population``
        (k None or >= population: all of them), ascending."""
        if population < 1:
            raise GbdError(f"no {unit} to sample from")
        if k is None or k >= population:
            return tuple(range(population))
        if k < 1:
            raise GbdError(f"a sample needs at least one of the {unit}, got {k}")
        if self.how == "first":
            return tuple(range(k))
        permutation = np.random.default_rng([self.seed, STREAMS[unit]]).permutation(population)
        return tuple(np.sort(permutation[:k]).tolist())

    def describe(self, k: int, population: int, unit: str) -> str:
        """In words, for the report: 'k of N windows drawn at random (seed s)' or 'the first k of N windows'."""
        if k >= population:
            return f"all {population} {unit}"
        if self.how == "first":
            return f"the first {k} of {population} {unit} (--sample first: contiguous, not representative)"
        return f"{k} of {population} {unit} drawn at random without replacement (seed {self.seed})"


def check_sampling(how: str) -> None:
    """One clear error for a sampling design that is not in SAMPLINGS."""
    if how not in SAMPLINGS:
        raise GbdError(f"unknown --sample {how!r}; choose one of {', '.join(SAMPLINGS)}")
