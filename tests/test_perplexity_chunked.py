"""experiments.evaluation.perplexity: the chunked lm_head + cross-entropy path equals the full-logits path and an
independent float64 computation; bfloat16 autocast is opt-in and close."""
from __future__ import annotations

import pytest
import torch

from experiments.errors import GbdError
from experiments.evaluation.perplexity import perplexity
from tests.test_evaluation import manual_nll
from tests.test_lm_eval_packed import tiny

SEQ = 40


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randint(0, 50277, (3 * SEQ,))


@pytest.mark.parametrize("kind", ["neox", "llama"])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_loss_equals_full_logits(kind, chunk, ids):
    model = tiny(kind)
    chunked = perplexity(model, ids, seq_len=SEQ, chunk=chunk, progress=False, batch_size=2)
    full = perplexity(model, ids, seq_len=SEQ, chunk=None, progress=False, batch_size=2)
    assert chunked.nll_sum == pytest.approx(full.nll_sum, rel=1e-6)
    assert chunked.nll_sum == pytest.approx(manual_nll(model, ids, SEQ, 3), rel=1e-6)
    assert chunked.n_tokens == full.n_tokens == 3 * (SEQ - 1)


def test_bfloat16_is_opt_in_and_close(ids):
    model = tiny("llama")
    fp32 = perplexity(model, ids, seq_len=SEQ, progress=False)
    bf16 = perplexity(model, ids, seq_len=SEQ, progress=False, dtype="bfloat16")
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
    assert bf16.nll_sum != fp32.nll_sum  # it really ran in lower precision...
    assert bf16.nll_sum == pytest.approx(fp32.nll_sum, rel=2e-2)  # ...and stays close
    with pytest.raises(GbdError, match="unknown dtype"):
        perplexity(model, ids, seq_len=SEQ, progress=False, dtype="float16x")
