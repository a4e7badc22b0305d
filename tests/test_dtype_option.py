"""The opt-in ``--dtype bfloat16``: refused clearly when unknown, and when given, every row's perplexity says its
dtype and the uncompressed model's NLL change is measured."""
from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from experiments.cli import main
from experiments.loading import load_model
from experiments.reproduce import surgery_part


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny) -> str:
    torch.manual_seed(1)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, vocab_size=50304, max_position_embeddings=2048))
    return save_tiny(model, tmp_path_factory.mktemp("tiny-dtype"), True)


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
