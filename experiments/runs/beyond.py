"""The data of the report section "What the paper left open, measured here".

``run_open_questions(loaded, mode, ...)`` calibrates the model (``experiments.runs.pipeline.prepare``, cached), runs
every configuration of every question and returns JSON-ready data::

    {"model", "mode", "budget", "kind", "ratio", "d", "D", "lambda_unit_c", "seed", "calibration", "sources",
     "sample",
     "rows": [{"question", "label", "kind", "d", "D", "ratio", "ppl", "ppl_protocol", "ppl_window_nll",
               "ppl_window_tokens", "ppl_window_index", "windows", "hellaswag_item_index", "activation_fraction", "frobenius_fraction", "hellaswag_*",
               "notes", ...}]}

The mode (``experiments.runs.modes.Mode``) sizes everything: calibration, windows, items and BCA stopping as
in the surgery, and its ``open_*`` fields for the sweeps, Table 4's lambdas and the joint objective's mu. Each
row is cached as JSON under ``<cache>/beyond`` with the key of ``experiments.runs.pipeline.row_key`` (code version,
model weights, kind, mode, configuration, d, seed, every data file's sha256), so a code fix or a changed input
is never served a stale row.

``experiments.render.beyond.render_section(data, out_dir)`` turns it into Markdown (with the ratio plot).

Questions (``QUESTIONS``):
- ``cross-layer``: sequential (error-propagating) compression, plain and shrunk toward W, and the activation-coupled joint objective
  (two mu) against V1, V2 and GBD;
- ``unification-gap``: the lambda -> inf untied corner over sides x whitening x anchor convention;
- ``whitened-bundle``: every corner of the bundle on W_l S_l (generalized projection) beside its unwhitened self;
- ``table4``: the paper's Table 4 anchor variants;
- ``ratio-sweep``: V1, V2, GBD, BS-core (section 7.1 and two-sided) at d/D in RATIOS (fewer windows, said in each row);
- ``other-weights``: MLP down projections (mlp_out) by V1, V2 and sequential (plain and shrunk); the MLP up/gate/down chain
  (composite kind ``mlp_chain``) by the per-interface-rank bundle against V1 per matrix, at the run's ratio and at
  MLP_MILD_RATIO; Q/K/V (``q_k_v``) on one shared whitened input basis against V1 per matrix at uniform ranks, V1
  at budget-optimal per-matrix ranks and V1 on the fused [W_q; W_k; W_v], all at one parameter count (all with
  fewer windows; experiments.methods.other_weights). Entries whose kind the model's family lacks (the gate and
  split Q/K/V outside Llama) are left out.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from experiments.model.adapters import adapter_for
from experiments.runs.modes import Mode
from experiments.cache import read_entry, write_entry
from experiments.model.moments import calibration_windows
from experiments.methods.factors import Compression
from experiments.methods.registry import compress
from experiments.data import calibration_text
from experiments.errors import GbdError
from experiments.model.loading import LoadedModel
from experiments.methods.controls import table4, unification_gap, whitened_corners
from experiments.methods.coupled import METHOD as COUPLED
from experiments.model.hooks import block_input_moments
from experiments.methods.other_weights import MLP_CHAIN, QKV_SHARED, fused_v1, per_matrix_v1
from experiments.methods.ranks import matrix_ranks, qkv_optimal_ranks
from experiments.model.sequential import sequential_compress
from experiments.runs.pipeline import Config, Context, compress_config, evaluated, measure, prepare, row_key
from experiments.methods.ranks import rank_for
from experiments.sampling import Sample, check_sampling
from theory.grassmann import Array

RATIOS = (0.5, 0.375, 0.25, 0.125, 0.0625)
QUESTIONS = ("cross-layer", "unification-gap", "whitened-bundle", "table4", "ratio-sweep", "other-weights")
V1_LABEL = "SVD-LLM V1"
ORIGINAL_LABEL = "original"
# Sequential compression's shrinkage toward W (experiments.model.sequential): delta = 0.1 mean(diag Sigma~),
# chosen on held-out calibration text (seed 11, not the test set) for SmolLM2's mlp_out layers 2 and 3 at quick
# size, where it brought the held-out propagated error below V1's (0.238 against 0.278, 0.153 against 0.166).
SEQUENTIAL_DAMPING = 0.1
# The MLP chain is also compared at d/D = 0.5, a stated value: the largest ratio of the ratio sweep, where V1 on
# SmolLM2's attn_out keeps PPL about 1.4x of the original (standard report); at the main 0.25 V1 on the MLP chain is
# destroyed. Whether V1 on every up, gate and down matrix stays within 2x there is judged by the section's answer.
MLP_MILD_RATIO = 0.5
ALLOCATED_V1_LABEL = "SVD-LLM V1, budget-optimal per-matrix ranks"
FUSED_V1_LABEL = "SVD-LLM V1 on fused [W_q; W_k; W_v]"
QKV_SHARED_LABEL = "Q/K/V on one shared whitened input basis"
SEQUENTIAL_LABELS = {0.0: "sequential (error-propagating)",
                     SEQUENTIAL_DAMPING: f"sequential, shrunk toward W (damping {SEQUENTIAL_DAMPING:g})"}


@dataclass
class Setting:
    """One target kind of one model: the pipeline's context (targets, moments, test ids, data sources), the
    calibration token ids (for the methods that run the model on them), lazy extras."""

    ctx: Context
    calib_ids: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    def residual(self) -> list[Array]:
        """H_{l+1} = sum h h^T entering the block after each target's block (l = 1..L-1), computed once."""
        if "residual" not in self.extras:
            H = block_input_moments(self.ctx.loaded.model, self.calib_ids)
            self.extras["residual"] = [h.numpy() for h in H[1:len(self.ctx.names)]]
        return self.extras["residual"]


