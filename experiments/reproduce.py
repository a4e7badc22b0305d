"""The parts of the reproduction, each returning plain data (JSON-ready) for the report.

- ``experiments.verify.audit_theory``: the theorem audits on seeded stacks (no model needed).
- ``phase_part``: the Frobenius phase diagram over lambda x tying on the model's real target weights.
- ``surgery_part``: calibration, then every configuration of the mode compressed, installed and evaluated.
- ``reproduce``: all three, the verdicts, and the Markdown report with its figures.

Modes (``experiments.pipeline.BUDGETS``) set the sample sizes: quick (minutes on a laptop CPU), standard, full
(the paper's calibration of 256 x 2048 and the whole test set). Reports hold no absolute local path: data files
are named relative to the data folder, the model by its file name, package and sha256.
"""
from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from experiments.cache import ensure_writable
from experiments.data import sha256
from experiments.loading import LoadedModel, load_model
from experiments.phase import LAMBDA_GRID, phase_diagram
from experiments.pipeline import (BUDGETS, check_ratio, choose_configs, hellaswag_cross_check, prepare, rank_for,
                                  run_surgery)
from experiments.surgery import read_targets
from experiments.verify import audit_theory
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
            "layers": int(config.num_hidden_layers)}
    if loaded.file is not None:
        info["file_sha256"] = sha256(loaded.file)
    return info


def phase_part(loaded: LoadedModel, kind: str, ratio: float, mode: str, progress: bool = True) -> dict[str, Any]:
    """The phase diagram on the model's ``kind`` targets at d = round(ratio * D), both anchor conventions."""
    _, weights, _ = read_targets(loaded.model, kind)
    budget = BUDGETS[mode]
    d = rank_for(weights, ratio)
    return phase_diagram(weights, d, LAMBDA_GRID[mode], conventions=CONVENTIONS, tol=budget.tol,
                         max_sweeps=budget.max_sweeps, progress=progress)


def surgery_part(loaded: LoadedModel, kind: str, ratio: float, mode: str, seed: int, cache_dir: Path,
                 only: Sequence[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Calibrate (cached), then compress / install / evaluate each configuration (cached), plus the
    lm-eval vs direct HellaSwag cross-check on the uncompressed model."""
    budget = BUDGETS[mode]
    choose_configs(budget, only)        # every check that needs no calibration comes before it
    check_ratio(ratio)
    ensure_writable(cache_dir, "cache folder")
    ctx = prepare(loaded, budget, seed, cache_dir, kind, progress)
    budget = ctx.budget                 # the calibration window clipped to the model's context, if it had to be
    d = rank_for(ctx.weights, ratio)
    rows = run_surgery(ctx, budget, d, cache_dir, only, progress)
    cross = hellaswag_cross_check(ctx, budget) if only is None else None
    return {"d": d, "D": min(min(w.shape) for w in ctx.weights), "kind": kind, "budget": budget.__dict__,
            "lambda_unit_c": ctx.c, "sources": ctx.sources, "fingerprint": ctx.fingerprint, "rows": rows,
            "hellaswag_cross_check": cross, "adjustments": ctx.adjustments}


def reproduce(model: str | None, mode: str, seed: int, ratio: float, kind: str, out_dir: Path, cache_dir: Path,
              command: str, progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Theory audit, phase diagram, surgery; then the verdicts and the report written to ``out_dir``."""
    from experiments.report import write_report   # matplotlib only when a report is made

    check_ratio(ratio)                   # bad options and unwritable folders fail before any work
    ensure_writable(out_dir, "output folder")
    ensure_writable(cache_dir, "cache folder")
    started = time.time()
    results: dict[str, Any] = {"command": command, "mode": mode, "seed": seed, "ratio": ratio, "kind": kind,
                               "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    timings: dict[str, float] = {}
    loaded = load_model(model)           # first: a missing model fails before minutes of work
    results["model"] = model_info(loaded)
    _say(progress, f"model: {loaded.name} from {loaded.source}")
    _say(progress, f"[1/3] theory audit ({mode})")
    t = time.time()
    results["theory"] = audit_theory(mode, seed)
    timings["theory"] = time.time() - t
    _say(progress, f"[2/3] phase diagram on {kind} at d/D = {ratio}")
    t = time.time()
    results["phase"] = phase_part(loaded, kind, ratio, mode, progress)
    timings["phase"] = time.time() - t
    _say(progress, "[3/3] calibration, surgery and evaluation")
    t = time.time()
    results["surgery"] = surgery_part(loaded, kind, ratio, mode, seed, cache_dir, progress=progress)
    timings["surgery"] = time.time() - t
    timings["total"] = time.time() - started
    results["timings_s"] = timings
    return results, write_report(results, out_dir)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)

