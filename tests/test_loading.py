"""Model loading: every failure is a GbdError; local directories and the offline SmolLM2 GGUF load."""
from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, OPTConfig, OPTForCausalLM

from experiments.errors import GbdError
from experiments.model.adapters import adapter_for
from experiments.model.loading import load_model


@pytest.mark.parametrize("spec", ["/nonexistent/model.gguf", "/nonexistent/dir", "./missing"])
def test_missing_path_is_a_gbd_error(spec):
    with pytest.raises(GbdError, match="GBD_MODEL"):
        load_model(spec)


def test_env_var_names_the_model(monkeypatch):
    monkeypatch.setenv("GBD_MODEL", "/nonexistent/from-env.gguf")
    with pytest.raises(GbdError, match="from-env"):
        load_model()


def test_directory_without_config_is_a_gbd_error(tmp_path):
    with pytest.raises(GbdError, match="config.json"):
        load_model(str(tmp_path))


def test_unknown_architecture_is_a_gbd_error(tmp_path, save_tiny):
    opt = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                   vocab_size=64, max_position_embeddings=32, word_embed_proj_dim=16))
    with pytest.raises(GbdError, match="unknown architecture 'opt'"):
        load_model(save_tiny(opt, tmp_path, with_tokenizer=False))


def test_hub_id_while_offline_is_a_gbd_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GbdError, match="EleutherAI/pythia-70m.*hub"):
        load_model("EleutherAI/pythia-70m")


def test_local_directory_loads(tmp_path, save_tiny):
    torch.manual_seed(0)
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, vocab_size=50304, max_position_embeddings=64))
    loaded = load_model(save_tiny(neox, tmp_path, with_tokenizer=True))
    assert loaded.name == tmp_path.name and loaded.source == f"local directory {tmp_path.name}"  # no absolute path
    assert not loaded.model.training and loaded.tokenizer.pad_token == "<|endoftext|>"
    assert adapter_for(loaded.model).family == "gpt-neox"


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    loaded = load_model("smollm2")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert loaded.name == "SmolLM2-135M-Instruct.Q4_1" and "GGUF file" in loaded.source
    adapter = adapter_for(model)
    names = adapter.target_names(model, "attn_out")
    assert adapter.family == "llama" and len(names) == 30
    assert all(adapter.weight(model.get_submodule(n)).shape == (576, 576) for n in names)
    assert model.dtype == torch.float32 and tokenizer.pad_token is not None
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5)
