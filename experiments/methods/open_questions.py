"""The data of the report section "What the paper left open, measured here".

``run_open_questions(loaded, mode, ...)`` calibrates the model (cached), runs every configuration of every
question (each row cached as JSON under ``<cache>/beyond``), and returns JSON-ready data::

    {"model", "mode", "budget", "kind", "ratio", "d", "D", "lambda_unit_c", "sources",
     "rows": [{"question", "label", "kind", "d", "ratio", "ppl", "ppl_low", "ppl_high", "window_nlls",
               "windows", "activation_fraction", "frobenius_fraction", "hellaswag_*", "notes", ...}]}

``experiments.methods.open_report.render_section(data, out_dir)`` turns it into Markdown (with the ratio plot).

Questions (``QUESTIONS``):
- ``cross-layer``: sequential (error-propagating) compression and the activation-coupled joint objective
  (two mu) against V1, V2 and GBD;
- ``unification-gap``: the lambda -> inf untied corner over sides x whitening x anchor convention;
- ``whitened-bundle``: every corner of the bundle on W_l S_l (generalized projection) beside its unwhitened self;
- ``table4``: the paper's Table 4 anchor variants;
- ``ratio-sweep``: V1, V2, GBD, BS-core at d/D in RATIOS (fewer windows, said in each row);
- ``other-weights``: MLP down projections (mlp_out) by V1, V2 and sequential (fewer windows). The bundle does not
  apply: D x 4D down projections do not chain (W_{l+1} reads 4D, W_l writes D), which is why the paper asks for
  a per-layer-rank generalization of BCA (not built here).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from experiments.cache import read_json, write_json
from experiments.calibration import cache_key, calibration_batch, model_fingerprint, second_moments
from experiments.compress import AllocationError, Compression, compress
from experiments.data import calibration_text, wikitext2_test
from experiments.errors import GbdError
from experiments.evaluation import tokenize_corpus
from experiments.loading import LoadedModel
from experiments.methods.controls import table4, unification_gap, whitened_corners
from experiments.methods.coupled import METHOD as COUPLED
from experiments.methods.hooks import block_input_moments
from experiments.methods.measure import evaluate_model, measure
from experiments.methods.sequential import sequential_compress
from experiments.pipeline import rank_for, read_targets
from theory.grassmann import Array
from theory.stack import Stack
from theory.theorems import coupling_norms

ROW_FORMAT = "1"      # part of every row's cache key: bump when a row's content changes
RATIOS = (0.5, 0.375, 0.25, 0.125, 0.0625)
QUESTIONS = ("cross-layer", "unification-gap", "whitened-bundle", "table4", "ratio-sweep", "other-weights")
V1_LABEL = "SVD-LLM V1"


@dataclass(frozen=True)
class Budget:
    """Sample sizes of one mode: calibration, windows and HellaSwag items (None: all), the sweeps' smaller ones."""

    calib_n: int
    calib_T: int
    windows: int | None
    items: int | None
    sweep_windows: int | None
    sweep_items: int | None
    lambdas_over_c: tuple[float, ...]
    mus: tuple[float, ...]
    max_sweeps: int
    tol: float


BUDGETS: dict[str, Budget] = {
    "quick": Budget(8, 512, 2, 20, 1, 0, (0.1, 1.0), (0.1, 1.0), 25, 1e-6),
    "standard": Budget(32, 1024, 6, 200, 3, 0, (0.1, 1.0), (0.1, 1.0), 60, 1e-7),
    "full": Budget(256, 2048, None, None, 20, 1000, (0.1, 1.0), (0.1, 1.0), 500, 1e-10),
}


