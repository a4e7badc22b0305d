"""Calibration windows and streamed input second moments on a tiny random GPT-NeoX."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from experiments.cache import cache_key
from experiments.errors import GbdError
from experiments.model.adapters import adapter_for
from experiments.model.hooks import block_input_moments
from experiments.model.moments import CrossMoments, InputMoments, calibration_batch, second_moments

N, T = 4, 16


def tiny_neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    config = GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                           vocab_size=128, max_position_embeddings=64)
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model() -> GPTNeoXForCausalLM:
    return tiny_neox()


@pytest.fixture(scope="module")
def names(model) -> list[str]:
    adapter = adapter_for(model)
    return adapter.target_names(model, "attn_out") + adapter.target_names(model, "mlp_out")


@pytest.fixture(scope="module")
def input_ids() -> torch.Tensor:
    return torch.randint(0, 128, (N, T), generator=torch.Generator().manual_seed(1))


class CharTokenizer:
    """One token per character (code point mod 128)."""

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 128 for c in text]}


class ForwardCounter:
    """Context manager counting the model's forward calls; raises at call ``fail_at`` (simulated interruption)."""

    def __init__(self, model, fail_at: int | None = None):
        self.model, self.calls, self.fail_at = model, 0, fail_at

    def __enter__(self) -> ForwardCounter:
        self.handle = self.model.register_forward_pre_hook(self)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def __call__(self, module, args) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")


def reference_moments(model, names, input_ids) -> dict[str, np.ndarray]:
    """X^T X from inputs captured by plain forward hooks, one full-batch forward, numpy float64."""
    captured: dict[str, np.ndarray] = {}

    def capture(name):
        def hook(module, args, out) -> None:
            captured[name] = args[0].detach().double().numpy()
        return hook

    handles = [model.get_submodule(n).register_forward_hook(capture(n)) for n in names]
    with torch.no_grad():
        model(input_ids)
    for h in handles:
        h.remove()
    return {n: np.einsum("bti,btj->ij", captured[n], captured[n]) for n in names}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.linalg.norm(a[name] - b[name]) <= rtol * np.linalg.norm(b[name]), name


def test_second_moments_match_independent_computation(model, names, input_ids):
    sigmas = second_moments(model, names, input_ids, batch_size=2, progress=False)
    assert_same(sigmas, reference_moments(model, names, input_ids), rtol=1e-10)
    for name, sigma in sigmas.items():
        assert sigma.dtype == np.float64 and sigma.shape == (model.get_submodule(name).in_features,) * 2
        assert np.allclose(sigma, sigma.T) and np.linalg.eigvalsh(sigma).min() > -1e-9 * np.trace(sigma)
    assert not any(model.get_submodule(n)._forward_pre_hooks for n in names)  # hooks removed


def test_calibration_batch_is_seeded_windows_of_the_text():
    text = "".join(chr(32 + i % 90) for i in range(500))
    ids = CharTokenizer()(text)["input_ids"]
    a, b = (calibration_batch(CharTokenizer(), text, 5, 20, seed=3) for _ in range(2))
    assert a.shape == (5, 20) and a.dtype == torch.long and torch.equal(a, b)
    assert not torch.equal(a, calibration_batch(CharTokenizer(), text, 5, 20, seed=4))
    assert all(any(ids[s:s + 20] == row for s in range(len(ids) - 19)) for row in a.tolist())
    with pytest.raises(GbdError, match="fewer than"):
        calibration_batch(CharTokenizer(), "short", 1, 20, seed=0)


def test_cache_is_written_atomically_and_reused(model, names, input_ids, tmp_path):
    cache = tmp_path / "sigma.pt"
    first = second_moments(model, names, input_ids, progress=False, cache=cache, checkpoint_every=1)
    assert cache.is_file() and [p.name for p in tmp_path.iterdir()] == ["sigma.pt"]  # no temp file left
    with ForwardCounter(model) as counter:
        again = second_moments(model, names, input_ids, progress=False, cache=cache)
    assert counter.calls == 0
    assert_same(again, first, rtol=0.0)


def test_interrupted_run_resumes_to_the_same_result(model, names, input_ids, tmp_path):
    cache = tmp_path / "sigma.pt"
    with ForwardCounter(model, fail_at=3), pytest.raises(KeyboardInterrupt):
        second_moments(model, names, input_ids, progress=False, cache=cache, checkpoint_every=1)
    assert not any(model.get_submodule(n)._forward_pre_hooks for n in names)
    with ForwardCounter(model) as counter:
        resumed = second_moments(model, names, input_ids, progress=False, cache=cache, checkpoint_every=1)
    assert counter.calls == N - 2  # the 2 batches checkpointed before the interruption are skipped
    assert_same(resumed, second_moments(model, names, input_ids, progress=False), rtol=1e-12)


