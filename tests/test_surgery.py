"""experiments.model.lowrank on tiny random models of every adapter family (GPT-NeoX, Llama, GPT-2 Conv1D)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from experiments.compress import compress
from experiments.errors import GbdError
from experiments.model import moments as calibration
from experiments.model.adapters import adapter_for
from experiments.model.lowrank import (MANIFEST, LowRankLinear, compress_model, install, installed, load_compressed,
                                       read_targets, save_compressed, swapped)

D, VOCAB = 32, 128
TOKENIZER_FILE = Path(__file__).resolve().parents[2] / "shared/data/gpt-neox-20b-tokenizer/20B_tokenizer.json"


def neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=D, num_hidden_layers=3, num_attention_heads=4,
                                            intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64))


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                        max_position_embeddings=64))


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=D, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))


TOKENS = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))


def second_moments(model, kind: str = "attn_out") -> dict[str, np.ndarray]:
    """Sigma = sum_t x_t x_t^T of each target's input over TOKENS (experiments.model.moments, tested there)."""
    names = adapter_for(model).target_names(model, kind)
    return calibration.second_moments(model, names, TOKENS, batch_size=len(TOKENS), progress=False)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


@pytest.mark.parametrize("build", [neox, llama, gpt2], ids=["gpt-neox", "llama", "gpt2-conv1d"])
@pytest.mark.parametrize("method", ["gbd", "v1", "basis-sharing"])
def test_full_rank_installation_reproduces_logits(build, method):
    model = build().eval()
    before = logits(model)
    _, names = compress_model(model, "attn_out", second_moments(model), method, D)
    assert all(isinstance(model.get_submodule(n), LowRankLinear) for n in names)
    assert torch.allclose(logits(model), before, atol=1e-5)


def test_parameter_count_falls_as_2dD_and_generate_works():
    model = neox().eval()
    n0 = sum(p.numel() for p in model.parameters())
    d = 8
    compress_model(model, "attn_out", second_moments(model), "gbd", d)
    n1 = sum(p.numel() for p in model.parameters())
    assert n0 - n1 == 3 * (D * D - 2 * d * D)  # each D x D weight -> 2 d D (its bias of D kept)
    out = model.generate(TOKENS[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9)


def test_shared_basis_counts_once_in_the_model():
    model = neox().eval()
    n0 = sum(p.numel() for p in model.parameters())
    compression, names = compress_model(model, "attn_out", second_moments(model), "basis-sharing", 8)
    first = [model.get_submodule(n).first for n in names]
    assert first[0] is first[1] and first[1] is not first[2]
    dense_params = 3 * (D * D + D)
    assert n0 - sum(p.numel() for p in model.parameters()) == dense_params - compression.n_params


@pytest.mark.parametrize("build,method", [(neox, "basis-sharing"), (gpt2, "gbd"), (llama, "v1")],
                         ids=["gpt-neox-shared", "gpt2-tied-embeddings", "llama"])
def test_save_load_round_trip_gives_identical_logits(tmp_path, build, method):
    model = build().eval()
    compress_model(model, "attn_out", second_moments(model), method, 8)
    save_compressed(model, None, tmp_path / "m")
    loaded, tokenizer = load_compressed(tmp_path / "m")
    assert tokenizer is None
    assert torch.equal(logits(loaded), logits(model))
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in loaded.parameters()) == n


def test_round_trip_keeps_dtype_tied_embeddings_and_tokenizer(tmp_path):
    if not TOKENIZER_FILE.exists():
        pytest.skip(f"{TOKENIZER_FILE} absent")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_FILE))
    model = gpt2().eval()
    compress_model(model, "attn_out", second_moments(model), "v1", 8)
    model = model.to(torch.bfloat16)
    save_compressed(model, tokenizer, tmp_path / "m")
    loaded, tok = load_compressed(tmp_path / "m")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert loaded.get_submodule("transformer.h.0.attn.c_proj").first.weight.dtype == torch.bfloat16
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert tok("hello world").input_ids == tokenizer("hello world").input_ids
    assert torch.equal(logits(loaded), logits(model))


