"""The paper's own setting one flag away: a GPT-NeoX with Pythia-70m's published configuration (random weights,
saved with the Pythia tokenizer of the shared data) runs `gbd-audit report --model FOLDER --mode quick` offline."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from experiments.audit.ledger import CLAIMS
from experiments.cli import main

PYTHIA_70M = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                  rotary_pct=0.25, use_parallel_residual=True, vocab_size=50304, max_position_embeddings=2048,
                  hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False)


@pytest.mark.slow
def test_report_on_a_pythia_70m_shaped_model(tmp_path, save_tiny, capsys):
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_70M))
    folder = save_tiny(model, tmp_path / "pythia-70m-random", True)
    out = tmp_path / "report"
    assert main(["report", "--model", folder, "--mode", "quick", "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"]) == 0
    assert f"report written to {out / 'report.md'}" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["model_type"] == "gpt_neox" and results["model"]["hidden_size"] == 512
    assert results["model"]["layers"] == 6 and results["model"]["vocab_size"] == 50304
    surgery = results["surgery"]
    assert surgery["d"] == 128 and surgery["D"] == 512          # the paper's d/D = 0.25 of Pythia-70m's W_O
    rows = {r["label"]: r for r in surgery["rows"]}
    assert rows["SVD-LLM V1"]["params_kept"] == 6 * (2 * 128 * 512 + 512)   # two factors and the dense bias
    assert set(results["verdicts"]) == {c.id for c in CLAIMS}
