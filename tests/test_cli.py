"""The command line: clear errors, the subcommands, and the whole report end to end on a tiny local model."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from experiments.audit.ledger import CLAIMS
from experiments.cli import default_out, main
from experiments.data import data_dir
from experiments.model.loading import load_model
from experiments.runs.surgery import surgery_part
from experiments.sampling import Sample


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny, tiny_neox) -> str:
    """A tiny random GPT-NeoX (with attention.dense biases) and the Pythia tokenizer, as a local directory."""
    return save_tiny(tiny_neox(2048), tmp_path_factory.mktemp("tiny-neox"), True)


@pytest.mark.parametrize("argv, message", [
    (["phase", "--model", "/nonexistent/model.gguf"], "no .gguf file"),
    (["surgery", "--model", "/nonexistent/dir"], "GBD_MODEL"),
    (["report", "--model", "./missing", "--mode", "quick"], "GBD_MODEL"),
])
def test_missing_models_are_one_line_errors(argv, message, capsys, tmp_path):
    assert main(argv + ["--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gbd-audit: error:") and message in err and "Traceback" not in err


def test_bad_ratio_is_a_clear_error(tiny_dir, capsys, tmp_path):
    assert main(["phase", "--model", tiny_dir, "--ratio", "1.5", "--mode", "quick", "--quiet"]) == 2
    assert "rank ratio" in capsys.readouterr().err


def test_unknown_kind_is_a_clear_error(tiny_dir, capsys):
    assert main(["phase", "--model", tiny_dir, "--kind", "q", "--mode", "quick", "--quiet"]) == 2
    assert "no target kind 'q'" in capsys.readouterr().err


def test_default_out_is_under_reports():
    assert default_out("SmolLM2-135M-Instruct.Q4_1", "quick").parts[-2:] == ("reports", "smollm2-135m-instruct.q4-1-quick")


def test_phase_prints_the_diagram(tiny_dir, capsys):
    assert main(["phase", "--model", tiny_dir, "--mode", "quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "d = 8" in out and out.count("| untied |") == 6 and out.count("| tied |") == 3


def test_report_end_to_end_on_a_tiny_model(tiny_dir, tmp_path, capsys):
    out_dir = tmp_path / "report"
    argv = ["--model", tiny_dir, "--mode", "quick", "--out", str(out_dir), "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    assert main(argv) == 0                      # no command: the report
    printed = capsys.readouterr().out
    assert all(c.id in printed for c in CLAIMS) and f"report written to {out_dir / 'report.md'}" in printed
    results = json.loads((out_dir / "results.json").read_text())
    rows = {r["label"]: r for r in results["surgery"]["rows"]}
    assert rows["original"]["ppl"] > 1 and rows["SVD-LLM V1"]["params_kept"] < rows["SVD-LLM V1"]["params_original"]
    # V1 minimizes the activation error of every layer over all approximations of rank <= d (whitened
    # Eckart-Young), so it is lowest among the rows whose every layer has rank <= d; V2's allocation gives
    # some layers more than d and is not covered
    uniform = [r for r in rows.values() if r["method"] is not None and max(r["ranks"]) <= r["d"]]
    assert len(uniform) >= 6 and rows["SVD-LLM V1"] in uniform
    assert rows["SVD-LLM V1"]["activation_fraction"] <= min(r["activation_fraction"] for r in uniform) + 1e-9
    assert set(results["verdicts"]) == {c.id for c in CLAIMS}
    assert results["command"].startswith("gbd-audit report --model")
    cached = sorted((tmp_path / "cache" / "runs").iterdir())
    assert len(cached) == len(rows)
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main(argv) == 0                      # a re-run reads every configuration from the cache
    assert [p.stat().st_mtime_ns for p in cached] == mtimes
    report = (out_dir / "report.md").read_text()
    assert report.count("![") >= 5 and Path(out_dir / "phase.png").is_file()
    assert "matches SHA256SUMS" in report and "MISMATCH" not in report
    assert_no_absolute_path(report + (out_dir / "results.json").read_text(), tmp_path, tiny_dir)
    label = json.loads(cached[0].read_text())["row"]["label"]
    cached[0].write_text("{}")                  # valid JSON of the wrong shape: a miss, recomputed
    surgery_out = tmp_path / "surgery-out"
    assert main(["surgery", "--model", tiny_dir, "--mode", "quick", "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", "--only", label, "--out", str(surgery_out)]) == 0
    recomputed = json.loads(cached[0].read_text())["row"]
    assert {**recomputed, "seconds": 0} == {**rows[label], "seconds": 0}
    written = json.loads((surgery_out / "surgery.json").read_text())
    assert [r["label"] for r in written["surgery"]["rows"]] == [label]
    assert written["surgery"]["rows"][0]["ppl"] == recomputed["ppl"] and written["model"]["device"] == "cpu"
    page = (surgery_out / "surgery.md").read_text()
    assert "The model ran on cpu" in page and label in page
    assert_no_absolute_path(page, tmp_path, tiny_dir)


def assert_no_absolute_path(text: str, *local: str | Path) -> None:
    """No local folder (the test's, the data folder, the checkout, the Python prefix) and nothing shaped like an
    absolute path appears in ``text``."""
    for folder in (*local, data_dir(), Path(__file__).resolve().parents[1], sys.prefix, "site-packages"):
        assert str(folder) not in text, folder
    assert not re.findall(r"(?<![\w.)])/(?:[\w.-]+/)+[\w.-]+", text)


def test_unknown_configuration_label_is_a_clear_error(tiny_dir, capsys, tmp_path):
    argv = ["surgery", "--model", tiny_dir, "--mode", "quick", "--only", "nonsense", "--cache-dir", str(tmp_path),
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no configuration labelled ['nonsense']" in err and "SVD-LLM V1" in err


def test_unknown_dtype_is_one_line_error(tiny_dir, capsys, tmp_path):
    argv = ["surgery", "--model", tiny_dir, "--mode", "quick", "--dtype", "float8", "--cache-dir", str(tmp_path)]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown --dtype 'float8'" in err and "Traceback" not in err
    assert not list(tmp_path.glob("calibration-*"))  # refused before the calibration


def test_bfloat16_rows_and_measured_nll_change(tiny_dir, tmp_path):
    loaded = load_model(tiny_dir)
    part = surgery_part(loaded, "attn_out", 0.25, "quick", 3, tmp_path, only=["original"], progress=False,
                        dtype="bfloat16")
    assert [r["ppl_dtype"] for r in part["rows"]] == ["bfloat16"]
    check = part["dtype_check"]
    assert check["dtype"] == "bfloat16" and 0 < abs(check["nll_relative_change"]) < 1e-2
    assert check["nll_relative_change"] == pytest.approx(
        (check["dtype_nll"] - check["float32_nll"]) / check["float32_nll"], rel=1e-12)
    default = surgery_part(loaded, "attn_out", 0.25, "quick", 3, tmp_path, only=["original"], progress=False)
    assert default["dtype_check"] is None and default["rows"][0]["ppl_dtype"] == "float32"
    assert default["rows"][0]["ppl"] == pytest.approx(part["rows"][0]["ppl"], rel=1e-2)
    unigram = default["unigram"]         # fitted on the calibration text, on the rows' windows
    assert len(unigram["window_nll"]) == len(default["rows"][0]["ppl_window_nll"]) and unigram["ppl"] > 1


def test_seed_runs_recalibrate_v1_v2_and_gbd_with_each_further_seed(tiny_dir, tmp_path):
    from experiments.audit.results import Row, typed
    from experiments.runs.modes import MODES
    from experiments.runs.surgery import seed_runs

    loaded = load_model(tiny_dir)
    quick = MODES["quick"]
    runs = seed_runs(loaded, quick, (4, 5), 8, tmp_path, "attn_out", progress=False, sample=Sample("random", 3))
    assert list(runs) == ["4", "5"] and all([r["method"] for r in rows] == ["v1", "v2", "gbd"] for rows in runs.values())
    # evaluated on the run's one draw (seed 3), not on a draw of their calibration seed: the rows stay paired;
    # perplexity only (the spread over seeds is of PPL, activation and Frobenius error)
    first = runs["4"][0]
    drawn = Sample("random", 3).draw(first["ppl_windows_available"], quick.ppl_windows, "windows")
    assert all(tuple(r["ppl_window_index"]) == drawn for rows in runs.values() for r in rows)
    assert not any(key.startswith("hellaswag") for rows in runs.values() for r in rows for key in r)
    for r in runs["4"]:                  # a row of the typed results schema, HellaSwag fields None
        assert typed(Row, r, "seed row").hellaswag_n is None
    # other calibration windows, other second moments: V1's activation error differs between the seeds
    assert runs["4"][0]["activation_fraction"] != runs["5"][0]["activation_fraction"]
    assert len(list((tmp_path / "runs").iterdir())) == 6


def test_sample_first_is_an_explicit_option_recorded_with_the_rows(tiny_dir, tmp_path):
    """Random windows and items by default; --sample first takes the first k, and the run records how it drew."""
    written = {}
    for how in ("random", "first"):
        out = tmp_path / how
        assert main(["surgery", "--model", tiny_dir, "--mode", "quick", "--cache-dir", str(tmp_path / "cache"),
                     "--quiet", "--only", "original", "--sample", how, "--out", str(out)]) == 0
        written[how] = json.loads((out / "surgery.json").read_text())["surgery"]
    first, random = written["first"]["rows"][0], written["random"]["rows"][0]
    assert first["ppl_window_index"] == [0, 1] and first["hellaswag_item_index"] == list(range(40))
    assert random["ppl_window_index"] != [0, 1] and random["hellaswag_item_index"] != list(range(40))
    assert "the first 2 of" in written["first"]["sample"]["windows"]
    assert "at random" in written["random"]["sample"]["windows"] and written["random"]["sample"]["seed"] == 3
    with pytest.raises(SystemExit):
        main(["surgery", "--sample", "stratified"])
