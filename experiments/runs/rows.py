"""The one row runner: compress, install, evaluate and restore one configuration, cached under a key made of everything
that determines it (the code version, the model's weights, the target kind, the mode, the configuration, d, the
seed, the run's sample, every data file's sha256, the dtype and the device). Evaluations are cached apart, by what
is installed: a part two rows share is evaluated once."""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from experiments.cache import cache_key, code_version, read_entry, write_entry
from experiments.evaluation.hellaswag import hellaswag_lm_eval
from experiments.evaluation.perplexity import perplexity
from experiments.methods.factors import Compression
from experiments.methods.metrics import errors, frobenius_error_fraction, one_sided_fraction
from experiments.methods.ranks import AllocationError, absolute_lambda
from experiments.methods.registry import compress
from experiments.model.lowrank import installed, module_parameters
from experiments.runs.context import Context
from experiments.runs.modes import Mode
from experiments.runs.plan import Config
from theory.corners import sandwich
from theory.stack import Stack

ROW_KEYS = frozenset({"label", "method", "table", "d", "ppl", "ppl_protocol"})    # every cached row has them ...


HELLASWAG_ROW_KEYS = frozenset({"hellaswag_acc", "hellaswag_acc_norm", "hellaswag_n"})  # ... one scored on HellaSwag


COMPRESSED_ROW_KEYS = frozenset({"frobenius_fraction", "activation_fraction", "params_kept", "params_original"})


def perplexity_part(ctx: Context, window_index: Sequence[int], progress: bool = True) -> dict[str, Any]:
    """The model as it is now: perplexity (SVD-LLM protocol, ``ctx.dtype``) on the windows ``window_index``, with
    every window's summed NLL and token count, the index list and the number of windows it was drawn from (for
    the finite-population intervals)."""
    ppl = perplexity(ctx.loaded.model, ctx.test_ids, window_index=window_index, progress=progress, dtype=ctx.dtype)
    return {"ppl": ppl.ppl, "ppl_protocol": ppl.protocol, "nonfinite_windows": ppl.nonfinite_windows,
            "ppl_tokens": ppl.n_tokens, "ppl_dtype": ppl.dtype, "ppl_window_nll": list(ppl.window_nll),
            "ppl_window_tokens": list(ppl.window_tokens), "ppl_window_index": list(window_index),
            "ppl_windows_available": ppl.windows_available}


def hellaswag_part(ctx: Context, item_index: Sequence[int]) -> dict[str, Any]:
    """The model as it is now on HellaSwag (lm-eval) over the items ``item_index``: acc, acc_norm, their standard
    errors and the per-item gold, predictions and log-likelihoods (for paired comparisons), with the index list
    and the number of items it was drawn from."""
    hs = hellaswag_lm_eval(ctx.loaded.model, ctx.loaded.tokenizer, item_index=item_index)
    return {"hellaswag_item_index": list(item_index), "hellaswag_items_available": ctx.items_available,
            "hellaswag_acc": hs.acc, "hellaswag_acc_norm": hs.acc_norm, "hellaswag_acc_stderr": hs.acc_stderr,
            "hellaswag_acc_norm_stderr": hs.acc_norm_stderr, "hellaswag_n": hs.n, "hellaswag_source": hs.source,
            "hellaswag_note": hs.note, "hellaswag_gold": list(hs.gold), "hellaswag_pred": list(hs.predictions),
            "hellaswag_pred_norm": list(hs.predictions_norm), "hellaswag_logliks": [list(x) for x in hs.logliks]}


def installed_digest(names: Sequence[str], compression: Compression | None) -> str:
    """sha256 of what is installed: the module names and every factor A, B and bias (float64 bytes, shapes
    included); "uncompressed" for the model as loaded. Two compressions with equal factors evaluate equally,
    whatever method or label produced them."""
    if compression is None:
        return "uncompressed"
    parts: list[str | bytes] = list(names)
    for f in compression.layers:
        for a in (f.A, f.B, f.bias):
            parts += ["none"] if a is None else [str(np.shape(a)), np.ascontiguousarray(a, dtype=np.float64).tobytes()]
    return cache_key(*parts)