def test_cache_with_another_key_is_not_reused(model, names, input_ids, tmp_path):
    cache = tmp_path / "sigma.pt"
    second_moments(model, names[:1], input_ids[:1], progress=False, cache=cache)
    with ForwardCounter(model) as counter, pytest.warns(UserWarning, match="ignoring calibration cache"):
        other = second_moments(model, names, input_ids[:2], progress=False, cache=cache)
    assert counter.calls == 2
    assert_same(other, reference_moments(model, names, input_ids[:2]), rtol=1e-10)


def test_cache_key_separates_parts():
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key("a", b"b") == cache_key(b"a", "b")


def test_non_finite_moment_is_reported_by_layer(names, input_ids):
    bad = tiny_neox()
    with torch.no_grad():
        bad.gpt_neox.embed_in.weight.fill_(float("nan"))
    with pytest.raises(GbdError, match=re.escape(names[0])):
        second_moments(bad, names, input_ids[:1], progress=False)


@pytest.mark.parametrize("content", [[1, 2, 3], torch.zeros(3), {"key": 7}, {"key": "k", "rows_done": 0,
                                     "complete": True, "sums": {"x": torch.zeros(2, 2, dtype=torch.float32)}}])
def test_a_cache_file_of_another_kind_is_ignored_and_recomputed(model, names, input_ids, tmp_path, content):
    cache = tmp_path / "sigma.pt"
    torch.save(content, cache)
    with pytest.warns(UserWarning, match="not a calibration state"):
        sigmas = second_moments(model, names, input_ids[:2], progress=False, cache=cache)
    assert_same(sigmas, reference_moments(model, names, input_ids[:2]), rtol=1e-10)


def test_a_negative_seed_is_a_clear_error():
    with pytest.raises(GbdError, match="seed must be >= 0"):
        calibration_batch(CharTokenizer(), "x" * 100, 2, 10, seed=-1)


def test_a_calibration_cache_of_another_code_version_is_not_reused(model, names, input_ids, tmp_path, monkeypatch):
    import experiments.model.moments as calibration

    cache = tmp_path / "sigma.pt"
    second_moments(model, names, input_ids[:1], progress=False, cache=cache)
    monkeypatch.setattr(calibration, "code_version", lambda *a: "fixed code")
    with ForwardCounter(model) as counter, pytest.warns(UserWarning, match="code version"):
        second_moments(model, names, input_ids[:1], progress=False, cache=cache)
    assert counter.calls == 1


def test_a_cache_made_on_another_device_is_not_reused(model, names, input_ids, tmp_path, monkeypatch):
    """float32 activations differ between devices: the state's key names the device it was measured on."""
    from experiments.model import moments as calibration

    cache = tmp_path / "sigma.pt"
    second_moments(model, names, input_ids, progress=False, cache=cache)
    monkeypatch.setattr(calibration, "device_of", lambda m: "cuda (another device)")
    with ForwardCounter(model) as counter, pytest.warns(UserWarning, match="ignoring calibration cache"):
        second_moments(model, names, input_ids, progress=False, cache=cache)
    assert counter.calls == N


