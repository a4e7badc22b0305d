"""Surgery and evaluation runs on a real model: calibrate once, then compress, install, evaluate each config.

A mode (``experiments.runs.modes``, called the budget here) fixes the calibration size, the evaluation
subset and the BCA stopping rule. Every configuration's result is cached as JSON (atomically) under a key made
of everything that determines it: the code version (source files and library versions), the model's
weights, the target kind, the budget, the configuration, d, the seed and the sha256 of every data file
(calibration text, WikiText-2 test, HellaSwag). An interrupted run resumes where it stopped, a re-run of
the report re-uses finished rows, and a changed file or a code fix is never served stale rows. lambda is
given in units of c = max_i (||W_i||_2^2 + ||W_{i+1}||_2^2), as in the phase diagram.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from experiments.runs.modes import Mode
from experiments.cache import cache_key, code_version, read_entry, write_entry
from experiments.model.moments import calibration_windows, model_fingerprint, second_moments
from experiments.methods.factors import Compression
from experiments.methods.metrics import errors, frobenius_error_fraction, one_sided_fraction
from experiments.methods.ranks import AllocationError
from experiments.methods.registry import compress
from experiments.data import (HELLASWAG_SOURCES, calibration_text, checksum_status, display_path, hellaswag_source,
                              source_choice, wikitext2_test)
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import LM_EVAL_NOTE, chosen_items, docs_sha256, every_item, hellaswag_direct, hellaswag_lm_eval, hub_items, lm_eval_hellaswag
from experiments.evaluation.perplexity import DTYPES, model_context, perplexity, tokenize_corpus, windows_available
from experiments.model.loading import LoadedModel
from experiments.methods.ranks import absolute_lambda
from experiments.sampling import Sample
from experiments.model.lowrank import installed, module_parameters, read_targets
from experiments.evaluation.unigram import unigram_baseline
from theory.corners import sandwich
from theory.objective import lambda_unit
from theory.stack import Stack

ROW_KEYS = frozenset({"label", "method", "table", "d", "ppl", "ppl_protocol"})    # every cached row has them ...
HELLASWAG_ROW_KEYS = frozenset({"hellaswag_acc", "hellaswag_acc_norm", "hellaswag_n"})  # ... one scored on HellaSwag
COMPRESSED_ROW_KEYS = frozenset({"frobenius_fraction", "activation_fraction", "params_kept", "params_original"})


@dataclass(frozen=True)
class Config:
    """One compressed model: a method of experiments.compress and its options; ``table`` groups the rows.
    ``bias_mode`` is compress's: "method-default" keeps V1's, V2's and Basis Sharing's bias, projects the rest's."""

    label: str
    method: str | None               # None: the uncompressed model
    table: str
    lam_over_c: float = 0.0
    tied: bool = False
    convention: str = "original"
    installation: str = "projection"
    bias_mode: str = "method-default"


def configs(budget: Mode) -> list[Config]:
    """The configurations of the paper's tables that this budget runs."""
    rows = [Config("original", None, "main"), Config("SVD-LLM V1", "v1", "main"),
            Config("SVD-LLM V2", "v2", "main"), Config("pure bundle (GBD)", "gbd", "main"),
            Config("Basis-Sharing-core", "bs-core", "main"),
            Config("Basis-Sharing-core, two-sided (tied corner)", "bs-core-two-sided", "main")]
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
    budget: Mode
    sources: dict[str, Any] = field(default_factory=dict)
    adjustments: list[str] = field(default_factory=list)
    dtype: str = "float32"            # perplexity's autocast dtype (experiments.evaluation.DTYPES)
    cache_dir: Path | None = None     # where ``evaluated`` keeps evaluations by content (None: not cached)
    device: str = "cpu"               # where the model runs (experiments.model.loading.device_of): part of every key
    sample: Sample = Sample()         # the run's one draw of windows and items (experiments.sampling)
    windows_available: int = 0        # N: the test set's windows
    items_available: int = 0          # the HellaSwag validation file's items

    def window_index(self, k: int | None) -> tuple[int, ...]:
        """The run's ``k`` perplexity windows (None: all), indices into the test set's windows."""
        return self.sample.draw(self.windows_available, k, "windows")

    def item_index(self, k: int | None) -> tuple[int, ...]:
        """The run's ``k`` HellaSwag items (None: all), indices into the validation file."""
        return self.sample.draw(self.items_available, k, "items")

    @property
    def c(self) -> float:
        """The lambda unit max_i (||W_i||_2^2 + ||W_{i+1}||_2^2)."""
        return lambda_unit(Stack.of(self.weights))