def prepare_setting(loaded: LoadedModel, kind: str, mode: Mode, seed: int, cache_dir: Path,
                    progress: bool = True, sample: str = "random") -> Setting:
    """The pipeline's context of ``kind`` (calibrated, cached; windows and items drawn by ``sample`` seeded by
    ``seed``, the surgery's draw) and the calibration batch it was calibrated on."""
    ctx = prepare(loaded, mode, seed, cache_dir, kind, progress, Sample(sample, seed))
    fitted = ctx.budget                    # the calibration window clipped to the model's context, if it had to be
    ids = calibration_windows(loaded.tokenizer, calibration_text(), fitted.calib_n, fitted.calib_T, seed)
    return Setting(ctx, ids)


Build = Callable[[Setting, int, Mode], Compression | None]     # None: the uncompressed model


@dataclass(frozen=True)
class Entry:
    """One configuration: the question it answers, its label, target kind, ratio d/D, evaluation sizes."""

    question: str
    label: str
    kind: str
    ratio: float
    build: Build = field(compare=False, repr=False)
    sweep: bool = False           # evaluated with the sweep's smaller window / item budget


def _method(name: str) -> Build:
    """The pipeline's compression by method ``name`` (V2's loss rule falls back to uniform ranks where undefined)."""
    return lambda s, d, b: compress_config(s.ctx, Config(name, name, "beyond"), d, b)


def _sequential(damping: float) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return sequential_compress(s.ctx.loaded.model, s.ctx.names, s.ctx.weights, s.ctx.biases, s.calib_ids, d,
                                   damping)[0]
    return build


def _coupled(mu: float) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return compress(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, COUPLED, d,
                        options={"mu": mu, "residual": s.residual(), "stopping": b.stopping})
    return build


def _control(run: Callable[..., Compression]) -> Build:
    return lambda s, d, b: run(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, d, s.ctx.c, b.stopping)


def _original(s: Setting, d: int, b: Mode) -> None:
    return None


