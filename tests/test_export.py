"""experiments.runs.export and ``gbd-audit compress``: the factored model, the dense checkpoint reloaded by plain
transformers and the in-memory compressed model give the same logits (tiny GPT-NeoX, Llama, GPT-2); lm-eval's
own ``hf`` model evaluates a dense export; bad options fail in one line before the model is read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_surgery import TOKENS, gpt2, llama, logits, neox, second_moments
from transformers import AutoModelForCausalLM

from experiments.cli import main
from experiments.data import hellaswag_items
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import LOCAL_TASK, write_local_task
from experiments.model import loading
from experiments.model.lowrank import LowRankLinear, compress_model, load_compressed, save_compressed
from experiments.runs import export

D_RANK = 8
# W_hat = B A in float64 then float32 (dense) against B (A x) in float32 (factored): the two roundings differ by a
# few float32 ulps per layer; logits of these random tiny models are O(1)
ATOL = 1e-5


def with_random_biases(model: torch.nn.Module) -> torch.nn.Module:
    """The seeded tiny model with seeded nonzero target biases (initialised to zero), so that b_hat != b."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name in export.adapter_for(model).target_names(model, "attn_out"):
            bias = model.get_submodule(name).bias
            if bias is not None:
                bias.copy_(torch.randn(bias.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("build", [neox, llama, gpt2], ids=["gpt-neox", "llama", "gpt2-conv1d"])
def test_factored_dense_and_in_memory_models_give_the_same_logits(build, tmp_path):
    model = with_random_biases(build())
    sigmas = second_moments(model)
    n_original = sum(p.numel() for p in model.parameters())
    compression, names = compress_model(model, "attn_out", sigmas, "v1", D_RANK, bias_mode="project")  # b_hat != b
    in_memory = logits(model)
    save_compressed(model, None, tmp_path / "factored")
    factored, _ = load_compressed(tmp_path / "factored")
    assert isinstance(factored.get_submodule(names[0]), LowRankLinear)
    assert sum(p.numel() for p in factored.parameters()) < n_original
    dense_model = with_random_biases(build())
    export.densify(dense_model, names, compression)
    export.save_dense(dense_model, None, tmp_path / "dense")
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    assert sum(p.numel() for p in dense.parameters()) == n_original
    assert not torch.allclose(logits(with_random_biases(build())), in_memory, atol=1e-3)   # compression changed them
    torch.testing.assert_close(logits(factored), in_memory, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits(dense), in_memory, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny, tiny_neox) -> str:
    return save_tiny(tiny_neox(2048), tmp_path_factory.mktemp("tiny"), True)


def test_compress_writes_a_dense_checkpoint_that_lm_eval_hf_evaluates(tiny_dir, tmp_path, capsys):
    out = tmp_path / "dense"
    argv = ["compress", "--model", tiny_dir, "--method", "v1", "--ratio", "0.25", "--mode", "quick", "--out",
            str(out), "--dense", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "dense model written to" in capsys.readouterr().out
    record = json.loads((out / export.RECORD).read_text())
    assert record["d"] == 8 and record["format"] == "dense" and record["calibration"]["seed"] == 3
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    write_local_task(tmp_path, hellaswag_items(limit=4))
    result = simple_evaluate(model="hf", model_args=f"pretrained={out},dtype=float32", tasks=[LOCAL_TASK],
                             task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                             device="cpu", batch_size=4)
    assert 0 <= result["results"][LOCAL_TASK]["acc,none"] <= 1
    assert result["n-samples"][LOCAL_TASK]["effective"] == 4


def test_compress_writes_a_factored_model_with_fewer_parameters(tiny_dir, tmp_path, tiny_neox):
    out = tmp_path / "factored"
    assert main(["compress", "--model", tiny_dir, "--method", "gbd", "--out", str(out), "--quiet", "--mode",
                 "quick", "--cache-dir", str(tmp_path / "cache")]) == 0
    record = json.loads((out / export.RECORD).read_text())
    assert record["target_parameters_kept"] == 3 * (2 * 8 * 32 + 32) < record["target_parameters_original"]
    model, tokenizer = load_compressed(out)
    original = sum(p.numel() for p in tiny_neox(2048).parameters())
    assert original - sum(p.numel() for p in model.parameters()) == 3 * (32 * 32 - 2 * 8 * 32)
    assert tokenizer is not None


def test_a_model_read_from_gguf_saves_once_its_quantizer_is_removed(tmp_path):
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    model = llama().eval()
    model.hf_quantizer = GgufHfQuantizer(GgufConfig(dequantize=True))     # as from_pretrained(gguf_file=...) leaves it
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    export.without_gguf_quantizer(model)
    export.save_dense(model, None, tmp_path / "dense")
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()), logits(model))


def test_a_bias_the_architecture_lacks_cannot_be_written_dense():
    model = llama().eval()
    compression, names = compress_model(llama().eval(), "attn_out", second_moments(model), "v1", D_RANK)
    compression.layers[0].bias = torch.ones(32).numpy()
    with pytest.raises(GbdError, match="no bias"):
        export.densify(model, names, compression)


@pytest.mark.parametrize("options, message", [
    (["--method", "svd-magic"], "unknown method 'svd-magic'"),
    (["--method", "v1", "--ratio", "1.5"], "rank ratio"),
    (["--method", "v1", "--ratio", "0"], "rank ratio"),
    (["--method", "v1", "--out-blocked"], "output folder"),
])
def test_bad_options_fail_in_one_line_before_the_model_is_read(options, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was read"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out" if "--out-blocked" in options else tmp_path / "out"
    argv = ["compress", *[o for o in options if o != "--out-blocked"], "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gbd-audit: error:") and err.count("\n") == 1 and message in err, err


def test_compress_help_shows_dense(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    assert "--dense" in capsys.readouterr().out