def test_install_checks_names_and_shapes():
    model = neox()
    adapter = adapter_for(model)
    sig = second_moments(model)  # attn_out: D x D
    c = compress([adapter.weight(model.get_submodule(n)) for n in sig], list(sig.values()), None, "v1", 4)
    names = adapter.target_names(model, "mlp_in")  # (64, 32) (out, in): not the factors' D x D
    with pytest.raises(GbdError, match="factors give"):
        install(model, names, c)
    with pytest.raises(GbdError, match="module names"):
        install(model, names[:2], c)
    with pytest.raises(GbdError, match="no second moment"):
        compress_model(model, "attn_out", {}, "v1", 4)


def test_loading_missing_or_corrupt_saves_is_refused(tmp_path):
    with pytest.raises(GbdError, match="no saved compressed model"):
        load_compressed(tmp_path / "absent")
    model = neox().eval()
    compress_model(model, "attn_out", second_moments(model), "gbd", 8)
    path = tmp_path / "m"
    save_compressed(model, None, path)
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(GbdError, match="corrupt"):
        load_compressed(path)
    manifest = {"format": 1, "modules": [{"name": "gpt_neox.layers.0.attention.dense", "n_in": D, "d": 4,
                                          "n_out": D, "has_bias": True, "shares_first_with": None}]}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(GbdError, match="do not match"):
        load_compressed(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(GbdError, match="corrupt"):
        load_compressed(path)
    (path / MANIFEST).unlink()
    with pytest.raises(GbdError, match=MANIFEST):
        load_compressed(path)


def test_installed_compression_is_undone_after_the_block_even_on_error():
    model = neox().eval()
    before = logits(model)
    names, weights, biases = read_targets(model, "attn_out")
    sig = second_moments(model)
    compression = compress(weights, [sig[n] for n in names], biases, "v1", 4)
    originals = [model.get_submodule(n) for n in names]
    with installed(model, names, compression):
        assert all(isinstance(model.get_submodule(n), LowRankLinear) for n in names)
        assert not torch.allclose(logits(model), before, atol=1e-5)
    assert [model.get_submodule(n) for n in names] == originals and torch.equal(logits(model), before)
    with pytest.raises(RuntimeError, match="inside"), installed(model, names, compression):
        raise RuntimeError("inside")
    assert [model.get_submodule(n) for n in names] == originals


@pytest.mark.parametrize("build", [neox, llama, gpt2], ids=["gpt-neox", "llama", "gpt2-conv1d"])
def test_swapped_modules_are_restored_after_the_block_even_on_error(build):
    model = build().eval()
    before = logits(model)
    names = adapter_for(model).target_names(model, "attn_out")
    originals = [model.get_submodule(n) for n in names]
    identities = {n: torch.nn.Identity() for n in names}
    with pytest.raises(RuntimeError, match="inside"), swapped(model, identities):
        assert [model.get_submodule(n) for n in names] == list(identities.values())
        assert not torch.allclose(logits(model), before, atol=1e-5)
        raise RuntimeError("inside")
    assert [model.get_submodule(n) for n in names] == originals
    assert torch.equal(logits(model), before)
    unknown = {names[0]: torch.nn.Identity(), "nowhere": torch.nn.Identity()}
    with pytest.raises(GbdError, match="no module 'nowhere'"), swapped(model, unknown):
        pass
    assert model.get_submodule(names[0]) is originals[0]    # refused before anything was swapped


def test_installed_parameters_count_a_shared_factor_once():
    from experiments.model.lowrank import module_parameters as installed_parameters

    model = neox()
    compression, names = compress_model(model, "attn_out", second_moments(model), "basis-sharing", 8)
    assert installed_parameters(model, names) == compression.n_params
    assert installed_parameters(model, names) < sum(p.numel() for n in names
                                                    for p in model.get_submodule(n).parameters())


def test_one_sided_fraction_is_eckart_young_for_rank_d_svd_and_zero_for_the_weight_itself():
    import numpy as np

    from experiments.methods.metrics import one_sided_fraction
    W = np.random.default_rng(0).normal(size=(6, 5))
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    rank2 = U[:, :2] * s[:2] @ Vt[:2]
    assert one_sided_fraction([W], [rank2]) == pytest.approx(np.sum(s[2:] ** 2) / np.sum(s ** 2), rel=1e-12)
    assert one_sided_fraction([W], [3.0 * W]) == pytest.approx(0.0, abs=1e-24)   # a scaled W has W's output space


def _biased(build):
    """The model with random nonzero biases on its attn_out targets (HF initializes them to zero)."""
    model = build().eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name in adapter_for(model).target_names(model, "attn_out"):
            bias = model.get_submodule(name).bias
            bias.copy_(0.5 * torch.randn(bias.shape, generator=gen))
    return model


@pytest.mark.parametrize("build", [neox, gpt2], ids=["gpt-neox", "gpt2-conv1d"])
def test_v1_keeps_the_bias_so_its_output_error_is_svd_llms_truncation_loss(build):
    """SVD-LLM keeps a layer's bias: on the same inputs X the installed layer's output error
    ||(W X + b) - (W_hat X + b_hat)||^2 is then V1's activation error alone, which SVD-LLM's theorem gives as
    the sum of the discarded squared singular values of W chol(Sigma). Projecting b would add
    T ||(I - P) b||^2 + cross terms (the bias is 0.5 per entry, the weights 0.02: far above the tolerance)."""
    model = _biased(build)
    sigmas = second_moments(model)
    names, weights, biases = read_targets(model, "attn_out")
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, args, out, n=n: seen.__setitem__(n, (args[0].detach(), out.detach()))) for n in names]
    logits(model)
    for h in hooks:
        h.remove()
    d = D // 4
    compression, _ = compress_model(model, "attn_out", sigmas, "v1", d)
    assert compression.bias_rule == "keep"
    for name, W, b, f in zip(names, weights, biases, compression.layers):
        assert np.array_equal(f.bias, b)
        x, y = seen[name]
        with torch.no_grad():
            error = float(((model.get_submodule(name)(x) - y).double() ** 2).sum())
        Sigma = np.asarray(sigmas[name], dtype=np.float64)
        discarded = np.linalg.svd(W @ np.linalg.cholesky(Sigma), compute_uv=False)[d:]
        assert error == pytest.approx(float(np.sum(discarded ** 2)), rel=1e-3)


