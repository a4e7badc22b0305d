"""Surgery and evaluation runs on a real model: calibrate once, then compress, install, evaluate each config.

A mode (``experiments.audit.modes``, called the budget here) fixes the calibration size, the evaluation
subset and the BCA stopping rule. Every configuration's result is cached as JSON (atomically) under a key made
of the model's weights, the budget, the configuration and the seed, so an interrupted run resumes
where it stopped and a re-run of the report re-uses finished rows. lambda is given in units of
c = max_i (||W_i||_2^2 + ||W_{i+1}||_2^2), as in the phase diagram.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from experiments.adapters import adapter_for
from experiments.audit.modes import Mode
from experiments.cache import read_json, write_json
from experiments.calibration import cache_key, calibration_batch, model_fingerprint, second_moments
from experiments.compress import AllocationError, Compression, compress, errors
from experiments.data import calibration_text, hellaswag_items, hellaswag_source, wikitext2_test
from experiments.errors import GbdError
from experiments.evaluation import (hellaswag_direct, hellaswag_lm_eval, perplexity, prediction_disagreements,
                                    tokenize_corpus)
from experiments.loading import LoadedModel
from experiments.surgery import install
from theory.corners import sandwich
from theory.energy import frobenius_fraction
from theory.stack import Stack
from theory.theorems import coupling_norms


ROW_FORMAT = "2"   # part of every row's cache key: bump it when a change alters what a row holds


@dataclass(frozen=True)
class Config:
    """One compressed model: a method of experiments.compress and its options; ``table`` groups the rows."""

    label: str
    method: str | None               # None: the uncompressed model
    table: str
    lam_over_c: float = 0.0
    tied: bool = False
    convention: str = "original"
    installation: str = "projection"


def configs(budget: Mode) -> list[Config]:
    """The configurations of the paper's tables that this budget runs."""
    rows = [Config("original", None, "main"), Config("SVD-LLM V1", "v1", "main"),
            Config("SVD-LLM V2", "v2", "main"), Config("pure bundle (GBD)", "gbd", "main"),
            Config("Basis-Sharing-core", "bs-core", "main")]
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


@dataclass
class Context:
    """What every configuration shares: the model, its targets, their weights and second moments, the data."""

    loaded: LoadedModel
    kind: str
    names: list[str]
    weights: list[np.ndarray]
    biases: list[np.ndarray | None]
    sigmas: list[np.ndarray]
    test_ids: torch.Tensor
    fingerprint: str
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def c(self) -> float:
        """The lambda unit max_i (||W_i||_2^2 + ||W_{i+1}||_2^2)."""
        return max(coupling_norms(Stack.of(self.weights)))


def read_targets(model: torch.nn.Module, kind: str = "attn_out") -> tuple[list[str], list[np.ndarray],
                                                                           list[np.ndarray | None]]:
    """The ``kind`` targets of every block (depth order): names, weights (n_out x n_in, float64), biases."""
    adapter = adapter_for(model)
    names = adapter.target_names(model, kind)
    modules = [model.get_submodule(n) for n in names]
    return names, [adapter.weight(m) for m in modules], [adapter.bias(m) for m in modules]


def prepare(loaded: LoadedModel, budget: Mode, seed: int, cache_dir: Path, kind: str = "attn_out",
            progress: bool = True) -> Context:
    """Read the targets, calibrate (cached), tokenize the test text."""
    model, tok = loaded.model, loaded.tokenizer
    names, weights, biases = read_targets(model, kind)
    fingerprint = model_fingerprint(model).hex()
    calib = calibration_text()
    batch = calibration_batch(tok, calib.text, budget.calib_n, budget.calib_T, seed)
    sigma = second_moments(model, names, batch, progress=progress,
                           cache=cache_dir / f"calibration-{cache_key(fingerprint, kind, str(seed))[:16]}-"
                                             f"{budget.calib_n}x{budget.calib_T}.pt")
    test = wikitext2_test()
    hs_path, hs_sha = hellaswag_source()
    sources = {"calibration": {"name": calib.name, "path": calib.path, "sha256": calib.sha256,
                               "sequences": budget.calib_n, "tokens_each": budget.calib_T, "seed": seed},
               "wikitext2_test": {"name": test.name, "path": test.path, "sha256": test.sha256},
               "hellaswag": {"path": str(hs_path), "sha256": hs_sha}}
    return Context(loaded, kind, names, weights, biases, [sigma[n] for n in names], tokenize_corpus(tok, test.text),
                   fingerprint, sources)


def evaluate(ctx: Context, budget: Mode, progress: bool = True) -> dict[str, Any]:
    """Perplexity (SVD-LLM protocol) and HellaSwag (lm-eval) of the model as it is now."""
    model, tok = ctx.loaded.model, ctx.loaded.tokenizer
    ppl = perplexity(model, ctx.test_ids, max_windows=budget.ppl_windows, progress=progress)
    hs = hellaswag_lm_eval(model, tok, limit=budget.hellaswag_items)
    return {"ppl": ppl.ppl, "ppl_protocol": ppl.protocol, "nonfinite_windows": ppl.nonfinite_windows,
            "ppl_tokens": ppl.n_tokens, "ppl_window_nll": list(ppl.window_nll),
            "ppl_window_tokens": list(ppl.window_tokens), "hellaswag_acc": hs.acc, "hellaswag_acc_norm": hs.acc_norm,
            "hellaswag_acc_stderr": hs.acc_stderr, "hellaswag_n": hs.n, "hellaswag_source": hs.source,
            "hellaswag_note": hs.note, "hellaswag_gold": list(hs.gold), "hellaswag_pred": list(hs.predictions),
            "hellaswag_pred_norm": list(hs.predictions_norm), "hellaswag_logliks": [list(x) for x in hs.logliks]}


