"""HellaSwag through lm-evaluation-harness's own ``hellaswag`` task, and an independent direct scorer to cross-check it.

    query_i = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
    ll_ij   = sum of log p(continuation tokens | query_i) for the continuation " " + preprocess(ending_ij),
    acc      = mean_i [argmax_j ll_ij == gold_i],
    acc_norm = mean_i [argmax_j ll_ij / len(preprocess(ending_ij)) == gold_i]   (length in characters).

The local task is the YAML file beside this module (``hellaswag_local_gbd.yaml``, a copy of lm-eval's
hellaswag.yaml reading a local jsonl): data, not code.
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
from torch import nn

from experiments.data import HELLASWAG_SOURCES, HELLASWAG_VAL, HellaSwagItem, data_dir, hellaswag_items, source_choice
from experiments.errors import GbdError
from experiments.evaluation.perplexity import DEFAULT_SEQ_LEN, model_context, model_device

LOCAL_TASK = "hellaswag_local_gbd"


LOCAL_NOTE = (
    "local HellaSwag file (klosax text format): it lacks the ctx_a/ctx_b split, so the whole context is "
    "passed as ctx_a with ctx_b empty and lm-eval's ctx_b.capitalize() is not applied (capitalization can "
    "differ from lm-eval's own hellaswag task on the hub data)"
)


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


def processed_docs(items: Sequence[HellaSwagItem]) -> list[dict]:
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


TASK_TEMPLATE = Path(__file__).with_name(f"{LOCAL_TASK}.yaml")


def task_yaml(data_file: Path, cache_dir: Path) -> str:
    """The local task (``TASK_TEMPLATE``, lm-eval's hellaswag.yaml reading a local jsonl) for ``data_file``."""
    return (TASK_TEMPLATE.read_text(encoding="utf-8").replace("DATA_FILE", json.dumps(str(data_file)))
            .replace("CACHE_DIR", json.dumps(str(cache_dir))))


def write_local_task(task_dir: Path, items: Sequence[HellaSwagItem]) -> None:
    """Write the items as jsonl plus the task yaml into ``task_dir``."""
    data_file = task_dir / "hellaswag_val.jsonl"
    data_file.write_text("".join(json.dumps(_lm_eval_doc(it)) + "\n" for it in items), encoding="utf-8")
    (task_dir / f"{LOCAL_TASK}.yaml").write_text(task_yaml(data_file, task_dir / "hf_cache"), encoding="utf-8")


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


LM_EVAL_MODELS = ("packed", "hflm")  # experiments.evaluation.lm_eval_packed.PackedHFLM (default), lm-eval's own HFLM


def _run_lm_eval(model: nn.Module, tokenizer, task: str, task_manager, limit: int | None, batch_size: int,
                 lm_model: str, doc_index: Sequence[int] | None = None) -> dict:
    """simple_evaluate on the in-memory model wrapped in ``lm_model`` (LM_EVAL_MODELS) over the task's first
    ``limit`` docs, or its docs ``doc_index`` (lm-eval's ``samples``); lm-eval's output dict (with samples)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from experiments.evaluation.lm_eval_packed import PackedHFLM

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

    ``lm_model``: "packed" (default; experiments.evaluation.lm_eval_packed.PackedHFLM, each item's context and its four
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
            write_local_task(Path(tmp), items)
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
    device = model_device(model)
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
    docs = processed_docs(items)
    pairs = [_encode_pair(tokenizer, d["query"], " " + c) for d in docs for c in d["choices"]]
    flat = _continuation_logliks(model, pairs, model_context(model) or DEFAULT_SEQ_LEN, batch_size)
    bounds = np.cumsum([0] + [len(d["choices"]) for d in docs])
    lls = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return _result_from_logliks(lls, docs, "direct scorer (experiments.evaluation)", LOCAL_NOTE)
