"""One stopping rule for every solve and every criticality test (like pymanopt's optimizers, which take their
thresholds and say why they stopped).

A ``StoppingRule`` holds three numbers:
- ``gtol``: the relative Riemannian gradient ||(I - P) grad f|| / ||grad f|| (theory.objective, scale-free: a
  stack multiplied by s has the same value) at or below which a point is *critical*. It decides BCA's
  "gradient" stop (``converged``), the "not critical" class of ``classify`` and Theorem 2's "gradient" case, so
  every caller calls the same point critical or not on every stack, whatever the scales of its blocks;
- ``stall_tol``: the relative energy change |E_k - E_{k-1}| <= stall_tol * max(1, |E_k|) of one sweep; after
  ``STALL_SWEEPS`` such sweeps in a row a non-critical solve stops as "stalled";
- ``max_sweeps``: the sweep limit ("max_sweeps").

Named margins derived from a rule (never separate literals):
- ``ENDPOINT_MARGIN``: an end point found by another solver (pymanopt trust regions, which stops on its own
  absolute gradient norm) counts as critical when its relative gradient is <= ENDPOINT_MARGIN * gtol; the
  factor 10 absorbs the difference between the two solvers' stopping quantities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StopReason = Literal["gradient", "stalled", "cycle", "max_sweeps"]
STOP_REASONS: tuple[str, ...] = ("gradient", "stalled", "cycle", "max_sweeps")
STALL_SWEEPS = 3            # sweeps in a row with a relative energy change <= stall_tol before "stalled"
ENDPOINT_MARGIN = 10.0      # module docstring


@dataclass(frozen=True)
class StoppingRule:
    """Gradient tolerance (critical / converged), stall tolerance (relative energy change), sweep limit."""

    gtol: float = 1e-6
    stall_tol: float = 1e-12
    max_sweeps: int = 500

    def __post_init__(self) -> None:
        if not (0 <= self.gtol < 1 and 0 <= self.stall_tol < 1):
            raise ValueError(f"gtol and stall_tol must be in [0, 1), got {self.gtol}, {self.stall_tol}")
        if self.max_sweeps < 0:
            raise ValueError(f"max_sweeps must be >= 0, got {self.max_sweeps}")

    def critical(self, rel_grad: float) -> bool:
        """rel_grad <= gtol: the point is critical (the solve converged)."""
        return rel_grad <= self.gtol

    def small_change(self, previous: float, current: float) -> bool:
        """|current - previous| <= stall_tol * max(1, |current|)."""
        return abs(current - previous) <= self.stall_tol * max(1.0, abs(current))

    def reason(self, rel_grad: float, stalled_sweeps: int, sweeps: int) -> StopReason | None:
        """Why to stop now (pymanopt's order: the gradient first, then the stall, then the sweep limit), else None."""
        if self.critical(rel_grad):
            return "gradient"
        if stalled_sweeps >= STALL_SWEEPS:
            return "stalled"
        if sweeps >= self.max_sweeps:
            return "max_sweeps"
        return None

    def explain(self, reason: str, sweeps: int) -> str:
        """One sentence saying why a solve stopped, with this rule's numbers."""
        text = {"gradient": f"converged: relative gradient <= {self.gtol:g}",
                "stalled": f"stalled: energy change <= {self.stall_tol:g} (relative) for {STALL_SWEEPS} sweeps "
                           f"with the relative gradient above {self.gtol:g}",
                "cycle": f"the plain tied step cycles (relative gradient above {self.gtol:g})",
                "max_sweeps": f"stopped at the sweep limit {self.max_sweeps} with the relative gradient above "
                              f"{self.gtol:g}"}
        if reason not in text:
            raise ValueError(f"unknown stop reason {reason!r}; one of {STOP_REASONS}")
        return f"BCA {text[reason]} after {sweeps} sweeps"

    def key(self) -> tuple[float, float, int]:
        """What a cache key must hold of the rule."""
        return (float(self.gtol), float(self.stall_tol), int(self.max_sweeps))


DEFAULT = StoppingRule()                                              # BCA's default (untied)
TIED = StoppingRule(max_sweeps=2000)                                  # the tied step may need more sweeps
COMPRESSION = StoppingRule(stall_tol=1e-10)                           # experiments.compress default
TIGHT = StoppingRule(gtol=1e-13, stall_tol=1e-15, max_sweeps=2000)    # bounds measured to 1e-12 (Theorem 1),
                                                                      # and a start that needs no solve
