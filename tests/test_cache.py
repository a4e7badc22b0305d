"""Caches: a row is keyed by everything that determines it (code, model, options, seed, every data file);
a cache file of the wrong shape is a miss; the code version follows the source files."""
from __future__ import annotations

import copy
import dataclasses
import json
from types import SimpleNamespace

import pytest

from experiments.cache import PACKAGE_ROOT, code_version, ensure_writable, library_versions, read_entry, write_entry
from experiments.errors import GbdError
from experiments.runs import rows
from experiments.runs.modes import MODES as BUDGETS
from experiments.runs.plan import Config
from experiments.runs.rows import is_row_of, row_key
from experiments.sampling import Sample

CONFIG = Config("SVD-LLM V1", "v1", "main")
SOURCES = {"calibration": {"sha256": "a" * 64, "seed": 3}, "wikitext2_test": {"sha256": "b" * 64},
           "hellaswag": {"sha256": "c" * 64}}


def context(**changes) -> SimpleNamespace:
    """The fields of a runs.context.Context that a row key reads."""
    fields = {"fingerprint": "f" * 64, "kind": "attn_out", "sources": copy.deepcopy(SOURCES), "dtype": "float32",
              "device": "cpu", "sample": Sample("random", 3)}
    fields.update(changes)
    return SimpleNamespace(**fields)


def key(ctx=None, config=CONFIG, d=4, budget=BUDGETS["quick"]) -> str:
    return row_key(ctx or context(), config, d, budget)


@pytest.mark.parametrize("source", ["calibration", "wikitext2_test", "hellaswag"])
def test_a_changed_data_file_changes_the_row_key(source):
    ctx = context()
    ctx.sources[source]["sha256"] = "0" * 64
    assert key(ctx) != key()


def test_model_kind_seed_options_and_rank_change_the_row_key():
    base = key()
    seeded = context()
    seeded.sources["calibration"]["seed"] = 4
    others = [key(context(fingerprint="e" * 64)), key(context(kind="mlp_out")), key(seeded),
              key(config=dataclasses.replace(CONFIG, installation="sandwich")), key(d=5),
              key(budget=BUDGETS["standard"])]
    assert base not in others and len(set(others)) == len(others)
    assert key() == base                                   # deterministic


def test_a_code_change_changes_the_row_key(monkeypatch):
    base = key()
    monkeypatch.setattr(rows, "code_version", lambda: "another version")
    assert key() != base


def test_code_version_follows_source_bytes_and_library_versions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("x = 1\n")
    before = code_version([source])
    source.write_text("x = 2\n")
    assert code_version([source]) != before
    assert code_version([source], libraries=()) != code_version([source])
    assert code_version() == code_version()
    assert any(v.startswith("torch==") for v in library_versions())


def test_default_code_version_covers_every_package_source_file(tmp_path, monkeypatch):
    """A copy of the package with one experiments/ file edited gets another code version."""
    import experiments.cache as cache

    for folder in ("theory", "experiments"):
        for f in (PACKAGE_ROOT / folder).rglob("*.py"):
            copy = tmp_path / f.relative_to(PACKAGE_ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(f.read_bytes())
    monkeypatch.setattr(cache, "PACKAGE_ROOT", tmp_path)
    versions = [cache.code_version()]
    for edited in ("experiments/evaluation.py", "experiments/audit/statistics.py", "experiments/model/sequential.py"):
        with open(tmp_path / edited, "a") as f:
            f.write("\n# a fix\n")
        versions.append(cache.code_version())
    assert len(set(versions)) == len(versions)     # a top-level module or one in a subpackage: a new version


ROW = {"label": "SVD-LLM V1", "method": "v1", "table": "main", "d": 4, "ppl": 30.0, "ppl_protocol": "p",
       "hellaswag_acc": 0.3, "hellaswag_acc_norm": 0.3, "hellaswag_n": 40, "frobenius_fraction": 0.5,
       "activation_fraction": 0.2, "params_kept": 10, "params_original": 20}


@pytest.mark.parametrize("cached", [None, {}, [], "row", {"key": "k"}, {"key": "k", "row": {}},
                                    {"key": "other", "row": ROW}, {"key": "k", "row": {**ROW, "label": "x"}},
                                    {"key": "k", "row": {k: v for k, v in ROW.items() if k != "ppl"}},
                                    {"key": "k", "row": {k: v for k, v in ROW.items() if k != "params_kept"}}])
def test_a_cache_file_of_the_wrong_shape_is_a_miss(cached, tmp_path):
    path = tmp_path / "entry.json"
    if cached is not None:
        path.write_text(json.dumps(cached))
    assert read_entry(path, "k", is_row_of(CONFIG)) is None


def test_a_well_formed_cached_row_is_served(tmp_path):
    write_entry(tmp_path / "entry.json", "k", ROW)
    assert read_entry(tmp_path / "entry.json", "k", is_row_of(CONFIG)) == ROW
    (tmp_path / "broken.json").write_text('{"key": "k", "row": {')           # half a file: a miss, no crash
    assert read_entry(tmp_path / "broken.json", "k") is None


def test_unwritable_folders_are_refused_clearly(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(GbdError, match="cache folder .* is not writable"):
        ensure_writable(blocker / "cache", "cache folder")
    assert ensure_writable(tmp_path / "new" / "folder", "output folder").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []       # the probe file is gone


def test_the_perplexity_dtype_changes_the_row_key():
    assert key(context(dtype="bfloat16")) != key()


def test_the_sample_of_windows_and_items_changes_the_row_key():
    """The run's draw (design and seed) fixes which windows and items a row measured."""
    others = [key(context(sample=Sample("random", 4))), key(context(sample=Sample("first", 3)))]
    assert key() not in others and len(set(others)) == 2


def test_the_device_changes_the_row_key():
    """float32 results differ between a CPU and a GPU: a row measured on one is not served to the other."""
    assert key(context(device="cuda (NVIDIA H100 80GB HBM3)")) != key()
