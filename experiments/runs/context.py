"""What every configuration of a run shares (``Context``): the model, its targets, their weights and second moments
(calibrated, cached), the test ids, the data sources checked against SHA256SUMS, and the run's one draw of windows
and items. ``prepare`` builds it; everything that can fail without calibrating fails before it."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.cache import cache_key
from experiments.data import (HELLASWAG_SOURCES, calibration_text, checksum_status, display_path, hellaswag_source,
                              source_choice, wikitext2_test)
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import LM_EVAL_NOTE, docs_sha256, every_item, lm_eval_hellaswag
from experiments.evaluation.perplexity import DTYPES, model_context, tokenize_corpus, windows_available
from experiments.model.hooks import block_input_moments
from experiments.model.loading import LoadedModel
from experiments.model.lowrank import read_targets
from experiments.model.moments import calibration_windows, model_fingerprint, second_moments
from experiments.runs.modes import Mode
from experiments.sampling import Sample
from theory.objective import lambda_unit
from theory.stack import Stack


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
    calib_ids: torch.Tensor | None = None   # the calibration windows (for methods that run the model on them)
    extras: dict[str, Any] = field(default_factory=dict)     # lazy, computed once: ``residual``

    def window_index(self, k: int | None) -> tuple[int, ...]:
        """The run's ``k`` perplexity windows (None: all), indices into the test set's windows."""
        return self.sample.draw(self.windows_available, k, "windows")

    def item_index(self, k: int | None) -> tuple[int, ...]:
        """The run's ``k`` HellaSwag items (None: all), indices into the validation file."""
        return self.sample.draw(self.items_available, k, "items")

    def residual(self) -> list[np.ndarray]:
        """H_{l+1} = sum h h^T entering the block after each target's block (l = 1..L-1), on the calibration
        windows, computed once."""
        if "residual" not in self.extras:
            H = block_input_moments(self.loaded.model, self.calib_ids)
            self.extras["residual"] = [h.numpy() for h in H[1:len(self.names)]]
        return self.extras["residual"]

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
                   items_available=items_available, calib_ids=batch)


def check_dtype(dtype: str) -> None:
    """One clear error for a perplexity dtype that is not in experiments.evaluation.DTYPES."""
    if dtype not in DTYPES:
        raise GbdError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