def fit_to_context(budget: Mode, model: torch.nn.Module) -> tuple[Mode, list[str]]:
    """The budget with its calibration window clipped to the model's context (GPT-2: n_positions), and what
    was changed, in words."""
    context = model_context(model)
    if context is None or budget.calib_T <= context:
        return budget, []
    return replace(budget, calib_T=context), [f"calibration windows clipped from {budget.calib_T} to {context} "
                                              "tokens, the model's context"]


def data_source(path: str, digest: str, **fields: Any) -> dict[str, Any]:
    """A data file as the report names it: path relative to the data folder, sha256, SHA256SUMS status (a source
    downloaded by ``datasets``, no local file: its name as given)."""
    if not Path(path).is_file():
        return {**fields, "path": path, "sha256": digest, "checksum": "downloaded through datasets (no SHA256SUMS)"}
    return {**fields, "path": display_path(path), "sha256": digest, "checksum": checksum_status(path, digest)}


def hellaswag_data_source(path: Path, digest: str) -> dict[str, Any]:
    """The HellaSwag source as the report names it: the local file, or (``--hellaswag lm-eval``) lm-eval's own
    task with the sha256 of its validation docs (loaded here, so that being offline fails before calibration)."""
    if source_choice("GBD_HELLASWAG", HELLASWAG_SOURCES) == "lm-eval":
        task, _, docs = lm_eval_hellaswag()
        return data_source(f"lm-eval task {task}", docs_sha256(docs), name=LM_EVAL_NOTE)
    return data_source(str(path), digest, name="HellaSwag validation, six lines per item")


def prepare(loaded: LoadedModel, budget: Mode, seed: int, cache_dir: Path, kind: str = "attn_out",
            progress: bool = True, sample: Sample | None = None) -> Context:
    """Read the targets and every data file (checked against SHA256SUMS), then calibrate (cached) with ``seed``
    and tokenize the test text. ``sample`` (default: random windows and items seeded by ``seed``) is the run's
    draw: the seed-spread rows, calibrated with other seeds, pass the run's. Everything that can fail without
    calibrating fails before it."""
    model, tok = loaded.model, loaded.tokenizer
    names, weights, biases = read_targets(model, kind)
    budget, adjustments = fit_to_context(budget, model)
    calib, test = calibration_text(), wikitext2_test()
    hs_path, hs_sha = hellaswag_source()
    items_available = len(every_item())                      # a corrupt HellaSwag file fails here, not after hours
    sources = {"calibration": data_source(calib.path, calib.sha256, name=calib.name, sequences=budget.calib_n,
                                          tokens_each=budget.calib_T, seed=seed),
               "wikitext2_test": data_source(test.path, test.sha256, name=test.name),
               "hellaswag": hellaswag_data_source(hs_path, hs_sha)}
    for what, source in sources.items():
        if source["checksum"].startswith("MISMATCH"):
            print(f"gbd-audit: warning: {what} file {source['path']}: {source['checksum']}", file=sys.stderr)
    for note in adjustments:
        print(f"gbd-audit: note: {note}", file=sys.stderr)
    fingerprint = model_fingerprint(model).hex()
    batch = calibration_windows(tok, calib, budget.calib_n, budget.calib_T, seed)
    key = cache_key(fingerprint, kind, str(seed), calib.sha256)      # the calibration source keys its cache file
    sigma = second_moments(model, names, batch, progress=progress,
                           cache=cache_dir / f"calibration-{key[:16]}-{budget.calib_n}x{budget.calib_T}.pt")
    test_ids = tokenize_corpus(tok, test.text)
    return Context(loaded, kind, names, weights, biases, [sigma[n] for n in names], test_ids, fingerprint, budget,
                   sources, adjustments, cache_dir=cache_dir, device=loaded.device,
                   sample=sample or Sample("random", seed), windows_available=windows_available(model, test_ids),
                   items_available=items_available)


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


