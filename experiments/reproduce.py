"""The parts of the reproduction, each returning plain data (JSON-ready) for the report.

- ``experiments.runs.theory_audit.audit_theory``: the theorem audits on seeded stacks (no model needed).
- ``phase_part``: the Frobenius phase diagram over lambda x tying on the model's real target weights.
- ``surgery_part``: calibration, then every configuration of the mode compressed, installed and evaluated.
- ``experiments.runs.beyond.run_open_questions`` (with ``beyond``): the questions the paper left
  open, measured with the same calibration, windows and items (the report's section "What the paper left open").
- ``reproduce``: all of them, the verdicts (``experiments.audit.verdicts``, the one place that judges), and the
  Markdown report with its figures.

Modes (``experiments.runs.modes``) set every sample size, grid and seed count.
Reports hold no absolute local path: data files are named relative to the data folder, the model by its file
name, package and sha256.
"""
from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from experiments.audit.measures import SEED_METHODS
from experiments.runs.modes import Mode
from experiments.runs.modes import mode as mode_named
from experiments.audit.results import Results
from experiments.audit.statistics import coverage_record
from experiments.audit.verdicts import judge_all
from experiments.cache import ensure_writable
from experiments.data import sha256
from experiments.model.loading import LoadedModel, load_model
from experiments.runs.beyond import run_open_questions
from experiments.runs.phase import phase_diagram
from experiments.runs.pipeline import Context, check_dtype, choose_configs, configs, dtype_check, hellaswag_cross_check, prepare, run_surgery, unigram_of
from experiments.methods.ranks import check_ratio, rank_for
from experiments.model.quantization import rounding_noise_fraction
from experiments.sampling import Sample, check_sampling
from experiments.model.lowrank import read_targets
from experiments.threads import part_threads
from experiments.runs.theory_audit import audit_theory
from theory.anchors import CONVENTIONS

PACKAGES = ("numpy", "scipy", "sympy", "torch", "transformers", "lm_eval", "datasets", "pymanopt", "hypothesis",
            "gguf")


def versions() -> dict[str, str]:
    """Python, operating system and machine (no kernel version) and the versions of the packages the numbers
    depend on."""
    found = {"python": sys.version.split()[0], "platform": f"{platform.system()} {platform.machine()}"}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """Name, source (no absolute path), architecture, vocabulary size and (for a single-file model) the file's
    sha256."""
    config = loaded.model.config
    info = {"name": loaded.name, "source": loaded.source, "model_type": config.model_type,
            "vocab_size": int(config.vocab_size), "hidden_size": int(config.hidden_size),
            "layers": int(config.num_hidden_layers), "device": loaded.device}
    if loaded.file is not None:
        info["file_sha256"] = sha256(loaded.file)
    return info


def phase_part(loaded: LoadedModel, kind: str, ratio: float, mode: str, progress: bool = True) -> dict[str, Any]:
    """The phase diagram on the model's ``kind`` targets at d = round(ratio * D), both anchor conventions."""
    _, weights, _ = read_targets(loaded.model, kind)
    budget = mode_named(mode)
    d = rank_for(weights, ratio)
    return phase_diagram(weights, d, budget.phase_lambdas, conventions=CONVENTIONS, stopping=budget.stopping,
                         progress=progress)


def surgery_part(loaded: LoadedModel, kind: str, ratio: float, mode: str, seed: int, cache_dir: Path,
                 only: Sequence[str] | None = None, progress: bool = True, dtype: str = "float32",
                 sample: str = "random") -> dict[str, Any]:
    """Calibrate (cached), then compress / install / evaluate each configuration (cached), plus the
    lm-eval vs direct HellaSwag cross-check on the uncompressed model. With every configuration (``only``
    None), the methods of ``SEED_METHODS`` are re-run with each further calibration seed of the mode
    (``seed_rows``, by seed), on the same windows and items. ``dtype`` "bfloat16": perplexity under bfloat16
    autocast, with its measured NLL change on the uncompressed model (``dtype_check``). ``sample``: how the
    windows and items are drawn (``experiments.sampling``; one draw seeded by ``seed``), recorded as ``sample``,
    with the measured coverage of every interval procedure at the mode's sizes (``coverage``)."""
    budget = mode_named(mode)
    choose_configs(budget, only)        # every check that needs no calibration comes before it
    check_ratio(ratio)
    check_dtype(dtype)
    check_sampling(sample)
    ensure_writable(cache_dir, "cache folder")
    drawn = Sample(sample, seed)
    ctx = prepare(loaded, budget, seed, cache_dir, kind, progress, drawn)
    ctx.dtype = dtype
    budget = ctx.budget                 # the calibration window clipped to the model's context, if it had to be
    d = rank_for(ctx.weights, ratio)
    rows = run_surgery(ctx, budget, d, cache_dir, only, progress)
    cross = hellaswag_cross_check(ctx, budget) if only is None else None
    checked = dtype_check(ctx, budget) if dtype != "float32" else None
    seed_rows = {} if only is not None else seed_runs(loaded, budget, budget.seeds(seed)[1:], d, cache_dir, kind,
                                                          progress, dtype, drawn)
    return {"dtype_check": checked, "d": d, "D": min(min(w.shape) for w in ctx.weights), "kind": kind,
            "budget": asdict(budget),
            "lambda_unit_c": ctx.c, "sources": ctx.sources, "fingerprint": ctx.fingerprint, "rows": rows,
            "hellaswag_cross_check": cross, "seed_rows": seed_rows,
            "adjustments": ctx.adjustments, "unigram": unigram_of(ctx, rows), "sample": sample_record(ctx, budget),
            "coverage": coverage_record([("surgery", budget.ppl_windows, budget.hellaswag_items),
                                         ("what the paper left open: sweeps", budget.open_sweep_windows,
                                          budget.open_sweep_items)], sample)}