@dataclass
class Setting:
    """One target kind of one model: weights, biases, calibration moments and ids, test ids; lazy extras."""

    loaded: LoadedModel
    kind: str
    names: list[str]
    weights: list[Array]
    biases: list[Array | None]
    sigmas: list[Array]
    calib_ids: torch.Tensor
    test_ids: torch.Tensor
    key: str                      # fingerprint of model, kind, calibration: part of every row's cache key
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def c(self) -> float:
        """The lambda unit max_i (||W_i||_2^2 + ||W_{i+1}||_2^2)."""
        return max(coupling_norms(Stack.of(self.weights))) if len(self.weights) > 1 else 1.0

    def residual(self) -> list[Array]:
        """H_{l+1} = sum h h^T entering the block after each target's block (l = 1..L-1), computed once."""
        if "residual" not in self.extras:
            H = block_input_moments(self.loaded.model, self.calib_ids)
            self.extras["residual"] = [h.numpy() for h in H[1:len(self.names)]]
        return self.extras["residual"]


def prepare_setting(loaded: LoadedModel, kind: str, budget: Budget, seed: int, cache_dir: Path,
                    progress: bool = True) -> Setting:
    """Targets of ``kind``, calibration batch and second moments (cached), tokenized WikiText-2 test."""
    model, tok = loaded.model, loaded.tokenizer
    names, weights, biases = read_targets(model, kind)
    calib = calibration_text()
    ids = calibration_batch(tok, calib.text, budget.calib_n, budget.calib_T, seed)
    fingerprint = model_fingerprint(model).hex()
    key = cache_key(fingerprint, kind, str(seed), str(budget.calib_n), str(budget.calib_T), calib.sha256 or calib.name)
    sigma = second_moments(model, names, ids, progress=progress,
                           cache=cache_dir / f"calibration-{key[:16]}-{budget.calib_n}x{budget.calib_T}.pt")
    return Setting(loaded, kind, names, weights, biases, [sigma[n] for n in names], ids,
                   tokenize_corpus(tok, wikitext2_test().text), key)


Build = Callable[[Setting, int, Budget], Compression | None]     # None: the uncompressed model


@dataclass(frozen=True)
class Entry:
    """One configuration: the question it answers, its label, target kind, ratio d/D, evaluation sizes."""

    question: str
    label: str
    kind: str
    ratio: float
    build: Build = field(compare=False, repr=False)
    sweep: bool = False           # evaluated with the sweep's smaller window / item budget


def _method(name: str, **kw: Any) -> Build:
    """compress(name) on the setting; V2's loss rule falls back to uniform ranks where it is undefined."""
    def build(s: Setting, d: int, b: Budget) -> Compression:
        args = (s.weights, s.sigmas, s.biases, name, d)
        opts = {"tol": b.tol, "max_sweeps": b.max_sweeps, **kw}
        try:
            return compress(*args, **opts)
        except AllocationError as e:
            out = compress(*args, **opts, allocation="uniform")
            out.notes.insert(0, f"loss-based allocation undefined ({e}): uniform ranks used")
            return out
    return build


def _sequential(s: Setting, d: int, b: Budget) -> Compression:
    return sequential_compress(s.loaded.model, s.names, s.weights, s.biases, s.calib_ids, d)[0]


def _coupled(mu: float) -> Build:
    def build(s: Setting, d: int, b: Budget) -> Compression:
        return compress(s.weights, s.sigmas, s.biases, COUPLED, d,
                        options={"mu": mu, "residual": s.residual(), "tol": b.tol, "max_sweeps": b.max_sweeps})
    return build


def _control(run: Callable[..., Compression]) -> Build:
    return lambda s, d, b: run(s.weights, s.sigmas, s.biases, d, s.c)


def _original(s: Setting, d: int, b: Budget) -> None:
    return None


