"""The typed, versioned results of a run: what ``results.json`` holds and the report renders.

``Row`` is one configuration's measurements (what ``experiments.runs.rows.run_config`` writes); ``Results``
the whole run. ``SCHEMA_VERSION`` changes whenever a field is added, removed or changes meaning; reading a
file of a version before ``OLDEST_READABLE`` or after ``SCHEMA_VERSION``, or a row with missing or unknown fields,
is one clear error. An older version stays readable only while every difference is a field added with the
default None ("not run", "not measured"): ``Results.beyond`` (schema 3), ``Row.layer_activation`` and
``one_sided_fraction`` (schema 5), the fields of the one ``Config`` (schema 7), the HellaSwag fields of a row not scored on HellaSwag (schema 6: the
calibration-seed rows of standard mode) and the row fields that ``ROW_FIELDS_SINCE`` names by the version that
added them, which a file of that version or later must have (its HellaSwag ones only on a row scored on
HellaSwag).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, TypeVar

from experiments.errors import GbdError

SCHEMA_VERSION = 7                 # 3: Results.beyond; 4: Row.hellaswag_acc_norm_stderr; 5: the drawn indices,
                                   # Row.layer_activation, one_sided_fraction; 6: rows not scored on HellaSwag;
                                   # 7: one Config for every row (options, kind, ratio, sample, D, windows)
OLDEST_READABLE = 2
ROW_FIELDS_SINCE = {4: ("hellaswag_acc_norm_stderr",),
                    5: ("ppl_window_index", "ppl_windows_available", "hellaswag_item_index",
                        "hellaswag_items_available")}
HELLASWAG_ROW_FIELDS = frozenset({"hellaswag_acc_norm_stderr", "hellaswag_item_index", "hellaswag_items_available"})
T = TypeVar("T")


@dataclass
class Row:
    """One configuration: its options, perplexity (with per-window data), HellaSwag (with per-item data),
    and for a compressed model its errors, parameter count and notes."""

    label: str
    method: str | None
    table: str
    lam_over_c: float
    tied: bool
    convention: str
    installation: str
    d: int
    ppl: float
    ppl_protocol: str
    nonfinite_windows: int
    ppl_tokens: int
    seconds: float
    hellaswag_acc: float | None = None                 # None (schema 6): a row not scored on HellaSwag
    hellaswag_acc_norm: float | None = None
    hellaswag_acc_stderr: float | None = None
    hellaswag_n: int | None = None
    hellaswag_source: str | None = None
    hellaswag_note: str | None = None
    ppl_dtype: str = "float32"        # perplexity's autocast dtype (experiments.evaluation.DTYPES)
    ppl_window_nll: list[float] = field(default_factory=list)
    ppl_window_tokens: list[int] = field(default_factory=list)
    hellaswag_gold: list[int] = field(default_factory=list)
    hellaswag_pred: list[int] = field(default_factory=list)
    hellaswag_pred_norm: list[int] = field(default_factory=list)
    hellaswag_logliks: list[list[float]] = field(default_factory=list)
    frobenius_fraction: float | None = None
    activation_fraction: float | None = None
    two_sided_fraction: float | None = None
    params_kept: int | None = None
    params_original: int | None = None
    ranks: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    bca_sweeps: int | None = None
    hellaswag_acc_norm_stderr: float | None = None     # schema 4 (ROW_FIELDS_SINCE); None: an older row
    layer_activation: list[float] | None = None        # schema 5: each layer's activation error fraction (None:
                                                       # uncompressed, or a row of an older version)
    one_sided_fraction: float | None = None            # schema 5: methods.metrics.one_sided_fraction
    ppl_window_index: list[int] | None = None          # schema 5: the windows evaluated (indices into the test set's)
    ppl_windows_available: int | None = None           # schema 5: N, the test set's windows
    hellaswag_item_index: list[int] | None = None      # schema 5: the items evaluated (indices into the file)
    hellaswag_items_available: int | None = None       # schema 5: the file's items
    bias_mode: str = "method-default"                  # schema 5: the bias option asked for (compress's BIAS_MODES)
    bias_rule: str | None = None                       # schema 5: the rule applied ("keep" or "project"; None: none)
    options: list[list[Any]] = field(default_factory=list)   # schema 7: further compress options (name, value)
    kind: str | None = None                            # schema 7: the targets' kind (None: an older row)
    ratio: float | None = None                         # schema 7: the configuration's own d/D (None: the run's)
    sample: str = "main"                               # schema 7: which windows and items (Mode.sizes)
    D: int | None = None                               # schema 7: the targets' smallest side
    windows: int | None = None                         # schema 7: windows evaluated


def typed(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)``; missing or unknown fields are one clear error naming ``what``."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise GbdError(f"{what} has unknown fields {unknown} (results schema {SCHEMA_VERSION})")
    try:
        return cls(**data)
    except TypeError as e:
        raise GbdError(f"{what} does not match results schema {SCHEMA_VERSION}: {e}") from None


@dataclass
class Results:
    """A whole run: how it was made, the theory audit, the phase diagram, the surgery, the open questions (when
    run) and the verdicts."""

    command: str
    mode: str
    seed: int
    ratio: float
    kind: str
    versions: dict[str, str]
    started: str
    model: dict[str, Any]
    theory: dict[str, Any]
    phase: dict[str, Any]
    surgery: dict[str, Any]
    timings_s: dict[str, float]
    threads: dict[str, Any] = field(default_factory=dict)   # BLAS / torch threads per part (experiments.threads)
    beyond: dict[str, Any] | None = None    # experiments.runs.beyond.run_open_questions (report --beyond)
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not OLDEST_READABLE <= self.version <= SCHEMA_VERSION:
            raise GbdError(f"results of schema version {self.version}; this code reads versions "
                           f"{OLDEST_READABLE} to {SCHEMA_VERSION}")
        required = [f for since, added in ROW_FIELDS_SINCE.items() if self.version >= since for f in added]
        surgery = self.surgery
        for r in surgery.get("rows", []) + [r for rs in surgery.get("seed_rows", {}).values() for r in rs]:
            scored = self.version < 6 or r.get("hellaswag_n") is not None
            missing = [f for f in required if f not in r and (scored or f not in HELLASWAG_ROW_FIELDS)]
            if missing:
                raise GbdError(f"result row {r.get('label')!r} lacks {missing}, required in results schema "
                               f"{self.version}")
            typed(Row, r, f"result row {r.get('label')!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Results":
        return typed(cls, data, "the results")
