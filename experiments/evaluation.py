"""Evaluation: WikiText-2 perplexity (SVD-LLM protocol), HellaSwag (lm-eval and a direct cross-check), Spearman.

Perplexity (SPEC section 3 and 7, the SVD-LLM protocol):
    the corpus is tokenized once, cut into ``W = len(ids) // T`` non-overlapping windows of ``T`` tokens
    (the last partial window is dropped), and
        PPL = exp( sum_w sum_{t=1}^{T-1} -log p(x_{w,t} | x_{w,<t}) / (W (T - 1)) ),
    a token-weighted mean over the ``T - 1`` next-token predictions of every window.

HellaSwag follows lm-evaluation-harness's own ``hellaswag`` task:
    query_i = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
    ll_ij   = sum of log p(continuation tokens | query_i) for the continuation " " + preprocess(ending_ij),
    acc      = mean_i [argmax_j ll_ij == gold_i],
    acc_norm = mean_i [argmax_j ll_ij / len(preprocess(ending_ij)) == gold_i]   (length in characters).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from experiments.data import HELLASWAG_SOURCES, HELLASWAG_VAL, HellaSwagItem, data_dir, hellaswag_items, source_choice
from experiments.errors import GbdError

DEFAULT_SEQ_LEN = 2048  # SVD-LLM's evaluation window
CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")  # lm-eval's order
LOCAL_TASK = "hellaswag_local_gbd"
LOCAL_NOTE = (
    "local HellaSwag file (klosax text format): it lacks the ctx_a/ctx_b split, so the whole context is "
    "passed as ctx_a with ctx_b empty and lm-eval's ctx_b.capitalize() is not applied (capitalization can "
    "differ from lm-eval's own hellaswag task on the hub data)"
)


# --------------------------------------------------------------------------------------------- perplexity
def model_context(model: nn.Module) -> int | None:
    """The model's maximum context length from its config (first of n_positions, max_position_embeddings, n_ctx)."""
    config = getattr(model, "config", None)
    for attr in CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenize_corpus(tokenizer, text: str) -> torch.LongTensor:
    """Token ids of the whole corpus, 1-D, exactly as the SVD-LLM code makes them.

    SVD-LLM calls ``tokenizer(text, return_tensors='pt').input_ids`` with the tokenizer's default
    ``add_special_tokens=True``; this is kept. For GPT-NeoX/Pythia nothing is added, and neither for the
    SmolLM2 GGUF tokenizer (BOS defined but not added: 304,986 WikiText-2 test tokens either way). A
    tokenizer that does add BOS would put exactly one at position 0 of the corpus (first window only).
    """
    if tokenizer is None:
        raise GbdError("no tokenizer given: the model needs its tokenizer to tokenize the corpus")
    if not text or not text.strip():
        raise GbdError("the corpus to tokenize is empty")
    return tokenizer(text, return_tensors="pt").input_ids[0].to(torch.long)


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and what it was computed over.

    ``ppl = exp(nll_sum / n_tokens)`` over the finite windows; ``nonfinite_windows`` counts the evaluated
    windows whose NLL was NaN/inf (excluded from ``nll_sum`` and ``n_tokens``, never silently).
    ``window_nll`` / ``window_tokens``: each evaluated window's summed NLL (non-finite ones as they came) and
    its number of predictions, in window order, for the intervals of ``experiments.audit.statistics``.
    """

    ppl: float
    nll_sum: float
    n_tokens: int
    n_windows: int
    windows_available: int
    seq_len: int
    nonfinite_windows: int
    protocol: str
    dtype: str = "float32"
    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()


def _resolve_seq_len(model: nn.Module, seq_len: int | None) -> int:
    """``seq_len`` if given, else min(2048, model context)."""
    if seq_len is None:
        context = model_context(model)
        seq_len = DEFAULT_SEQ_LEN if context is None else min(DEFAULT_SEQ_LEN, context)
    if seq_len < 2:
        raise GbdError(f"seq_len must be at least 2 (one prediction per window), got {seq_len}")
    return seq_len


def windows_available(model: nn.Module, ids: torch.Tensor, seq_len: int | None = None) -> int:
    """W = len(ids) // seq_len, the number of full windows of the protocol (``seq_len`` as in ``perplexity``)."""
    return ids.numel() // _resolve_seq_len(model, seq_len)