@pytest.mark.parametrize("build", [neox, gpt2], ids=["gpt-neox", "gpt2-conv1d"])
def test_bias_option_projects_or_keeps_for_any_method(build):
    """bias_mode="project" gives V1 b_hat = P_out b; "keep" gives GBD b; the defaults are the other way round."""
    model = _biased(build)
    sigmas = second_moments(model)
    _, _, biases = read_targets(model, "attn_out")
    for method, default in (("v1", "keep"), ("basis-sharing", "keep"), ("gbd", "project"), ("bs-core", "project")):
        for mode, rule in (("method-default", default), ("keep", "keep"), ("project", "project")):
            c, _ = compress_model(_biased(build), "attn_out", sigmas, method, D // 4, bias_mode=mode)
            assert c.bias_rule == rule
            for f, b in zip(c.layers, biases):
                Q = np.linalg.qr(f.B)[0]
                expected = b if rule == "keep" else Q @ (Q.T @ b)
                assert np.allclose(f.bias, expected, atol=1e-12) and not np.allclose(f.bias, Q @ (Q.T @ b) if
                                                                                      rule == "keep" else b)


def test_one_sided_fraction_survives_lapacks_divide_and_conquer_not_converging(monkeypatch):
    """gesdd can fail to converge on an exactly low-rank matrix (it did once in a report run): the same fraction
    comes from gesvd instead of an error hours into a run."""
    from experiments.methods.metrics import one_sided_fraction

    rng = np.random.default_rng(5)
    W = rng.standard_normal((12, 9))
    rank3 = rng.standard_normal((12, 3)) @ rng.standard_normal((3, 9))
    want = one_sided_fraction([W], [rank3])

    def diverges(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")
    monkeypatch.setattr(np.linalg, "svd", diverges)
    assert one_sided_fraction([W], [rank3]) == pytest.approx(want, rel=1e-10) and 0 < want < 1