def plan(mode: Mode, ratio: float, kind: str = "attn_out") -> list[Entry]:
    """Every configuration of every question, in report order."""
    E = Entry
    rows = [E("cross-layer", ORIGINAL_LABEL, kind, ratio, _original),
            E("cross-layer", V1_LABEL, kind, ratio, _method("v1")),
            E("cross-layer", "SVD-LLM V2", kind, ratio, _method("v2")),
            E("cross-layer", "pure bundle (GBD)", kind, ratio, _method("gbd"))]
    rows += [E("cross-layer", label, kind, ratio, _sequential(damping)) for damping, label in SEQUENTIAL_LABELS.items()]
    rows += [E("cross-layer", f"activation-coupled joint, mu={mu:g}", kind, ratio, _coupled(mu))
             for mu in mode.open_mus]
    rows += [E(c.question, c.label, kind, ratio, _control(c.run))
             for c in unification_gap() + whitened_corners() + table4(mode.open_lambdas)]
    for r in RATIOS:
        rows += [E("ratio-sweep", label, kind, r, _method(m), sweep=True) for label, m in
                 ((V1_LABEL, "v1"), ("SVD-LLM V2", "v2"), ("pure bundle (GBD)", "gbd"),
                  ("Basis-Sharing-core", "bs-core"),
                  ("Basis-Sharing-core, two-sided (tied corner)", "bs-core-two-sided"))]
    rows += [E("other-weights", label, "mlp_out", ratio, build, sweep=True) for label, build in
             ((ORIGINAL_LABEL, _original), (V1_LABEL, _method("v1")), ("SVD-LLM V2", _method("v2")),
              *((label, _sequential(damping)) for damping, label in SEQUENTIAL_LABELS.items()))]
    rows += other_weight_classes(ratio)
    return rows


# ---------------------------------------------------------------- other weight classes: MLP chain, Q/K/V shared
# Composite kinds (experiments.model.adapters.COMPOSITE_KINDS): every matrix keeps V1's parameter count at the run's
# ratio (experiments.methods.other_weights: r(W) = round(ratio min(m, n))); a family lacking a part is skipped.

def _per_matrix_v1(ratio: float) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return per_matrix_v1(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, matrix_ranks(s.ctx.weights, ratio))
    return build


def _allocated_v1(ratio: float) -> Build:
    """V1 per matrix at the budget-optimal ranks for the count of V1 at ``matrix_ranks``."""
    def build(s: Setting, d: int, b: Mode) -> Compression:
        ranks = qkv_optimal_ranks(s.ctx.weights, s.ctx.sigmas, matrix_ranks(s.ctx.weights, ratio))
        return per_matrix_v1(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, ranks)
    return build


def _fused_v1(ratio: float) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return fused_v1(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, matrix_ranks(s.ctx.weights, ratio))
    return build


def _mlp_chain(whitened: bool) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return compress(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, MLP_CHAIN, d,
                        options={"whitened": whitened, "stopping": b.stopping})
    return build


def _qkv_shared(ratio: float) -> Build:
    def build(s: Setting, d: int, b: Mode) -> Compression:
        return compress(s.ctx.weights, s.ctx.sigmas, s.ctx.biases, QKV_SHARED, d,
                        options={"ranks": matrix_ranks(s.ctx.weights, ratio)})
    return build


def other_weight_classes(ratio: float) -> list[Entry]:
    """MLP up/gate/down: the chain bundle (whitened and not) against V1 per matrix, at ``ratio`` and at
    MLP_MILD_RATIO; Q/K/V: V1 per matrix at uniform and at budget-optimal ranks, V1 on the fused [W_q; W_k; W_v]
    and the shared whitened input basis, at one parameter count."""
    E = Entry
    rows = [E("other-weights", label, "mlp_chain", r, build, sweep=True)
            for r in dict.fromkeys((ratio, MLP_MILD_RATIO)) for label, build in
            ((V1_LABEL, _per_matrix_v1(r)), ("MLP chain bundle (GBD, whitened, per-interface ranks)", _mlp_chain(True)),
             ("MLP chain bundle (GBD, unwhitened, per-interface ranks)", _mlp_chain(False)))]
    return rows + [E("other-weights", label, "q_k_v", ratio, build, sweep=True) for label, build in
                   ((V1_LABEL, _per_matrix_v1(ratio)), (ALLOCATED_V1_LABEL, _allocated_v1(ratio)),
                    (FUSED_V1_LABEL, _fused_v1(ratio)), (QKV_SHARED_LABEL, _qkv_shared(ratio)))]