def _windows(ids: torch.Tensor, seq_len: int, max_windows: int | None,
             window_index: Sequence[int] | None = None) -> tuple[torch.Tensor, int]:
    """The windows ``window_index`` (indices into the ``len // seq_len`` full windows) or else the first
    ``min(max_windows, len // seq_len)``, as a (W, seq_len) tensor, and ``len // seq_len``."""
    if ids.dim() != 1:
        raise GbdError(f"token ids must be 1-D, got shape {tuple(ids.shape)}")
    available = ids.numel() // seq_len
    if available == 0:
        raise GbdError(f"corpus of {ids.numel()} tokens is shorter than one window of {seq_len} tokens")
    if max_windows is not None and max_windows < 1:
        raise GbdError(f"max_windows must be at least 1, got {max_windows}")
    every = ids[: available * seq_len].view(available, seq_len)
    if window_index is not None:
        if not window_index or min(window_index) < 0 or max(window_index) >= available:
            raise GbdError(f"window indices must be a non-empty subset of 0..{available - 1}")
        return every[torch.as_tensor(list(window_index), dtype=torch.long)], available
    return every[: available if max_windows is None else min(max_windows, available)], available


LOSS_CHUNK = 256  # positions per lm_head + cross-entropy chunk
PLAIN_HEAD_TYPES = ("gpt_neox", "llama", "mistral", "qwen2", "gpt2")  # logits = lm_head(backbone output), no scaling
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _window_nll(model: nn.Module, batch: torch.Tensor, chunk: int | None = LOSS_CHUNK) -> torch.Tensor:
    """Per-window summed next-token NLL, float64: sum_{t>=1} -log softmax(logits_{t-1})[x_t].

    With ``chunk`` and a model of PLAIN_HEAD_TYPES, the logits lm_head(h_t) of the backbone's last hidden
    states h_t are made and reduced ``chunk`` positions at a time, so the (T x vocab) logits never exist at once
    (less memory traffic); otherwise from the model's full logits.
    """
    if chunk is None or getattr(model.config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return _summed_nll(model(input_ids=batch, use_cache=False).logits[:, :-1], batch[:, 1:])
    hidden = model.base_model(input_ids=batch, use_cache=False).last_hidden_state[:, :-1]
    head, targets = model.get_output_embeddings(), batch[:, 1:]
    total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
    for start in range(0, targets.shape[1], chunk):
        total += _summed_nll(head(hidden[:, start:start + chunk]), targets[:, start:start + chunk])
    return total


def _summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_t -log softmax(logits[b, t])[targets[b, t]] per row b, float64 (softmax in float32 over the last dim)."""
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape).double().sum(dim=1)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    seq_len: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    dtype: str = "float32",
    chunk: int | None = LOSS_CHUNK,
    window_index: Sequence[int] | None = None,
) -> PerplexityResult:
    """Token-weighted perplexity over non-overlapping windows (the SVD-LLM protocol, see module docstring).

    ``seq_len`` defaults to min(2048, model context); ``window_index`` evaluates those windows (indices into the
    test set's windows, e.g. an ``experiments.sampling.Sample`` draw), else ``max_windows`` the first k windows.
    A window with non-finite NLL is counted in ``nonfinite_windows`` and left out of the average;
    if every window is non-finite the perplexity is NaN. ``dtype`` "bfloat16" runs the model under bfloat16
    autocast (the loss stays float32); ``chunk``: see ``_window_nll``.
    """
    if dtype not in DTYPES:
        raise GbdError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    seq_len = _resolve_seq_len(model, seq_len)
    windows, available = _windows(ids.to(torch.long), seq_len, max_windows, window_index)
    device = _model_device(model)
    per_window: list[float] = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "float32"):
        for batch in tqdm(windows.split(batch_size), desc="perplexity", unit="batch", disable=not progress):
            per_window += _window_nll(model, batch.to(device), chunk).cpu().tolist()
    finite = [x for x in per_window if math.isfinite(x)]
    nll_sum, n_finite, n_bad = float(sum(finite)), len(finite), len(per_window) - len(finite)
    n_tokens = n_finite * (seq_len - 1)
    n = windows.shape[0]
    protocol = (
        f"SVD-LLM: {n} of {available} non-overlapping windows of {seq_len} tokens"
        f"{'' if n == available else ' (chosen windows)' if window_index is not None else ' (first windows only)'}"
        ", last partial window dropped, "
        f"token-weighted mean NLL over {seq_len - 1} next-token predictions per window"
    )
    return PerplexityResult(
        ppl=math.exp(nll_sum / n_tokens) if n_tokens else float("nan"),
        nll_sum=nll_sum,
        n_tokens=n_tokens,
        n_windows=n,
        windows_available=available,
        seq_len=seq_len,
        nonfinite_windows=n_bad,
        protocol=protocol,
        dtype=dtype,
        window_nll=tuple(per_window),
        window_tokens=(seq_len - 1,) * n,
    )


# --------------------------------------------------------------------------------------------- HellaSwag
@dataclass(frozen=True)
class HellaSwagResult:
    """HellaSwag accuracies; per item (doc order): ``predictions``/``predictions_norm`` the chosen ending,
    ``gold`` the right one, ``logliks`` the log-likelihood of every ending."""

    acc: float
    acc_stderr: float
    acc_norm: float
    acc_norm_stderr: float
    n: int
    source: str
    note: str
    predictions: tuple[int, ...] = ()
    predictions_norm: tuple[int, ...] = ()
    gold: tuple[int, ...] = ()
    logliks: tuple[tuple[float, ...], ...] = ()


def _lm_eval_doc(item: HellaSwagItem) -> dict:
    """The item in the hub dataset's schema: the whole context as ctx_a, ctx_b empty, label as a string."""
    return {
        "activity_label": item.activity_label,
        "ctx_a": item.ctx,
        "ctx_b": "",
        "endings": list(item.endings),
        "label": str(item.label),
    }


def _processed_docs(items: Sequence[HellaSwagItem]) -> list[dict]:
    """lm-eval's own hellaswag process_docs applied to the items: dicts with query, choices, gold."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    with quiet_lm_eval():
        return list(process_docs(datasets.Dataset.from_list([_lm_eval_doc(it) for it in items])))


def _mean_stderr(correct: np.ndarray) -> float:
    """Standard error of a mean as lm-eval computes it: sample std (ddof=1) / sqrt(n); NaN for n < 2."""
    n = correct.size
    return float(correct.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def _result_from_logliks(
    lls: Sequence[Sequence[float]], docs: Sequence[dict], source: str, note: str
) -> HellaSwagResult:
    """acc = mean[argmax ll == gold], acc_norm = mean[argmax ll / len(choice chars) == gold], with stderrs."""
    pred = [int(np.argmax(ll)) for ll in lls]
    pred_norm = [int(np.argmax(np.asarray(ll) / [len(c) for c in d["choices"]])) for ll, d in zip(lls, docs)]
    gold = np.array([d["gold"] for d in docs])
    correct, correct_norm = (np.asarray(pred) == gold).astype(float), (np.asarray(pred_norm) == gold).astype(float)
    return HellaSwagResult(
        acc=float(correct.mean()),
        acc_stderr=_mean_stderr(correct),
        acc_norm=float(correct_norm.mean()),
        acc_norm_stderr=_mean_stderr(correct_norm),
        n=len(docs),
        source=source,
        note=note,
        predictions=tuple(pred),
        predictions_norm=tuple(pred_norm),
        gold=tuple(int(g) for g in gold),
        logliks=tuple(tuple(float(x) for x in ll) for ll in lls),
    )


def _task_yaml(data_file: Path, cache_dir: Path) -> str:
    """A copy of lm-eval's hellaswag.yaml reading a local jsonl (its process_docs, prompts and metrics)."""
    return f"""task: {LOCAL_TASK}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {json.dumps(str(data_file))}
  cache_dir: {json.dumps(str(cache_dir))}
output_type: multiple_choice
training_split: null
validation_split: validation
test_split: null
process_docs: !function lm_eval.tasks.hellaswag.utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _write_local_task(task_dir: Path, items: Sequence[HellaSwagItem]) -> None:
    """Write the items as jsonl plus the task yaml into ``task_dir``."""
    data_file = task_dir / "hellaswag_val.jsonl"
    data_file.write_text("".join(json.dumps(_lm_eval_doc(it)) + "\n" for it in items), encoding="utf-8")
    (task_dir / f"{LOCAL_TASK}.yaml").write_text(_task_yaml(data_file, task_dir / "hf_cache"), encoding="utf-8")


@contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Raise lm-eval's and datasets' log level to ERROR and hide datasets' progress bars for the duration
    (lm-eval's own loglikelihood progress bar stays; the command line's --quiet hides it). lm-eval's
    ``git describe`` probe, which prints "fatal: not a git repository" outside a checkout, is replaced by its
    own silent fallback (reading .git of the working directory)."""
    from datasets.utils import logging as ds_logging
    from lm_eval import evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    loggers = [logging.getLogger(name) for name in ("lm_eval", "datasets")]
    levels = [lg.level for lg in loggers]
    bars = ds_logging.is_progress_bar_enabled()
    git_probe = evaluator.get_git_commit_hash
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    ds_logging.disable_progress_bar()
    evaluator.get_git_commit_hash = lambda: get_commit_from_path(os.getcwd())
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = git_probe
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            ds_logging.enable_progress_bar()


LM_EVAL_MODELS = ("packed", "hflm")  # experiments.lm_eval_packed.PackedHFLM (default), lm-eval's own HFLM


def _run_lm_eval(model: nn.Module, tokenizer, task: str, task_manager, limit: int | None, batch_size: int,
                 lm_model: str, doc_index: Sequence[int] | None = None) -> dict:
    """simple_evaluate on the in-memory model wrapped in ``lm_model`` (LM_EVAL_MODELS) over the task's first
    ``limit`` docs, or its docs ``doc_index`` (lm-eval's ``samples``); lm-eval's output dict (with samples)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from experiments.lm_eval_packed import PackedHFLM

    lm = (PackedHFLM if lm_model == "packed" else HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    samples = None if doc_index is None else {task: [int(i) for i in doc_index]}
    return simple_evaluate(model=lm, tasks=[task], limit=None if samples else limit, samples=samples,
                           task_manager=task_manager, log_samples=True)


def _result_from_lm_eval(out: dict, task: str, source: str, note: str) -> HellaSwagResult:
    """Read metrics and per-item choices (recomputed from the logged log-likelihoods) from lm-eval's output."""
    metrics = out["results"][task]
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    lls = [[float(resp[0]) for resp in s["filtered_resps"]] for s in samples]
    return replace(
        _result_from_logliks(lls, [s["doc"] for s in samples], source, note),
        acc=float(metrics["acc,none"]),
        acc_stderr=float(metrics["acc_stderr,none"]),
        acc_norm=float(metrics["acc_norm,none"]),
        acc_norm_stderr=float(metrics["acc_norm_stderr,none"]),
    )


def hellaswag_lm_eval(
    model: nn.Module,
    tokenizer,
    items_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    lm_model: str = "packed",
    item_index: Sequence[int] | None = None,
) -> HellaSwagResult:
    """HellaSwag acc/acc_norm through lm-evaluation-harness on the in-memory model, zero-shot.

    ``lm_model``: "packed" (default; experiments.lm_eval_packed.PackedHFLM, each item's context and its four
    endings in one row: the same log-likelihoods as HFLM at about half the tokens) or "hflm" (lm-eval's HFLM).

    ``items_path`` None: the local six-line file (experiments.data default), or lm-eval's own hellaswag task
    where ``$GBD_HELLASWAG`` is lm-eval (``--hellaswag lm-eval``); a path: that file. ``item_index`` evaluates
    those items (indices into the file, in this order), else ``limit`` keeps the first items only.
    """
    from lm_eval.tasks import TaskManager

    if tokenizer is None:
        raise GbdError("HellaSwag needs the model's tokenizer; none was given")
    if lm_model not in LM_EVAL_MODELS:
        raise GbdError(f"unknown lm-eval model class {lm_model!r}; choose one of {', '.join(LM_EVAL_MODELS)}")
    if items_path is None and source_choice("GBD_HELLASWAG", HELLASWAG_SOURCES) == "lm-eval":
        task, manager = lm_eval_hellaswag()[:2]
        with quiet_lm_eval():
            out = _run_lm_eval(model, tokenizer, task, manager, limit, batch_size, lm_model, item_index)
        return _result_from_lm_eval(out, task, f"lm-eval {task} (its own dataset)", LM_EVAL_NOTE)
    with quiet_lm_eval():
        items = chosen_items(items_path, limit, item_index)
        with tempfile.TemporaryDirectory(prefix="gbd_hellaswag_") as tmp:
            _write_local_task(Path(tmp), items)
            manager = TaskManager(include_path=tmp, include_defaults=False)
            out = _run_lm_eval(model, tokenizer, LOCAL_TASK, manager, None, batch_size, lm_model)
    return _result_from_lm_eval(out, LOCAL_TASK, f"lm-eval {LOCAL_TASK} (local file)", LOCAL_NOTE)


LM_EVAL_HELLASWAG = ("hellaswag", None)   # lm-eval's own task: (name, include_path of extra task yamls or None)
LM_EVAL_NOTE = ("lm-eval's own hellaswag task and dataset (Rowan/hellaswag validation through datasets), with its "
                "ctx_a + ' ' + ctx_b.capitalize() preprocessing")


def lm_eval_hellaswag() -> tuple[str, object, list[dict]]:
    """lm-eval's own hellaswag task (``LM_EVAL_HELLASWAG``): its name, the TaskManager that knows it and its
    validation docs (hub fields, process_docs applied). Its data come through ``datasets``: offline, a GbdError
    naming the packaged file."""
    from lm_eval.tasks import TaskManager

    task, include = LM_EVAL_HELLASWAG
    try:
        with quiet_lm_eval():
            manager = TaskManager(include_path=include)
            docs = list(manager.load([task])["tasks"][task].validation_docs())
    except Exception as exc:   # offline, hub errors: one line naming the offline source
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise GbdError(f"--hellaswag lm-eval could not load lm-eval's {task} task ({type(exc).__name__}: {reason}); "
                       "offline, use --hellaswag local (the packaged HellaSwag validation file)") from exc
    return task, manager, docs


def docs_sha256(docs: Sequence[dict]) -> str:
    """sha256 of the docs as sorted-key JSON: the data part of the cache keys under ``--hellaswag lm-eval``."""
    return hashlib.sha256(json.dumps(list(docs), sort_keys=True, default=str).encode()).hexdigest()


def hub_items(docs: Sequence[dict]) -> list[HellaSwagItem]:
    """The hub docs as items of the six-line format, ctx = ctx_a + " " + ctx_b.capitalize() (what lm-eval's
    process_docs joins), for the independent scorer ``hellaswag_direct``."""
    return [HellaSwagItem(d["activity_label"], d["ctx_a"] + " " + d["ctx_b"].capitalize(), list(d["endings"]),
                          int(d["label"])) for d in docs]


@lru_cache(maxsize=2)
def _every_item(items_path: str | None, stamp: tuple[int, int]) -> tuple[HellaSwagItem, ...]:
    """Every item of the HellaSwag file (``hellaswag_items(items_path)``), parsed once per (size, mtime) ``stamp``
    of the file: a run draws from the same file for every configuration."""
    return tuple(hellaswag_items(items_path))


def every_item(items_path: str | None = None) -> tuple[HellaSwagItem, ...]:
    """Every item of the HellaSwag file (None: the data folder's validation file), parsed once per file version."""
    path = data_dir() / HELLASWAG_VAL if items_path is None else Path(items_path)
    if not path.is_file():
        return tuple(hellaswag_items(items_path))           # hellaswag_items' own error
    return _every_item(items_path, (path.stat().st_size, path.stat().st_mtime_ns))


def chosen_items(items_path: str | None = None, limit: int | None = None,
                 item_index: Sequence[int] | None = None) -> list[HellaSwagItem]:
    """The HellaSwag items ``item_index`` of the file (in that order), else its first ``limit`` items."""
    if item_index is None:
        return hellaswag_items(items_path, limit=limit)
    every = every_item(items_path)
    if not item_index or min(item_index) < 0 or max(item_index) >= len(every):
        raise GbdError(f"HellaSwag item indices must be a non-empty subset of 0..{len(every) - 1}")
    return [every[i] for i in item_index]


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing context spaces move to the continuation; whole = tok(context + continuation),
    context tokens = tok(context), continuation tokens = whole[len(context tokens):] (tokenizer defaults)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def _continuation_logliks(
    model: nn.Module, pairs: Sequence[tuple[list[int], list[int]]], max_length: int, batch_size: int
) -> list[float]:
    """sum_k log p(cont_k | context, cont_<k) per pair; inputs left-truncated to ``max_length`` like lm-eval."""
    device = _model_device(model)
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            seqs = [(ctx + cont)[-(max_length + 1):] for ctx, cont in chunk]
            width = max(len(s) for s in seqs) - 1
            inputs = torch.zeros(len(seqs), width, dtype=torch.long)  # right padding: causal, never attended
            for row, seq in enumerate(seqs):
                inputs[row, : len(seq) - 1] = torch.tensor(seq[:-1])
            logits = model(input_ids=inputs.to(device), use_cache=False).logits
            for row, (seq, (_, cont)) in enumerate(zip(seqs, chunk)):
                end = len(seq) - 1  # logits at positions end-len(cont) .. end-1 predict the continuation
                logprobs = F.log_softmax(logits[row, end - len(cont):end].float(), dim=-1)
                picked = logprobs.gather(1, torch.tensor(cont, device=device)[:, None])
                out.append(float(picked.double().sum()))
    return out


def hellaswag_direct(
    model: nn.Module, tokenizer, items: Sequence[HellaSwagItem], batch_size: int = 8
) -> HellaSwagResult:
    """Independent HellaSwag scorer (cross-check of the lm-eval path on the same items): same preprocessing
    (lm-eval's process_docs), continuation " " + ending, log-likelihoods computed here (module docstring)."""
    if tokenizer is None:
        raise GbdError("HellaSwag needs the model's tokenizer; none was given")
    if not items:
        raise GbdError("no HellaSwag items to score")
    docs = _processed_docs(items)
    pairs = [_encode_pair(tokenizer, d["query"], " " + c) for d in docs for c in d["choices"]]
    flat = _continuation_logliks(model, pairs, model_context(model) or DEFAULT_SEQ_LEN, batch_size)
    bounds = np.cumsum([0] + [len(d["choices"]) for d in docs])
    lls = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return _result_from_logliks(lls, docs, "direct scorer (experiments.evaluation)", LOCAL_NOTE)


# --------------------------------------------------------------------------------------------- statistics
def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman rank correlation rho = Pearson correlation of the ranks, with its two-sided p-value."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
        raise GbdError(f"spearman needs two equal-length 1-D sequences, got {x_arr.shape} and {y_arr.shape}")
    if x_arr.size < 3:
        raise GbdError(f"spearman needs at least 3 points, got {x_arr.size}")
    if np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        raise GbdError("spearman is undefined for a constant input")
    res = stats.spearmanr(x_arr, y_arr)
    return float(res.statistic), float(res.pvalue)
