"""The rounding noise of a GGUF file's quantized targets, from its block scales."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from experiments.model.quantization import rounding_noise_fraction


def test_rounding_noise_is_block_size_times_step_squared_over_twelve_per_block(tmp_path):
    """A Q8_0 tensor (blocks of 32 with one float16 step d = max |w| / 127): noise = sum 32 d^2 / 12."""
    w = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    q = gguf.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_output.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_up.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    steps = np.abs(w.reshape(-1, 32)).max(axis=1).astype(np.float16).astype(np.float64) / 127
    deq = gguf.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
    expected = 32 * np.sum(steps ** 2) / 12 / np.sum(deq ** 2)
    assert rounding_noise_fraction(path, "attn_out") == pytest.approx(expected, rel=1e-3)
    assert rounding_noise_fraction(path, "mlp_out") is None                  # no ffn_down tensor
    assert rounding_noise_fraction(tmp_path / "model.safetensors", "attn_out") is None
