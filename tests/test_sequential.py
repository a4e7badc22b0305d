"""Sequential (error-propagating) compression: the reduced-rank regression's closed form and optimality, and the
block-by-block run on tiny models, checked against moments taken from full forwards of the partly compressed
model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from experiments.compress import Compression, compress
from experiments.errors import GbdError
from experiments.model.lowrank import installed, read_targets
from experiments.model.moments import model_fingerprint, second_moments
from experiments.model.sequential import (PropagatedMoments, propagated_error, reduced_rank_regression,
                                          sequential_compress)


def data(seed: int, n_out: int = 7, n_in: int = 6, tokens: int = 40, noise: float = 0.3):
    """W, original inputs X and perturbed inputs X~ = X + noise (as if earlier layers were compressed)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_out, n_in))
    X = rng.standard_normal((n_in, n_in)) @ rng.standard_normal((n_in, tokens))
    Xt = X + noise * rng.standard_normal(X.shape)
    return W, X, Xt, PropagatedMoments(X @ X.T, X @ Xt.T, Xt @ Xt.T)


def test_propagated_error_is_the_direct_residual():
    W, X, Xt, m = data(0)
    W_hat = np.random.default_rng(1).standard_normal(W.shape)
    assert propagated_error(W, W_hat, m) == pytest.approx(np.sum((W @ X - W_hat @ Xt) ** 2), rel=1e-10)


@pytest.mark.parametrize("damping", [0.0, 0.1, 10.0])
@pytest.mark.parametrize("d", [1, 3, 6])
def test_equals_v1_when_no_earlier_layer_is_compressed(d, damping):
    """Shrunk toward W, it is V1 on the damped moment Sigma + delta I, delta = damping mean(diag Sigma)."""
    W, X, _, _ = data(2)
    Sigma = X @ X.T
    b = np.arange(7.0)
    seq, note = reduced_rank_regression(W, Sigma, Sigma, d, b, damping)
    damped = Sigma + damping * np.mean(np.diag(Sigma)) * np.eye(len(Sigma))
    v1 = compress([W], [damped], [b], "v1", d).layers[0]
    assert note is None
    assert np.allclose(seq.W_hat, v1.W_hat, atol=1e-9) and np.allclose(seq.bias, v1.bias, atol=1e-9)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 5), noise=st.floats(0.01, 2.0))
def test_never_worse_than_v1_on_its_own_calibration_data(seed, d, noise):
    """J(seq) <= J(V1 fitted on the original inputs) and <= J(V1 fitted on the delivered inputs), same X, X~."""
    W, X, Xt, m = data(seed, noise=noise)
    J = lambda W_hat: float(np.sum((W @ X - W_hat @ Xt) ** 2))   # noqa: E731  (independent of the formula)
    seq = J(reduced_rank_regression(W, m.cross, m.sigma_tilde, d)[0].W_hat)
    for Sigma in (m.sigma, m.sigma_tilde):
        assert seq <= J(compress([W], [Sigma], None, "v1", d).W_hats[0]) * (1 + 1e-9) + 1e-9


@given(seed=st.integers(0, 10_000), d=st.integers(1, 5))
def test_is_the_minimum_over_random_rank_d_maps(seed, d):
    W, X, Xt, m = data(seed)
    rng = np.random.default_rng(seed + 1)
    seq = propagated_error(W, reduced_rank_regression(W, m.cross, m.sigma_tilde, d)[0].W_hat, m)
    for _ in range(5):   # perturb the optimum inside rank d: (U + E)(A + F)
        f = reduced_rank_regression(W, m.cross, m.sigma_tilde, d)[0]
        other = (f.B + 0.1 * rng.standard_normal(f.B.shape)) @ (f.A + 0.1 * rng.standard_normal(f.A.shape))
        assert seq <= propagated_error(W, other, m) * (1 + 1e-9)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 5), damping=st.floats(1e-3, 10.0))
def test_damped_solution_minimizes_the_penalized_objective(seed, d, damping):
    """J(W_hat) + delta ||W_hat - W||^2, delta = damping mean(diag Sigma~), written from X and X~ directly: the
    damped factors beat rank-d perturbations of themselves and the undamped solution."""
    W, X, Xt, m = data(seed, tokens=8)                 # fewer tokens than the penalty matters for
    delta = damping * np.mean(np.sum(Xt * Xt, axis=1))
    P = lambda W_hat: float(np.sum((W @ X - W_hat @ Xt) ** 2) + delta * np.sum((W_hat - W) ** 2))   # noqa: E731
    f = reduced_rank_regression(W, m.cross, m.sigma_tilde, d, damping=damping)[0]
    best = P(f.W_hat)
    assert best <= P(reduced_rank_regression(W, m.cross, m.sigma_tilde, d)[0].W_hat) * (1 + 1e-9) + 1e-9
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = (f.B + 0.1 * rng.standard_normal(f.B.shape)) @ (f.A + 0.1 * rng.standard_normal(f.A.shape))
        assert best <= P(other) * (1 + 1e-9)


