"""The rounding noise a quantized model file carries: what the dequantized weights already lost.

For the GGUF block formats whose block starts with one float16 scale step d (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0),
every weight was rounded to a grid of spacing d; uniform rounding error has variance d^2 / 12 per weight. The
noise fraction of a set of tensors is sum over blocks (block size * d^2 / 12) / sum ||W||_F^2 (the dequantized
weights), to print beside the Frobenius error fractions of the compression methods.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

SCALED_BLOCKS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")      # the block's first two bytes: the step d (float16)
GGUF_TARGETS = {"attn_out": "attn_output.weight", "mlp_out": "ffn_down.weight"}   # the targets' GGUF tensor names


def rounding_noise_fraction(path: Path, kind: str) -> float | None:
    """sum_blocks n_b d_b^2 / 12 over sum ||W||^2 for the ``kind`` targets of a GGUF file (None: another file
    type, a kind with no GGUF name here, or a tensor in a format without a leading scale step)."""
    if path.suffix != ".gguf" or kind not in GGUF_TARGETS:
        return None
    tensors = [t for t in gguf.GGUFReader(str(path)).tensors if t.name.endswith(GGUF_TARGETS[kind])]
    if not tensors or any(t.tensor_type.name not in SCALED_BLOCKS for t in tensors):
        return None
    noise = energy = 0.0
    for t in tensors:
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        blocks = np.ascontiguousarray(t.data).reshape(-1, size)
        step = blocks[:, :2].copy().view(np.float16).astype(np.float64).ravel()
        noise += block * float(np.sum(step ** 2)) / 12
        energy += float(np.sum(gguf.dequantize(t.data, t.tensor_type).astype(np.float64) ** 2))
    return noise / energy