def cached_part(ctx: Context, digest: str, part: str, index: Sequence[int], compute: Callable[[], dict[str, Any]]
                 ) -> dict[str, Any]:
    """``compute()``, cached by content under ``ctx.cache_dir`` (None: not cached). The key is the code version,
    the model's weights, ``digest`` (what is installed), the part ("perplexity" or "hellaswag"), the drawn
    indices, the device, and what else the part depends on: the perplexity dtype and the test file's sha256, or
    the HellaSwag file's sha256."""
    if ctx.cache_dir is None:
        return compute()
    depends = ([ctx.dtype, str(ctx.sources["wikitext2_test"]["sha256"])] if part == "perplexity"
               else [str(ctx.sources["hellaswag"]["sha256"])])
    key = cache_key(code_version(), ctx.fingerprint, digest, part, str(tuple(index)), ctx.device, *depends)
    path = ctx.cache_dir / "evaluations" / f"{key[:24]}.json"
    cached = read_entry(path, key)
    if cached is None:
        cached = compute()
        write_entry(path, key, cached)
    return cached


def evaluated(ctx: Context, compression: Compression | None, windows: int | None, items: int | None,
              progress: bool = True) -> dict[str, Any]:
    """``perplexity_part`` and ``hellaswag_part`` with ``compression`` installed (None: the model as it is) on the
    run's draw of ``windows`` windows (None: all) and ``items`` items (None: all; 0: none, and the row has no
    HellaSwag fields), each cached by content (``cached_part``). A configuration that installs the same factors
    as one evaluated before (the surgery's V1 and the open questions' V1; Table 4's cells that are the surgery's
    convention rows) is evaluated once; so is a part two rows share (a seed row's perplexity, the open questions'
    perplexity of a surgery row, the cross-check's lm-eval half)."""
    window_index = ctx.window_index(windows)
    item_index = () if items == 0 else ctx.item_index(items)
    digest = installed_digest(ctx.names, compression)
    with nullcontext() if compression is None else installed(ctx.loaded.model, ctx.names, compression):
        row = dict(cached_part(ctx, digest, "perplexity", window_index,
                                lambda: perplexity_part(ctx, window_index, progress)))
        if item_index:
            row.update(cached_part(ctx, digest, "hellaswag", item_index, lambda: hellaswag_part(ctx, item_index)))
    return row


def compress_config(ctx: Context, config: Config, d: int, budget: Mode) -> Compression:
    """compress() by the configuration's method with its options (``Config.options`` included); V2's loss rule, where undefined (a truncation loss <= 1,
    which depends on the scale of the second moments), falls back to uniform ranks and says so in the notes.
    lambda = 0 needs no lambda unit c, so per-layer methods also run on targets that do not chain (mlp_out)."""
    lam = 0.0 if config.lam_over_c == 0 else absolute_lambda(config.lam_over_c, ctx.c)

    def run(allocation: str) -> Compression:
        return compress(ctx.weights, ctx.sigmas, ctx.biases, config.method, d, lam=lam,
                        tied=config.tied, convention=config.convention, installation=config.installation,
                        allocation=allocation, bias_mode=config.bias_mode, stopping=budget.stopping,
                        **dict(config.options))
    try:
        return run("loss")
    except AllocationError as e:
        compression = run("uniform")
        compression.notes.insert(0, f"loss-based allocation undefined ({e}): uniform ranks used")
        return compression


def row_key(ctx: Context, config: object, d: int, budget: Mode) -> str:
    """The cache key of one row: code version, model weights, kind, budget, configuration (a frozen dataclass
    such as ``Config`` whose repr names every option), d, seed, the run's sample (design and seed, which fix the
    drawn windows and items), the sha256 of every data file and the perplexity dtype."""
    return cache_key(code_version(), ctx.fingerprint, ctx.kind, repr(budget), repr(config), str(d),
                     str(ctx.sources["calibration"]["seed"]), repr(ctx.sample),
                     *(str(ctx.sources[k]["sha256"]) for k in ("calibration", "wikitext2_test", "hellaswag")),
                     ctx.dtype, ctx.device)


