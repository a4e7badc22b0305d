"""The surgery part of a reproduction (the ``surgery`` command): calibrate, then compress, install and evaluate every
configuration of the mode (``experiments.runs.rows``), re-run the calibration-seed rows, cross-check HellaSwag
against an independent scorer, fit the unigram floor, and record the run's sample and the measured coverage of
every interval procedure."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from experiments.audit.measures import SEED_METHODS
from experiments.audit.statistics import coverage_record
from experiments.cache import ensure_writable
from experiments.data import HELLASWAG_SOURCES, calibration_text, source_choice
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import chosen_items, hellaswag_direct, hub_items, lm_eval_hellaswag
from experiments.evaluation.perplexity import perplexity, tokenize_corpus
from experiments.evaluation.unigram import unigram_baseline
from experiments.methods.ranks import check_ratio, rank_for
from experiments.model.loading import LoadedModel
from experiments.runs.context import Context, check_dtype, prepare
from experiments.runs.modes import Mode
from experiments.runs.modes import mode as mode_named
from experiments.runs.plan import choose_configs, configs
from experiments.runs.rows import cached_part, hellaswag_part, installed_digest, run_config
from experiments.sampling import Sample, check_sampling


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


def dtype_check(ctx: Context, budget: Mode) -> dict[str, Any]:
    """Mean NLL of the uncompressed model over the budget's windows in float32 and in ``ctx.dtype``."""
    kwargs = {"window_index": ctx.window_index(budget.ppl_windows), "progress": False}
    base = perplexity(ctx.loaded.model, ctx.test_ids, **kwargs)
    other = perplexity(ctx.loaded.model, ctx.test_ids, dtype=ctx.dtype, **kwargs)
    mean, mean_other = base.nll_sum / base.n_tokens, other.nll_sum / other.n_tokens
    return {"dtype": ctx.dtype, "float32_nll": mean, "dtype_nll": mean_other,
            "nll_relative_change": (mean_other - mean) / mean}


def hellaswag_cross_check(ctx: Context, budget: Mode) -> dict[str, Any]:
    """lm-eval against the independent direct scorer on the uncompressed model, item by item, over the run's
    draw of ``budget.cross_check_items`` items (a random subset of the evaluated items: the same draw's first m);
    lm-eval's half is the uncompressed row's cached HellaSwag part. Both accuracies are over the checked items."""
    model, tok = ctx.loaded.model, ctx.loaded.tokenizer
    item_index = ctx.item_index(budget.hellaswag_items)
    harness = cached_part(ctx, installed_digest(ctx.names, None), "hellaswag", item_index,
                           lambda: hellaswag_part(ctx, item_index))
    position = {item: p for p, item in enumerate(item_index)}
    checked = ctx.item_index(min(budget.cross_check_items or len(item_index), len(item_index)))
    if source_choice("GBD_HELLASWAG", HELLASWAG_SOURCES) == "lm-eval":    # the items lm-eval scored, six-line form
        every = hub_items(lm_eval_hellaswag()[2])
        items = [every[i] for i in checked]
    else:
        items = chosen_items(item_index=checked)
    direct = hellaswag_direct(model, tok, items)
    at = [position[i] for i in checked]
    pred, pred_norm, gold = (np.asarray(harness[k])[at] for k in ("hellaswag_pred", "hellaswag_pred_norm",
                                                                  "hellaswag_gold"))
    if list(gold) != list(direct.gold):
        raise GbdError("the HellaSwag cross-check compared different items (gold labels differ)")
    return {"n": len(checked), "of": len(item_index), "lm_eval_acc": float(np.mean(pred == gold)),
            "direct_acc": direct.acc, "lm_eval_acc_norm": float(np.mean(pred_norm == gold)),
            "direct_acc_norm": direct.acc_norm,
            "disagreements_acc": int(np.sum(pred != np.asarray(direct.predictions))),
            "disagreements_acc_norm": int(np.sum(pred_norm != np.asarray(direct.predictions_norm)))}


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


def unigram_of(ctx: Context, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A unigram model fitted on the calibration text's tokens, evaluated on the windows of the uncompressed
    model's row (``experiments.evaluation.unigram``); None without that row."""
    original = next((r for r in rows if r["method"] is None and r.get("ppl_window_tokens")), None)
    if original is None:
        return None
    calib = calibration_text()
    vocab = max(int(ctx.loaded.model.config.vocab_size), len(ctx.loaded.tokenizer))
    return unigram_baseline(tokenize_corpus(ctx.loaded.tokenizer, calib.text), vocab, ctx.test_ids,
                            original["ppl_window_tokens"][0] + 1, len(original["ppl_window_tokens"]), calib.name)