@pytest.mark.parametrize("damping", [-0.1, float("nan"), float("inf")])
def test_bad_damping_is_refused(damping, tiny):
    W, _, _, m = data(0)
    with pytest.raises(GbdError, match="damping must be"):
        reduced_rank_regression(W, m.cross, m.sigma_tilde, 2, damping=damping)
    model, ids = tiny
    names, weights, biases = read_targets(model, "attn_out")
    with pytest.raises(GbdError, match="damping must be"):
        sequential_compress(model, names, weights, biases, ids, 4, damping)


def test_bad_rank_is_refused():
    W, _, _, m = data(0)
    with pytest.raises(GbdError, match="rank d=7"):
        reduced_rank_regression(W, m.cross, m.sigma_tilde, 7)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=64, max_position_embeddings=64)).eval()
    ids = torch.randint(0, 64, (3, 24), generator=torch.Generator().manual_seed(1))
    return model, ids


def test_on_a_model_layer_one_is_v1_and_every_layer_beats_v1_on_its_inputs(tiny):
    model, ids = tiny
    names, weights, biases = read_targets(model, "attn_out")
    before = model_fingerprint(model)
    sigmas = second_moments(model, names, ids, progress=False)
    comp, moments = sequential_compress(model, names, weights, biases, ids, 4)
    assert model_fingerprint(model) == before and type(model.get_submodule(names[0])).__name__ == "Linear"
    v1 = compress(weights, [sigmas[n] for n in names], biases, "v1", 4)
    assert np.allclose(moments[0].sigma, sigmas[names[0]], rtol=1e-10)
    assert np.allclose(moments[0].sigma_tilde, moments[0].sigma, rtol=1e-10)   # nothing before layer 1
    assert np.allclose(comp.layers[0].W_hat, v1.layers[0].W_hat, atol=1e-8)
    assert not np.allclose(moments[1].sigma_tilde, moments[1].sigma)             # layer 1's compression propagates
    for W, f, g, m in zip(weights, comp.layers, v1.layers, moments):
        assert propagated_error(W, f.W_hat, m) <= propagated_error(W, g.W_hat, m) * (1 + 1e-9)


def tiny_models() -> dict[str, torch.nn.Module]:
    """Seeded tiny random models of the three adapter families (4 blocks each), in float64."""
    torch.manual_seed(2)
    small = dict(vocab_size=64)
    return {"gpt-neox": GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                                         intermediate_size=32, max_position_embeddings=64, **small)),
            "llama": LlamaForCausalLM(LlamaConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                                                  num_key_value_heads=2, intermediate_size=32,
                                                  max_position_embeddings=64, **small)),
            "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=4, n_head=2, n_positions=64, **small))}


def full_forward_moments(model: torch.nn.Module, names: list[str], done: Compression, name: str,
                         ids: torch.Tensor) -> PropagatedMoments:
    """The reference: X from a full forward of the original model, X~ from a full forward with ``done`` (the
    earlier layers' factors) installed at ``names``; tokens of all rows stacked."""
    def inputs() -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = model.get_submodule(name).register_forward_pre_hook(
            lambda m, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
        with torch.no_grad():
            model(ids, use_cache=False)
        handle.remove()
        return torch.cat(seen).to(torch.float64)
    X = inputs()
    with installed(model, names, done):
        Xt = inputs()
    return PropagatedMoments(*(a.numpy() for a in (X.T @ X, X.T @ Xt, Xt.T @ Xt)))


@pytest.mark.parametrize("family", ["gpt-neox", "llama", "gpt2"])
@pytest.mark.parametrize("kind, every", [("attn_out", 1), ("mlp_out", 2)])
def test_blockwise_moments_and_factors_equal_full_forward_ones(family, kind, every):
    """Every layer's (Sigma, C, Sigma~) and factors equal those from full forwards with layers 1..l-1 compressed
    (every second block's target: blocks without one are crossed too)."""
    model = tiny_models()[family].double().eval()
    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(4))
    names, weights, biases = read_targets(model, kind)
    names, weights, biases = names[::every], weights[::every], biases[::every]
    d = 3
    comp, moments = sequential_compress(model, names, weights, biases, ids, d)
    for l, (name, W, b, m) in enumerate(zip(names, weights, biases, moments)):
        ref = full_forward_moments(model, names[:l], Compression("ref", comp.layers[:l], [d] * l, []), name, ids)
        for got, want in zip((m.sigma, m.cross, m.sigma_tilde), (ref.sigma, ref.cross, ref.sigma_tilde)):
            assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)
        factors = reduced_rank_regression(W, ref.cross, ref.sigma_tilde, d, b)[0]
        assert np.linalg.norm(comp.layers[l].W_hat - factors.W_hat) <= 1e-8 * np.linalg.norm(factors.W_hat)
    assert not np.allclose(moments[-1].sigma_tilde, moments[-1].sigma)   # the compressions did propagate


def test_targets_out_of_depth_order_are_refused(tiny):
    model, ids = tiny
    names, weights, biases = read_targets(model, "attn_out")
    with pytest.raises(GbdError, match="one target per block"):
        sequential_compress(model, names[::-1], weights[::-1], biases[::-1], ids, 4)
