"""The plan of a run: one ``Config`` per compressed model, the configurations of each mode's tables."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from experiments.errors import GbdError
from experiments.runs.modes import Mode

if TYPE_CHECKING:
    from experiments.methods.factors import Compression
    from experiments.runs.context import Context


Build = Callable[["Context", int, Mode], "Compression | None"]   # None: the model as it is


@dataclass(frozen=True)
class Config:
    """One model of a run and how it is evaluated: every row of the report, the open questions and a plugin's run.

    ``label``; ``table``: the report table or question it belongs to. The compression: ``build(ctx, d, mode)`` when
    given (a sequential or control compression, other weight classes: None is the model as it is), else the
    registry's ``method`` (None: the model as it is) with ``lam_over_c``, ``tied``, ``convention``,
    ``installation``, ``bias_mode`` (compress's: "method-default" keeps V1's, V2's and Basis Sharing's bias,
    projects the rest's) and ``options``, further keyword arguments of ``compress`` as (name, value) pairs.
    ``kind`` and ``ratio``: its targets and d/D (None: the run's). ``sample``: the windows and items it is
    evaluated on (``experiments.runs.modes.Mode.sizes``: "main", "open" or "sweep"). Its repr names every field
    but ``build`` (a row's cache key reads it)."""

    label: str
    method: str | None
    table: str
    lam_over_c: float = 0.0
    tied: bool = False
    convention: str = "original"
    installation: str = "projection"
    bias_mode: str = "method-default"
    options: tuple[tuple[str, Any], ...] = ()
    kind: str | None = None
    ratio: float | None = None
    sample: str = "main"
    build: Build | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict[str, Any]:
        """What a row records of its configuration: every field but ``build``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.repr}


def configs(budget: Mode) -> list[Config]:
    """The configurations of the paper's tables that this budget runs."""
    rows = [Config("original", None, "main"), Config("SVD-LLM V1", "v1", "main"),
            Config("SVD-LLM V2", "v2", "main"), Config("pure bundle (GBD)", "gbd", "main"),
            Config("Basis-Sharing-core", "bs-core", "main"),
            Config("Basis-Sharing-core, two-sided (tied corner)", "bs-core-two-sided", "main")]
    if budget.extended:
        rows += [Config("tied bundle (GBD-tied)", "gbd-tied", "main"),
                 Config("Basis Sharing (reference, pairs)", "basis-sharing", "main"),
                 Config("anchored corner (lambda=inf)", "anchored", "main", lam_over_c=np.inf)]
    rows += [Config(f"bundle lambda/c={lam:g}", "bundle", "sweep", lam_over_c=lam) for lam in budget.sweep_lambdas]
    mid = budget.sweep_lambdas[len(budget.sweep_lambdas) // 2]
    rows += [Config(f"bundle lambda/c={mid:g}, V1-output anchors", "bundle", "convention", lam_over_c=mid,
                    convention="v1-output"),
             Config("anchored corner, V1-output anchors (no BCA)", "anchored", "convention", lam_over_c=np.inf,
                    convention="v1-output"),
             Config("pure bundle (GBD), orthogonal sandwich", "gbd", "surgery", installation="sandwich")]
    return rows


def choose_configs(budget: Mode, only: Sequence[str] | None = None) -> list[Config]:
    """The budget's configurations, or those labelled in ``only`` (an unknown label is an error)."""
    labels = [c.label for c in configs(budget)]
    unknown = sorted(set(only or ()) - set(labels))
    if unknown:
        raise GbdError(f"no configuration labelled {unknown} in this mode; choose from {labels}")
    return [c for c in configs(budget) if only is None or c.label in only]