def plan(budget: Budget, ratio: float, kind: str = "attn_out") -> list[Entry]:
    """Every configuration of every question, in report order."""
    E = Entry
    rows = [E("cross-layer", "original", kind, ratio, _original), E("cross-layer", V1_LABEL, kind, ratio, _method("v1")),
            E("cross-layer", "SVD-LLM V2", kind, ratio, _method("v2")),
            E("cross-layer", "pure bundle (GBD)", kind, ratio, _method("gbd")),
            E("cross-layer", "sequential (error-propagating)", kind, ratio, _sequential)]
    rows += [E("cross-layer", f"activation-coupled joint, mu={mu:g}", kind, ratio, _coupled(mu)) for mu in budget.mus]
    rows += [E(c.question, c.label, kind, ratio, _control(c.run))
             for c in unification_gap() + whitened_corners() + table4(budget.lambdas_over_c)]
    for r in RATIOS:
        rows += [E("ratio-sweep", label, kind, r, _method(m), sweep=True) for label, m in
                 ((V1_LABEL, "v1"), ("SVD-LLM V2", "v2"), ("pure bundle (GBD)", "gbd"), ("Basis-Sharing-core", "bs-core"))]
    rows += [E("other-weights", label, "mlp_out", ratio, build, sweep=True) for label, build in
             (("original", _original), (V1_LABEL, _method("v1")), ("SVD-LLM V2", _method("v2")),
              ("sequential (error-propagating)", _sequential))]
    return rows


def run_entry(setting: Setting, entry: Entry, budget: Budget, cache_dir: Path) -> dict[str, Any]:
    """Compress, install, evaluate, restore one entry (cached by setting, budget, entry)."""
    d = rank_for(setting.weights, entry.ratio)
    windows, items = (budget.sweep_windows, budget.sweep_items) if entry.sweep else (budget.windows, budget.items)
    key = cache_key(ROW_FORMAT, setting.key, repr(budget), repr(entry), str(d))
    path = cache_dir / "beyond" / f"{key[:24]}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    start = time.time()
    row: dict[str, Any] = {"question": entry.question, "label": entry.label, "kind": entry.kind, "ratio": entry.ratio,
                           "d": d, "D": min(min(w.shape) for w in setting.weights)}
    model, tok = setting.loaded.model, setting.loaded.tokenizer
    compression = entry.build(setting, d, budget)
    if compression is None:
        row.update(evaluate_model(model, tok, setting.test_ids, windows, items))
    else:
        row.update(measure(model, tok, setting.names, setting.weights, setting.sigmas, compression, setting.test_ids,
                           windows, items))
    row["seconds"] = time.time() - start
    write_json(path, row)
    return row


def check_questions(questions: Sequence[str] | None) -> None:
    """A clear error for a question name not in QUESTIONS (before any model is loaded)."""
    unknown = sorted(set(questions or ()) - set(QUESTIONS))
    if unknown:
        raise GbdError(f"unknown question(s) {unknown}; choose from {list(QUESTIONS)}")


def run_open_questions(loaded: LoadedModel, mode: str = "quick", ratio: float = 0.25, seed: int = 3,
                       cache_dir: Path = Path(".cache/gbd"), questions: Sequence[str] | None = None,
                       progress: bool = True, budget: Budget | None = None) -> dict[str, Any]:
    """Run the chosen questions (default all) on ``loaded``; the JSON-ready section data (module docstring).
    ``budget`` replaces the mode's sample sizes (``mode`` is then only a name in the data)."""
    check_questions(questions)
    if mode not in BUDGETS:
        raise GbdError(f"unknown mode {mode!r}; choose one of {list(BUDGETS)}")
    budget = budget or BUDGETS[mode]
    entries = [e for e in plan(budget, ratio) if questions is None or e.question in questions]
    if not entries:
        raise GbdError("no question chosen")
    settings: dict[str, Setting] = {}
    rows = []
    for i, entry in enumerate(entries, start=1):
        if entry.kind not in settings:
            settings[entry.kind] = prepare_setting(loaded, entry.kind, budget, seed, cache_dir, progress)
        if progress:
            print(f"[beyond {i}/{len(entries)}] {entry.question}: {entry.label} (d/D={entry.ratio:g}, {entry.kind})",
                  flush=True)
        rows.append(run_entry(settings[entry.kind], entry, budget, cache_dir))
    main = next(iter(settings.values()))
    d = rank_for(main.weights, ratio)
    return {"model": loaded.name, "mode": mode, "budget": asdict(budget), "kind": main.kind, "ratio": ratio, "d": d,
            "D": min(min(w.shape) for w in main.weights), "lambda_unit_c": main.c, "seed": seed,
            "calibration": {"sequences": budget.calib_n, "tokens_each": budget.calib_T, "seed": seed},
            "rows": rows}
