"""Bad input from a hostile user, each once a stack trace: now one clear line (exit status 2), or valid input
handled (a zero layer, a short context), with every check that needs no calibration made before it."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from experiments import reproduce
from experiments.cli import main
from experiments.compress import compress, errors, method_names
from experiments.data import data_dir
from experiments.errors import GbdError
from experiments.model import loading
from experiments.model.loading import load_model
from experiments.model.lowrank import read_targets
from experiments.runs.context import fit_to_context
from experiments.runs import surgery
from experiments.runs.modes import MODES as BUDGETS
from experiments.runs.phase import phase_diagram
from theory.stopping import StoppingRule

VOCAB = 50304     # the GPT-NeoX-20B tokenizer of the shared data
ATTN = "gpt_neox.layers.{}.attention.dense"


def neox(edit=None) -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                             intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=2048))
    if edit is not None:
        with torch.no_grad():
            edit(model)
    return model


def zero_layer(model) -> None:
    model.get_submodule(ATTN.format(1)).weight.zero_()
    model.get_submodule(ATTN.format(1)).bias.zero_()


def nan_in_layer(index: int):
    def edit(model) -> None:
        model.get_submodule(ATTN.format(index)).weight[0, 0] = float("nan")
    return edit


def fails_with(argv: list[str], capsys, message: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gbd-audit: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err
    return err


def forbid(monkeypatch, module, name: str) -> None:
    """Make ``module.name`` fail the test if called: the work it starts must not begin."""
    def called(*a, **kw):
        raise AssertionError(f"{name} was called: work started before the check")
    monkeypatch.setattr(module, name, called)


# ------------------------------------------------------------------------------------------- zero layers

def stack_with_a_zero_layer(seed: int = 0):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((8, 8)) for _ in range(3)]
    Ws[1][:] = 0.0
    X = rng.standard_normal((8, 50))
    return Ws, [X @ X.T] * 3


@pytest.mark.parametrize("method", method_names())
def test_a_zero_layer_gets_defined_fractions_from_every_compressor(method):
    Ws, Ss = stack_with_a_zero_layer()
    c = compress(Ws, Ss, None, method, 2, lam=1.0, allocation="uniform",
                 stopping=StoppingRule(stall_tol=1e-10, max_sweeps=30))
    err = errors(Ws, Ss, c)
    assert err["per_layer"][1]["frobenius_fraction"] == err["per_layer"][1]["activation_fraction"] == 0.0
    assert np.allclose(c.W_hats[1], 0.0)                  # a zero layer is approximated by zero
    frob = sum(np.sum((W - Wh) ** 2) for W, Wh in zip(Ws, c.W_hats)) / sum(np.sum(W * W) for W in Ws)
    assert err["frobenius_fraction"] == pytest.approx(frob) and 0 < frob < 1
    zeros = [np.zeros((8, 8))] * 3
    assert errors(zeros, Ss, compress(zeros, Ss, None, method, 2, allocation="uniform"))["activation_fraction"] == 0


def test_the_phase_diagram_of_an_all_zero_stack_is_defined():
    phase = phase_diagram([np.zeros((6, 6))] * 2, 2, (0.0, 1.0, math.inf), progress=False)
    assert [p["frobenius_fraction"] for p in phase["points"]] == [0.0] * 6 and phase["eckart_young_fraction"] == 0.0


@pytest.fixture(scope="module")
def zero_dir(tmp_path_factory, save_tiny) -> str:
    return save_tiny(neox(zero_layer), tmp_path_factory.mktemp("zero-layer"), True)


def test_a_zero_layer_from_the_command_line(zero_dir, tmp_path, capsys):
    assert main(["phase", "--model", zero_dir, "--mode", "quick", "--quiet"]) == 0
    argv = ["surgery", "--model", zero_dir, "--mode", "quick", "--cache-dir", str(tmp_path), "--quiet",
            "--only", "original", "SVD-LLM V1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| SVD-LLM V1 |" in out and "nan" not in out


# ------------------------------------------------------------------------------------------- model context

def test_calibration_windows_are_clipped_to_the_model_context():
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=256))
    budget, notes = fit_to_context(BUDGETS["full"], model)
    assert budget.calib_T == 256 and budget.calib_n == BUDGETS["full"].calib_n and "2048 to 256" in notes[0]
    fits = dataclasses.replace(BUDGETS["quick"], calib_T=256)
    assert fit_to_context(fits, model) == (fits, [])


def test_a_short_context_model_runs_from_the_command_line(tmp_path, save_tiny, capsys):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64))
    path = save_tiny(gpt2, tmp_path / "gpt2", True)
    argv = ["surgery", "--model", path, "--mode", "quick", "--cache-dir", str(tmp_path / "c"), "--quiet",
            "--only", "original", "--sample", "first"]      # the first items' answers fit in 64 tokens
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "calibration windows clipped from 512 to 64 tokens" in captured.err and "| original |" in captured.out
    assert main(argv[:-2]) == 2             # a random draw holds an answer longer than the context: one line
    assert "longer than the model's context (64 tokens)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- early checks

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny) -> str:
    return save_tiny(neox(), tmp_path_factory.mktemp("tiny"), True)


def test_a_corrupt_hellaswag_file_fails_before_calibration(tiny_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for entry in data_dir().iterdir():
        if entry.name != "hellaswag":
            (data / entry.name).symlink_to(entry)
    (data / "hellaswag").mkdir()
    whole = (data_dir() / "hellaswag" / "hellaswag_val_full.txt.bz2").read_bytes()
    (data / "hellaswag" / "hellaswag_val_full.txt.bz2").write_bytes(whole[: len(whole) // 3])
    monkeypatch.setenv("GBD_DATA_DIR", str(data))
    from experiments.runs import context
    forbid(monkeypatch, context, "second_moments")
    fails_with(["surgery", "--model", tiny_dir, "--mode", "quick", "--cache-dir", str(tmp_path / "c"), "--quiet"],
               capsys, "truncated or corrupt")


def test_unwritable_output_or_cache_folders_fail_before_any_work(tiny_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    forbid(monkeypatch, reproduce, "load_model")
    forbid(monkeypatch, reproduce, "audit_theory")
    forbid(monkeypatch, surgery, "prepare")
    fails_with(["report", "--model", tiny_dir, "--mode", "quick", "--out", str(blocker / "out"), "--cache-dir",
                str(tmp_path / "c")], capsys, "output folder")
    fails_with(["report", "--model", tiny_dir, "--mode", "quick", "--out", str(tmp_path / "out"), "--cache-dir",
                str(blocker / "c")], capsys, "cache folder")
    loaded = load_model(tiny_dir)
    with pytest.raises(GbdError, match="cache folder"):
        surgery.surgery_part(loaded, "attn_out", 0.25, "quick", 3, blocker / "c", progress=False)


@pytest.mark.parametrize("argv, message", [
    (["surgery", "--seed", "-1"], "--seed must be >= 0"),
    (["verify", "--seed", "-1"], "--seed must be >= 0"),
    (["surgery", "--ratio", "0"], "rank ratio"),
    (["report", "--ratio", "-0.5"], "rank ratio"),
])
def test_bad_options_fail_before_the_model_is_loaded(argv, message, tmp_path, monkeypatch, capsys):
    forbid(monkeypatch, loading, "load_model")
    forbid(monkeypatch, reproduce, "load_model")
    cache = ["--cache-dir", str(tmp_path)] if argv[0] != "verify" else []
    fails_with(argv + ["--mode", "quick", "--quiet"] + cache, capsys, message)


@pytest.mark.parametrize("device, message", [
    ("banana", "unknown device 'banana'"),
    ("meta", "only 'cpu' and 'cuda'"),
    pytest.param("cuda", "sees no CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU")),
    ("cuda:64", "CUDA GPU"),
])
def test_a_bad_device_fails_before_the_model_is_read(device, message, tiny_dir, tmp_path, monkeypatch, capsys):
    forbid(monkeypatch, loading, "_attempt")
    fails_with(["surgery", "--model", tiny_dir, "--device", device, "--mode", "quick", "--quiet", "--cache-dir",
                str(tmp_path)], capsys, message)
    monkeypatch.setenv("GBD_DEVICE", device)
    with pytest.raises(GbdError, match=message):
        load_model(tiny_dir)


def test_a_zero_ratio_through_the_api_fails_before_calibration(tiny_dir, tmp_path, monkeypatch):
    loaded = load_model(tiny_dir)
    forbid(monkeypatch, surgery, "prepare")
    with pytest.raises(GbdError, match="rank ratio"):
        surgery.surgery_part(loaded, "attn_out", 0.0, "quick", 3, tmp_path, progress=False)


# ------------------------------------------------------------------------------------------- broken models

@pytest.mark.parametrize("layer", [0, 1])
def test_a_non_finite_weight_is_named_by_its_own_layer(layer, tmp_path, save_tiny, capsys):
    path = save_tiny(neox(nan_in_layer(layer)), tmp_path / "nan", True)
    capsys.readouterr()
    for command in ("phase", "surgery"):
        err = fails_with([command, "--model", path, "--mode", "quick", "--quiet", "--cache-dir", str(tmp_path)],
                         capsys, ATTN.format(layer))
        assert ATTN.format(layer + 1) not in err


def test_non_finite_weights_through_the_api_name_the_layer():
    model = neox(nan_in_layer(2))
    with pytest.raises(GbdError, match=ATTN.format(2).replace(".", r"\.")):
        read_targets(model, "attn_out")
    with pytest.raises(GbdError, match="NaN"):
        phase_diagram([np.full((4, 4), np.nan)], 2, (0.0,), progress=False)


def test_a_non_finite_parameter_outside_the_targets_is_named_at_load(tmp_path, save_tiny):
    def nan_embedding(model) -> None:
        model.gpt_neox.embed_in.weight[3, 0] = float("inf")
    with pytest.raises(GbdError, match=r"parameter gpt_neox\.embed_in\.weight has NaN or infinite"):
        load_model(save_tiny(neox(nan_embedding), tmp_path / "inf", True))


def test_a_model_folder_without_a_tokenizer_says_so(tmp_path, save_tiny):
    path = save_tiny(neox(), tmp_path / "no-tokenizer", False)
    with pytest.raises(GbdError, match="tokenizer .* is missing"):
        load_model(path)


# ------------------------------------------------------------------------------------------- quiet output

def test_quiet_shows_no_progress_bar_and_no_git_message(tiny_dir, tmp_path, monkeypatch, capfd):
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.chdir(outside)
    argv = ["surgery", "--model", tiny_dir, "--mode", "quick", "--cache-dir", str(tmp_path / "c"), "--quiet",
            "--only", "original"]
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert "| original |" in captured.out
    assert "%|" not in captured.err and "it/s" not in captured.err and "fatal" not in captured.err, captured.err
    assert os.getcwd() == str(outside) and not Path(outside, ".git").exists()