def is_row_of(config: Config, scored: bool = True) -> Callable[[dict[str, Any]], bool]:
    """Whether a cached row is one of ``config``: its label, and every key a row of its kind has (``scored``:
    HellaSwag's too)."""
    needed = (ROW_KEYS | (COMPRESSED_ROW_KEYS if config.method is not None else frozenset())
              | (HELLASWAG_ROW_KEYS if scored else frozenset()))
    return lambda row: needed <= set(row) and row.get("label") == config.label


def compression_of(ctx: Context, config: Config, d: int, budget: Mode) -> Compression | None:
    """The configuration's compression: ``config.build`` when given, else the registry's method with its options
    (``compress_config``); None: the model as it is."""
    if config.build is not None:
        return config.build(ctx, d, budget)
    return None if config.method is None else compress_config(ctx, config, d, budget)


def run_config(ctx: Context, config: Config, d: int, budget: Mode, cache_dir: Path,
               progress: bool = True) -> dict[str, Any]:
    """The one runner: compress (``compression_of``), install, evaluate on ``budget.sizes(config.sample)`` and
    restore one configuration, cached under ``row_key``. The row: the configuration (``Config.record``), the
    targets' kind, d and D, what ``measure`` (or, uncompressed, ``evaluated``) returns, the two-sided fraction
    sum ||W_l - P_l W_l P_{l-1}||^2 / sum ||W_l||^2 where a registry method of the bundle family solved sections of
    the raw stack, the number of windows and the seconds it took."""
    key = row_key(ctx, config, d, budget)
    path = cache_dir / "runs" / f"{key[:24]}.json"
    windows, items = budget.sizes(config.sample)
    row = read_entry(path, key, is_row_of(config, items != 0))
    if row is not None:
        return row
    start = time.time()
    row = {**config.record(), "kind": ctx.kind, "d": d, "D": min(min(w.shape) for w in ctx.weights)}
    compression = compression_of(ctx, config, d, budget)
    if compression is None:
        row.update(evaluated(ctx, None, windows, items, progress))
    else:
        row.update(measure(ctx, compression, windows, items, progress))
        on_the_stack = (config.build is None and compression.sections is not None    # the bundle family's sections
                        and not dict(config.options).get("whitened", False))         # of the raw stack itself
        row["two_sided_fraction"] = (frobenius_error_fraction(ctx.weights, sandwich(Stack.of(ctx.weights),
                                                                                  compression.sections))
                                     if on_the_stack else None)
    row["windows"] = len(row["ppl_window_nll"])
    row["seconds"] = time.time() - start
    write_entry(path, key, row)
    return row


def measure(ctx: Context, compression: Compression, windows: int | None, items: int | None,
            progress: bool = True) -> dict[str, Any]:
    """Frobenius and activation error on the calibration moments, parameters kept, the bias rule, and ``evaluate``
    with ``compression`` installed (the original modules restored after)."""
    model = ctx.loaded.model
    err = errors(ctx.weights, ctx.sigmas, compression)
    params_original = module_parameters(model, ctx.names)
    with installed(model, ctx.names, compression):
        params = module_parameters(model, ctx.names)
    measured = evaluated(ctx, compression, windows, items, progress)
    return {**measured, "frobenius_fraction": err["frobenius_fraction"],
            "activation_fraction": err["activation_fraction"], "params_kept": params,
            "layer_activation": [layer["activation_fraction"] for layer in err["per_layer"]],
            "one_sided_fraction": one_sided_fraction(ctx.weights, compression.W_hats),
            "params_original": params_original, "ranks": compression.ranks, "notes": compression.notes,
            "bca_sweeps": compression.bca_sweeps, "bias_rule": compression.bias_rule}
