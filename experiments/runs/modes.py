"""One definition of each mode: every sample size, grid and seed count of a run, in one place.

quick (minutes on a laptop CPU), standard (the committed CPU report), full (the paper's calibration of
256 x 2048, the whole test set and all 10,042 HellaSwag items, for the main configurations; standard's solver
grids and stopping rule, so that on one GPU the evaluation, not the CPU solver, sets its time). Edit the sizes
here and nowhere else.

Windows and items are drawn at random without replacement, one draw per run seeded by the run's seed and shared
by every configuration (``experiments.sampling``; ``--sample first`` takes the first k instead). Standard's
30 of 148 windows and 1,000 of 10,042 items give intervals whose measured coverage of the whole-set value is at
least 93 % at nominal 95 % (``experiments.audit.statistics.coverage``); quick's 2 windows are too few to decide.

The ``open_*`` fields size the section "What the paper left open" (``experiments.runs.beyond``),
which shares the calibration, windows, items and BCA stopping rule above: its ratio sweep and other weight
classes are evaluated on ``open_sweep_windows`` windows and ``open_sweep_items`` HellaSwag items (0: skipped,
None: all); Table 4's bundle runs at lambda / c in ``open_lambdas``; the activation-coupled joint objective at
mu in ``open_mus`` (units of max_l ||W_l S_l||_2^2). The section's other questions are evaluated on the
reproduction's windows and, with ``open_hellaswag``, its HellaSwag items (no claim of the section reads HellaSwag;
standard skips it there, as it does for the calibration-seed rows, whose spread is of PPL, activation and Frobenius
error). The lm-eval vs direct-scorer HellaSwag cross-check scores ``cross_check_items`` of the evaluated items a
second time, item by item.

What costs the time on a CPU is HellaSwag: 1,000 random items are about 157,000 packed tokens (the first 1,000,
ActivityNet's short contexts, about 78,000), against 61,000 for 30 windows of 2,048 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.errors import GbdError
from theory.stopping import StoppingRule

DEFAULT_SEED = 3          # SVD-LLM's calibration seed


@dataclass(frozen=True)
class Mode:
    """How much of everything a mode spends."""

    name: str
    calib_n: int                      # calibration sequences
    calib_T: int                      # tokens per calibration sequence
    ppl_windows: int | None           # None: every window of the test set; else drawn (experiments.sampling)
    hellaswag_items: int | None       # None: all 10,042; else drawn (experiments.sampling)
    stopping: StoppingRule            # BCA's gradient and stall tolerances and sweep limit (theory.stopping)
    sweep_lambdas: tuple[float, ...]  # interior lambda / c of the surgery sweep
    extended: bool                    # also tied bundle, reference Basis Sharing, anchored corner
    phase_lambdas: tuple[float, ...]  # lambda / c of the phase diagram (0 and inf: the corners)
    theory_samples: int               # seeded stacks per family in the theory audit
    calibration_seeds: int            # seeds seed, seed + 1, ... for the spread of V1, V2 and GBD
    open_sweep_windows: int | None = 1            # ratio sweep and other weight classes: perplexity windows
    open_sweep_items: int | None = 0              # ... and HellaSwag items (0: skipped)
    open_lambdas: tuple[float, ...] = (0.1, 1.0)  # Table 4's lambda / c
    open_mus: tuple[float, ...] = (0.1, 1.0)      # the activation-coupled joint objective's mu
    open_hellaswag: bool = True       # the section's other questions also on the run's HellaSwag items
    cross_check_items: int | None = None          # lm-eval vs the direct scorer: items (None: every evaluated one)

    def sizes(self, sample: str) -> tuple[int | None, int | None]:
        """(windows, items) a configuration is evaluated on (``experiments.runs.plan.Config.sample``): "main" the
        reproduction's; "open" its windows, and its items only with ``open_hellaswag`` (else 0: none); "sweep" the
        sweeps' ``open_sweep_windows`` and ``open_sweep_items``."""
        if sample == "main":
            return self.ppl_windows, self.hellaswag_items
        if sample == "open":
            return self.ppl_windows, self.hellaswag_items if self.open_hellaswag else 0
        if sample == "sweep":
            return self.open_sweep_windows, self.open_sweep_items
        raise GbdError(f"unknown sample {sample!r}; choose main, open or sweep")

    def seeds(self, seed: int) -> tuple[int, ...]:
        """The calibration seeds of this mode, starting at the run's ``seed``."""
        return tuple(seed + k for k in range(self.calibration_seeds))


MODES: dict[str, Mode] = {
    "quick": Mode("quick", 8, 512, 2, 40, StoppingRule(stall_tol=1e-6, max_sweeps=25), (1.0,), False,
                  (0.0, 1.0, np.inf), 4, 1),
    "standard": Mode("standard", 32, 1024, 30, 1000, StoppingRule(stall_tol=1e-7, max_sweeps=60), (0.1, 1.0, 10.0),
                     True, (0.0, 0.1, 1.0, 10.0, np.inf), 12, 3, open_sweep_windows=20,
                     open_hellaswag=False, cross_check_items=200),
    "full": Mode("full", 256, 2048, None, None, StoppingRule(stall_tol=1e-7, max_sweeps=60), (1.0,), False,
                 (0.0, 0.1, 1.0, 10.0, np.inf), 12, 3, open_sweep_windows=20, open_sweep_items=1000),
}


def mode(name: str) -> Mode:
    """The mode called ``name`` (one clear error otherwise)."""
    try:
        return MODES[name]
    except KeyError:
        raise GbdError(f"no mode {name!r}; choose from {sorted(MODES)}") from None
