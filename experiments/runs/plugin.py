"""Any method of the registry (``experiments.methods.registry``, built-in or added with ``register_method``)
through the whole diagnostic of ``gbd-audit surgery``: Frobenius and activation error, surgery, perplexity,
HellaSwag, parameters kept, beside the original model and SVD-LLM V1, and the Spearman correlation of activation
error and of Frobenius error with perplexity over those rows (with its bootstrap interval,
``experiments.audit.statistics.spearman_interval``).

The row of a registered function is cached under a key that includes a digest of the function's code, so editing
the function re-runs it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

from experiments.audit.statistics import Interval, spearman_interval
from experiments.cache import ensure_writable
from experiments.errors import GbdError
from experiments.methods.ranks import check_ratio, rank_for
from experiments.methods.registry import get_method, method_names
from experiments.model.loading import LoadedModel
from experiments.runs.context import check_dtype, prepare
from experiments.runs.modes import mode as mode_named
from experiments.runs.plan import Config
from experiments.runs.rows import run_config
from experiments.sampling import Sample

REFERENCES = (Config("original", None, "main"), Config("SVD-LLM V1", "v1", "main"),
              Config("SVD-LLM V2", "v2", "main"), Config("pure bundle (GBD)", "gbd", "main"),
              Config("Basis-Sharing-core", "bs-core", "main"))


def _rho(x: list[float], y: list[float]) -> Interval | None:
    """Spearman's rho with its bootstrap interval over the rows, or None where it is undefined (fewer than three
    rows, constant input)."""
    try:
        return spearman_interval(x, y)
    except ValueError:
        return None


def load_plugin(spec: str) -> None:
    """Import a module (dotted name, or a .py file) whose import registers methods."""
    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise FileNotFoundError(path)
            module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))
        else:
            importlib.import_module(spec)
    except (ImportError, FileNotFoundError) as e:
        raise GbdError(f"cannot import plugin {spec!r}: {e}") from e


def code_digest(fn: Callable[..., Any]) -> str:
    """sha256 of the code (bytecode and constants, nested functions included) of the function behind ``fn``."""
    code = getattr(fn, "__wrapped__", fn).__code__
    digest = hashlib.sha256()

    def add(c: Any) -> None:
        digest.update(c.co_code)
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                add(const)
            else:
                digest.update(repr(const).encode())
    add(code)
    return digest.hexdigest()[:16]


def method_part(loaded: LoadedModel, method: str, kind: str, ratio: float, mode: str, seed: int, cache_dir: Path,
                progress: bool = True, dtype: str = "float32", sample: str = "random") -> dict[str, Any]:
    """Pipeline rows of the original model, the references (V1, V2, GBD, BS-core) and ``method``, plus Spearman's
    rho of activation and of Frobenius error against perplexity over the compressed rows (perplexity under
    ``dtype``, windows and items drawn by ``sample``, as in ``experiments.reproduce.surgery_part``)."""
    if method not in method_names():
        raise GbdError(f"unknown method {method!r}; registered: {method_names()}")
    check_ratio(ratio)
    check_dtype(dtype)
    ensure_writable(cache_dir, "cache folder")
    ctx = prepare(loaded, mode_named(mode), seed, cache_dir, kind, progress, Sample(sample, seed))
    ctx.dtype = dtype
    budget = ctx.budget                 # the calibration window clipped to the model's context, if it had to be
    d = rank_for(ctx.weights, ratio)
    configs = [c for c in REFERENCES if c.method != method]
    configs.append(Config(method, method, f"method {code_digest(get_method(method))}"))
    rows = [run_config(ctx, c, d, budget, cache_dir, progress) for c in configs]
    compressed = [r for r in rows if r["method"] is not None]
    checks = {key: _rho([r[key] for r in compressed], [r["ppl"] for r in compressed])
              for key in ("activation_fraction", "frobenius_fraction")}
    return {"d": d, "D": min(min(w.shape) for w in ctx.weights), "kind": kind, "rows": rows,
            "spearman_vs_ppl": checks}
