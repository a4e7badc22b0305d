"""Calibration windows and streamed input second moments on a tiny random GPT-NeoX."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from experiments.cache import cache_key
from experiments.errors import GbdError
from experiments.model.adapters import adapter_for
from experiments.model.moments import calibration_batch, second_moments

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