def sample_record(ctx: Context, budget: Mode) -> dict[str, Any]:
    """The run's draw in words and its design, for the report."""
    windows, items = ctx.window_index(budget.ppl_windows), ctx.item_index(budget.hellaswag_items)
    return {"how": ctx.sample.how, "seed": ctx.sample.seed,
            "windows": ctx.sample.describe(len(windows), ctx.windows_available, "windows"),
            "items": ctx.sample.describe(len(items), ctx.items_available, "HellaSwag items")}


def seed_runs(loaded: LoadedModel, budget: Mode, seeds: Sequence[int], d: int, cache_dir: Path, kind: str,
              progress: bool = True, dtype: str = "float32",
              sample: Sample | None = None) -> dict[str, list[dict[str, Any]]]:
    """The main-table rows of ``SEED_METHODS`` calibrated with each of ``seeds`` (cached like every row), evaluated
    on the run's ``sample`` (default: the draw seeded by the first of ``seeds``): perplexity only, since the spread
    over seeds is of PPL, activation and Frobenius error (``experiments.audit.measures.seed_spread``)."""
    labels = [c.label for c in configs(budget) if c.table == "main" and c.method in SEED_METHODS]
    budget = replace(budget, hellaswag_items=0)
    out = {}
    for other in seeds:
        ctx = prepare(loaded, budget, other, cache_dir, kind, progress, sample)
        ctx.dtype = dtype
        out[str(other)] = run_surgery(ctx, budget, d, cache_dir, labels, progress)
    return out


def reproduce(model: str | None, mode: str, seed: int, ratio: float, kind: str, out_dir: Path, cache_dir: Path,
              command: str, progress: bool = True, dtype: str = "float32",
              beyond: bool = False, device: str | None = None,
              sample: str = "random") -> tuple[dict[str, Any], Path]:
    """Theory audit, phase diagram, surgery (and with ``beyond`` the open questions, on attention outputs), all
    evaluated on one ``sample`` of windows and items seeded by ``seed``; then the verdicts and the report written
    to ``out_dir``."""
    from experiments.render.report import write_report   # matplotlib only when a report is made

    check_ratio(ratio)                   # bad options and unwritable folders fail before any work
    check_dtype(dtype)
    check_sampling(sample)
    ensure_writable(out_dir, "output folder")
    ensure_writable(cache_dir, "cache folder")
    started = time.time()
    results: dict[str, Any] = {"command": command, "mode": mode, "seed": seed, "ratio": ratio, "kind": kind,
                               "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    timings: dict[str, float] = {}
    threads: dict[str, Any] = {}
    loaded = load_model(model, device=device)  # first: a missing model fails before minutes of work
    results["model"] = model_info(loaded)
    if loaded.file is not None:
        results["model"]["quantization_noise_fraction"] = rounding_noise_fraction(loaded.file, kind)
    _say(progress, f"model: {loaded.name} from {loaded.source}")
    parts = 4 if beyond else 3
    _say(progress, f"[1/{parts}] theory audit ({mode})")
    t = time.time()
    with part_threads("theory", threads):
        results["theory"] = audit_theory(mode, seed)
    timings["theory"] = time.time() - t
    _say(progress, f"[2/{parts}] phase diagram on {kind} at d/D = {ratio}")
    t = time.time()
    with part_threads("phase", threads):
        results["phase"] = phase_part(loaded, kind, ratio, mode, progress)
    timings["phase"] = time.time() - t
    _say(progress, f"[3/{parts}] calibration, surgery and evaluation")
    t = time.time()
    with part_threads("surgery", threads):
        results["surgery"] = surgery_part(loaded, kind, ratio, mode, seed, cache_dir, progress=progress,
                                          dtype=dtype, sample=sample)
    timings["surgery"] = time.time() - t
    if beyond:
        _say(progress, f"[4/{parts}] what the paper left open")
        t = time.time()
        with part_threads("beyond", threads):
            results["beyond"] = run_open_questions(loaded, mode_named(mode), ratio, seed, cache_dir,
                                                   progress=progress, sample=sample)
        timings["beyond"] = time.time() - t
    timings["total"] = time.time() - started
    results["timings_s"] = timings
    results["threads"] = threads
    judgements = judge_all(results)
    results["verdicts"] = {j.claim.id: {"verdict": j.verdict.value, "measured": j.measured, "why": j.why,
                                        "detect": j.detect} for j in judgements}
    typed = Results.from_dict(results)
    return results, write_report(typed, judgements, out_dir)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)