def integer_rows(seed: int, tokens: int, n: int) -> torch.Tensor:
    """(tokens, n) float32 of small integers: every product and partial sum of X^T X is exact in
    float64, so any order of summation gives the same bits."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 9, (tokens, n), generator=gen).to(torch.float32)


def split(x: torch.Tensor, cuts: list[int]) -> list[torch.Tensor]:
    """``x`` cut into consecutive batches at the sorted, distinct positions ``cuts``."""
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(x))), len(x)]
    return [x[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), tokens=st.integers(1, 40), n=st.integers(1, 6),
       cuts=st.lists(st.integers(0, 40), max_size=6))
def test_input_moments_is_x_transpose_x_whatever_the_batch_split(seed, tokens, n, cuts):
    x = integer_rows(seed, tokens, n)
    acc = InputMoments()
    for batch in split(x, cuts):
        acc.add_batch(batch.reshape(1, -1, n))        # (..., n): a (1, T, n) hidden-state batch
    assert acc.sum.dtype == torch.float64 and acc.tokens == tokens
    assert torch.equal(acc.sum, x.double().T @ x.double())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(0, 30), max_size=5))
def test_input_moments_of_real_valued_batches_agree_with_numpy_within_float64_rounding(seed, cuts):
    """Random float64 activations: the streamed sum equals numpy's one-shot X^T X to float64
    rounding (the summation order differs: |error_ij| <= 30 u sum_t |x_ti x_tj| <= 30 u max_i
    Sigma_ii, 3.3e-15 of the largest entry for 30 tokens; 1e-13 is ample)."""
    scales = 10.0 ** np.arange(-2, 3)
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(30, 5)) * scales)
    acc = InputMoments()
    for batch in split(x, cuts):
        acc.add_batch(batch)
    want = x.numpy().T @ x.numpy()
    assert np.abs(acc.sum.numpy() - want).max() <= 1e-13 * np.abs(want).max()


def test_cross_moments_is_x_transpose_y_and_refuses_unpaired_batches():
    x, y = integer_rows(0, 12, 3), integer_rows(1, 12, 5)
    acc = CrossMoments()
    for bx, by in zip(split(x, [4, 9]), split(y, [4, 9])):
        acc.add_batch(bx, by)
    assert acc.tokens == 12 and torch.equal(acc.sum, x.double().T @ y.double())
    with pytest.raises(GbdError, match="hold 2 and 3 tokens"):
        acc.add_batch(x[:2], y[:3])
    with pytest.raises(GbdError, match="the sum so far"):
        acc.add_batch(y, y)                           # a 5 x 5 batch into the 3 x 5 sum


def test_moments_state_round_trip_continues_the_same_sum():
    x = integer_rows(2, 20, 4)
    first = InputMoments()
    first.add_batch(x[:7])
    state = first.state_dict()
    first.add_batch(x[7:])                  # the state is a copy: later batches do not reach it
    assert state["tokens"] == 7
    assert torch.equal(state["sum"], x[:7].double().T @ x[:7].double())
    resumed = InputMoments()
    resumed.load_state_dict(state)
    resumed.add_batch(x[7:])
    assert resumed.tokens == first.tokens == 20 and torch.equal(resumed.sum, first.sum)
    empty = InputMoments()
    empty.load_state_dict(InputMoments().state_dict())
    assert empty.sum is None and empty.tokens == 0


ZEROS = torch.zeros(2, 2, dtype=torch.float64)


@pytest.mark.parametrize("state", [ZEROS, {"sum": None, "tokens": 3}, {"sum": ZEROS, "tokens": -1},
                                   {"sum": ZEROS.float(), "tokens": 1},
                                   {"sum": ZEROS, "tokens": 1.0},
                                   {"sum": ZEROS, "tokens": 1, "extra": 0}])
def test_a_malformed_moment_state_is_refused(state):
    with pytest.raises(ValueError, match="not a moment state"):
        InputMoments().load_state_dict(state)


def test_a_cache_file_of_the_older_format_is_a_miss_not_wrong_data(model, names, input_ids,
                                                                   tmp_path):
    """A state written before InputMoments (name -> bare float64 sum under "sums") with the current
    key: ignored and recomputed, never read as sums (doubled here, so reading them would show)."""
    cache = tmp_path / "sigma.pt"
    second_moments(model, names, input_ids, progress=False, cache=cache)
    state = torch.load(cache, weights_only=True)
    old = {k: v for k, v in state.items() if k != "moments"}
    old["sums"] = {name: 2 * m["sum"] for name, m in state["moments"].items()}
    torch.save(old, cache)
    with ForwardCounter(model) as counter, pytest.warns(UserWarning, match="an older format"):
        sigmas = second_moments(model, names, input_ids, progress=False, cache=cache)
    assert counter.calls == N
    assert_same(sigmas, reference_moments(model, names, input_ids), rtol=1e-10)
    state["moments"][names[0]] = state["moments"][names[0]]["sum"]    # one entry in the old form
    torch.save(state, cache)
    with pytest.warns(UserWarning, match="an older format"):
        second_moments(model, names, input_ids, progress=False, cache=cache)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_block_input_moments_are_the_hidden_states_entering_each_block(model, input_ids,
                                                                       batch_size):
    """H_k against the model's own hidden_states[k] (the residual stream entering block k), one
    full forward."""
    with torch.no_grad():
        hidden = model(input_ids, output_hidden_states=True).hidden_states
    H = block_input_moments(model, input_ids, batch_size)
    assert len(H) == len(adapter_for(model).blocks(model))
    for k, h in enumerate(H):
        want = np.einsum("bti,btj->ij", hidden[k].double().numpy(), hidden[k].double().numpy())
        assert h.dtype == torch.float64
        assert np.linalg.norm(h.numpy() - want) <= 1e-10 * np.linalg.norm(want)
    assert not any(b._forward_pre_hooks for b in adapter_for(model).blocks(model))
