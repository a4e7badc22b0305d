"""The reproduction (``gbd-audit report``): the parts of a run, the verdicts, the report. Each part is one module of
runs/ returning plain data (JSON-ready):

- ``experiments.runs.theory_audit.audit_theory``: the theorem audits on seeded stacks (no model needed).
- ``experiments.runs.phase.phase_part``: the Frobenius phase diagram over lambda x tying on the model's weights.
- ``experiments.runs.surgery.surgery_part``: calibration, then every configuration of the mode compressed,
  installed and evaluated.
- ``experiments.runs.beyond.run_open_questions`` (with ``beyond``): the questions the paper left
  open, measured with the same calibration, windows and items (the report's section "What the paper left open").
- ``reproduce``: all of them, the verdicts (``experiments.audit.verdicts``, the one place that judges), and the
  Markdown report with its figures (``experiments.render.report``).

Modes (``experiments.runs.modes``) set every sample size, grid and seed count.
Reports hold no absolute local path: data files are named relative to the data folder, the model by its file
name, package and sha256.
"""
from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from experiments.audit.results import Results
from experiments.audit.verdicts import judge_all
from experiments.cache import ensure_writable
from experiments.data import sha256
from experiments.methods.ranks import check_ratio
from experiments.model.loading import LoadedModel, load_model
from experiments.model.quantization import rounding_noise_fraction
from experiments.runs.beyond import run_open_questions
from experiments.runs.context import check_dtype
from experiments.runs.modes import mode as mode_named
from experiments.runs.phase import phase_part
from experiments.runs.surgery import surgery_part
from experiments.runs.theory_audit import audit_theory
from experiments.sampling import check_sampling
from experiments.threads import part_threads

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


def reproduce(model: str | None, mode: str, seed: int, ratio: float, kind: str, out_dir: Path, cache_dir: Path,
              command: str, progress: bool = True, dtype: str = "float32",
              beyond: bool = False, device: str | None = None,
              sample: str = "random") -> tuple[dict[str, Any], Path]:
    """Theory audit, phase diagram, surgery (and with ``beyond`` the open questions, on attention outputs), all
    evaluated on one ``sample`` of windows and items seeded by ``seed``; then the verdicts and the report written
    to ``out_dir``."""
    from experiments.render.report import write_report  # matplotlib only when a report is made

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