def hellaswag_cross_check(ctx: Context, budget: Mode) -> dict[str, Any]:
    """lm-eval vs the independent direct scorer on the same items of the uncompressed model."""
    model, tok = ctx.loaded.model, ctx.loaded.tokenizer
    harness = hellaswag_lm_eval(model, tok, limit=budget.hellaswag_items)
    direct = hellaswag_direct(model, tok, hellaswag_items(limit=budget.hellaswag_items))
    acc_diff, norm_diff = prediction_disagreements(harness, direct)
    return {"n": harness.n, "lm_eval_acc": harness.acc, "direct_acc": direct.acc, "lm_eval_acc_norm":
            harness.acc_norm, "direct_acc_norm": direct.acc_norm, "disagreements_acc": acc_diff,
            "disagreements_acc_norm": norm_diff}


def _compress(ctx: Context, config: Config, d: int, budget: Mode) -> Compression:
    """compress() with the configuration's options; V2's loss rule, where undefined (a truncation loss <= 1,
    which depends on the scale of the second moments), falls back to uniform ranks and says so in the notes."""
    def run(allocation: str) -> Compression:
        return compress(ctx.weights, ctx.sigmas, ctx.biases, config.method, d, lam=config.lam_over_c * ctx.c,
                        tied=config.tied, convention=config.convention, installation=config.installation,
                        allocation=allocation, tol=budget.tol, max_sweeps=budget.max_sweeps)
    try:
        return run("loss")
    except AllocationError as e:
        compression = run("uniform")
        compression.notes.insert(0, f"loss-based allocation undefined ({e}): uniform ranks used")
        return compression


def run_config(ctx: Context, config: Config, d: int, budget: Mode, cache_dir: Path,
               progress: bool = True) -> dict[str, Any]:
    """Compress, install, evaluate and restore one configuration (cached by model, budget, config, d)."""
    key = cache_key(ROW_FORMAT, ctx.fingerprint, ctx.kind, repr(budget), repr(config), str(d),
                    ctx.sources["calibration"]["sha256"] or "", str(ctx.sources["calibration"]["seed"]))
    path = cache_dir / "runs" / f"{key[:24]}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    start = time.time()
    row: dict[str, Any] = {"label": config.label, **asdict(config), "d": d}
    if config.method is None:
        row.update(evaluate(ctx, budget, progress))
    else:
        row.update(_run_compressed(ctx, config, d, budget, progress))
    row["seconds"] = time.time() - start
    write_json(path, row)
    return row


def installed_parameters(model: torch.nn.Module, names: Sequence[str]) -> int:
    """Parameters stored by the named modules, a tensor shared between them (Basis Sharing's A) counted once."""
    unique = {id(p): p for n in names for p in model.get_submodule(n).parameters()}
    return sum(p.numel() for p in unique.values())


def _run_compressed(ctx: Context, config: Config, d: int, budget: Mode, progress: bool) -> dict[str, Any]:
    model = ctx.loaded.model
    compression = _compress(ctx, config, d, budget)
    err = errors(ctx.weights, ctx.sigmas, compression)
    originals = {n: model.get_submodule(n) for n in ctx.names}
    try:
        install(model, ctx.names, compression)
        params = installed_parameters(model, ctx.names)
        measured = evaluate(ctx, budget, progress)
    finally:
        adapter = adapter_for(model)
        for n, module in originals.items():
            adapter.replace(model, n, module)
    two_sided = (None if compression.sections is None else
                 frobenius_fraction(ctx.weights, sandwich(Stack.of(ctx.weights), compression.sections)))
    return {**measured, "frobenius_fraction": err["frobenius_fraction"],
            "activation_fraction": err["activation_fraction"], "two_sided_fraction": two_sided,
            "params_kept": params, "params_original": sum(w.size + (0 if b is None else b.size)
                                                          for w, b in zip(ctx.weights, ctx.biases)),
            "ranks": compression.ranks, "notes": compression.notes, "bca_sweeps": compression.bca_sweeps}


def choose_configs(budget: Mode, only: Sequence[str] | None = None) -> list[Config]:
    """The budget's configurations, or those labelled in ``only`` (an unknown label is an error)."""
    labels = [c.label for c in configs(budget)]
    unknown = sorted(set(only or ()) - set(labels))
    if unknown:
        raise GbdError(f"no configuration labelled {unknown} in this mode; choose from {labels}")
    return [c for c in configs(budget) if only is None or c.label in only]


def run_surgery(ctx: Context, budget: Mode, d: int, cache_dir: Path, only: Sequence[str] | None = None,
                progress: bool = True) -> list[dict[str, Any]]:
    """Every configuration of the budget (or those whose label is in ``only``), in order."""
    chosen = choose_configs(budget, only)
    rows = []
    for i, config in enumerate(chosen, start=1):
        if progress:
            print(f"[surgery {i}/{len(chosen)}] {config.label}", flush=True)
        rows.append(run_config(ctx, config, d, budget, cache_dir, progress))
    return rows


def rank_for(weights: Sequence[np.ndarray], ratio: float) -> int:
    """d = round(ratio * D), D the smallest side of the targets (the hidden size for W_O); the paper's ratio is 0.25."""
    if not 0 < ratio <= 1:
        raise GbdError(f"rank ratio d/D must lie in (0, 1], got {ratio}")
    n = min(min(w.shape) for w in weights)
    return max(1, int(round(ratio * n)))