def _cached_part(ctx: Context, digest: str, part: str, index: Sequence[int], compute: Callable[[], dict[str, Any]]
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
    HellaSwag fields), each cached by content (``_cached_part``). A configuration that installs the same factors
    as one evaluated before (the surgery's V1 and the open questions' V1; Table 4's cells that are the surgery's
    convention rows) is evaluated once; so is a part two rows share (a seed row's perplexity, the open questions'
    perplexity of a surgery row, the cross-check's lm-eval half)."""
    window_index = ctx.window_index(windows)
    item_index = () if items == 0 else ctx.item_index(items)
    digest = installed_digest(ctx.names, compression)
    with nullcontext() if compression is None else installed(ctx.loaded.model, ctx.names, compression):
        row = dict(_cached_part(ctx, digest, "perplexity", window_index,
                                lambda: perplexity_part(ctx, window_index, progress)))
        if item_index:
            row.update(_cached_part(ctx, digest, "hellaswag", item_index, lambda: hellaswag_part(ctx, item_index)))
    return row


def check_dtype(dtype: str) -> None:
    """One clear error for a perplexity dtype that is not in experiments.evaluation.DTYPES."""
    if dtype not in DTYPES:
        raise GbdError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


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
    harness = _cached_part(ctx, installed_digest(ctx.names, None), "hellaswag", item_index,
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


def compress_config(ctx: Context, config: Config, d: int, budget: Mode) -> Compression:
    """compress() with the configuration's options; V2's loss rule, where undefined (a truncation loss <= 1,
    which depends on the scale of the second moments), falls back to uniform ranks and says so in the notes.
    lambda = 0 needs no lambda unit c, so per-layer methods also run on targets that do not chain (mlp_out)."""
    lam = 0.0 if config.lam_over_c == 0 else absolute_lambda(config.lam_over_c, ctx.c)

    def run(allocation: str) -> Compression:
        return compress(ctx.weights, ctx.sigmas, ctx.biases, config.method, d, lam=lam,
                        tied=config.tied, convention=config.convention, installation=config.installation,
                        allocation=allocation, bias_mode=config.bias_mode, stopping=budget.stopping)
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


def run_config(ctx: Context, config: Config, d: int, budget: Mode, cache_dir: Path,
               progress: bool = True) -> dict[str, Any]:
    """Compress, install, evaluate and restore one configuration (cached under ``row_key``)."""
    key = row_key(ctx, config, d, budget)
    path = cache_dir / "runs" / f"{key[:24]}.json"
    row = read_entry(path, key, is_row_of(config, budget.hellaswag_items != 0))
    if row is not None:
        return row
    start = time.time()
    row = {"label": config.label, **asdict(config), "d": d}
    if config.method is None:
        row.update(evaluated(ctx, None, budget.ppl_windows, budget.hellaswag_items, progress))
    else:
        row.update(_run_compressed(ctx, config, d, budget, progress))
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


def _run_compressed(ctx: Context, config: Config, d: int, budget: Mode, progress: bool) -> dict[str, Any]:
    compression = compress_config(ctx, config, d, budget)
    two_sided = (None if compression.sections is None else
                 frobenius_error_fraction(ctx.weights, sandwich(Stack.of(ctx.weights), compression.sections)))
    return {**measure(ctx, compression, budget.ppl_windows, budget.hellaswag_items, progress),
            "two_sided_fraction": two_sided}


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