def available(loaded: LoadedModel, entry: Entry) -> bool:
    """Whether the model's family has the entry's target kind (composite kinds: every part)."""
    try:
        adapter_for(loaded.model).target_names(loaded.model, entry.kind)
    except GbdError:
        return False
    return True


def run_entry(setting: Setting, entry: Entry, cache_dir: Path) -> dict[str, Any]:
    """Compress, install, evaluate, restore one entry (cached under ``experiments.runs.pipeline.row_key``)."""
    ctx = setting.ctx
    mode = ctx.budget
    d = rank_for(ctx.weights, entry.ratio)
    windows, items = ((mode.open_sweep_windows, mode.open_sweep_items) if entry.sweep
                      else (mode.ppl_windows, mode.hellaswag_items if mode.open_hellaswag else 0))
    key = row_key(ctx, entry, d, mode)
    path = cache_dir / "beyond" / f"{key[:24]}.json"
    cached = read_entry(path, key)
    if cached is not None:
        return cached
    start = time.time()
    row: dict[str, Any] = {"question": entry.question, "label": entry.label, "kind": entry.kind, "ratio": entry.ratio,
                           "d": d, "D": min(min(w.shape) for w in ctx.weights)}
    compression = entry.build(setting, d, mode)
    row.update(evaluated(ctx, None, windows, items, progress=False) if compression is None
               else measure(ctx, compression, windows, items, progress=False))
    row["windows"] = len(row["ppl_window_nll"])
    row["seconds"] = time.time() - start
    write_entry(path, key, row)
    return row


def check_questions(questions: Sequence[str] | None) -> None:
    """A clear error for a question name not in QUESTIONS (before any model is loaded)."""
    unknown = sorted(set(questions or ()) - set(QUESTIONS))
    if unknown:
        raise GbdError(f"unknown question(s) {unknown}; choose from {list(QUESTIONS)}")


def run_open_questions(loaded: LoadedModel, mode: Mode, ratio: float = 0.25, seed: int = 3,
                       cache_dir: Path = Path(".cache/gbd"), questions: Sequence[str] | None = None,
                       progress: bool = True, sample: str = "random") -> dict[str, Any]:
    """Run the chosen questions (default all) on ``loaded`` with the sizes of ``mode``, on windows and items
    drawn by ``sample`` (``experiments.sampling``, seeded by ``seed``); the JSON-ready section data (module
    docstring)."""
    check_questions(questions)
    check_sampling(sample)
    entries = [e for e in plan(mode, ratio) if (questions is None or e.question in questions) and available(loaded, e)]
    if not entries:
        raise GbdError("no question chosen")
    settings: dict[str, Setting] = {}
    rows = []
    for i, entry in enumerate(entries, start=1):
        if entry.kind not in settings:
            settings[entry.kind] = prepare_setting(loaded, entry.kind, mode, seed, cache_dir, progress, sample)
        if progress:
            print(f"[beyond {i}/{len(entries)}] {entry.question}: {entry.label} (d/D={entry.ratio:g}, {entry.kind})",
                  flush=True)
        rows.append(run_entry(settings[entry.kind], entry, cache_dir))
    main = next(iter(settings.values())).ctx
    fitted = main.budget
    try:
        lambda_unit_c: float | None = main.c
    except ValueError:                     # targets that do not chain (mlp_out) have no lambda unit
        lambda_unit_c = None
    return {"model": loaded.name, "mode": mode.name, "budget": asdict(fitted), "kind": main.kind, "ratio": ratio,
            "d": rank_for(main.weights, ratio), "D": min(min(w.shape) for w in main.weights),
            "lambda_unit_c": lambda_unit_c,
            "seed": seed, "calibration": {"sequences": fitted.calib_n, "tokens_each": fitted.calib_T, "seed": seed},
            "sources": main.sources, "adjustments": main.adjustments, "rows": rows,
            "sample": {"how": sample, "seed": seed}}
