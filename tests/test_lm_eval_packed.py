"""experiments.evaluation.lm_eval_packed: the packed model class gives HFLM's log-likelihoods and greedy flags, request by
request, on tiny GPT-NeoX and Llama models; its mask lets no continuation see another."""
from __future__ import annotations

import pytest
import torch
from lm_eval.api.registry import get_model
from lm_eval.models.huggingface import HFLM
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from experiments.data import data_dir
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import hellaswag_lm_eval, quiet_lm_eval
from experiments.evaluation.lm_eval_packed import MODEL_NAME, PackedHFLM, packed_mask, packed_row
from experiments.runs.bench import hellaswag_requests

VOCAB = 50304


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, vocab_size=VOCAB,
                                                max_position_embeddings=256)).eval()
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                        max_position_embeddings=256)).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_file=str(data_dir() / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"),
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def scores(cls: type[HFLM], model, tokenizer, requests, batch_size: int, max_length: int | None = None):
    with quiet_lm_eval():
        lm = cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    return lm.loglikelihood(requests, disable_tqdm=True)


@pytest.mark.parametrize("kind", ["neox", "llama"])
def test_packed_loglikelihoods_equal_hflm(kind, tokenizer):
    model, requests = tiny(kind), hellaswag_requests(12)
    reference = scores(HFLM, model, tokenizer, requests, batch_size=1)
    packed = scores(PackedHFLM, model, tokenizer, requests, batch_size=3)
    assert len(packed) == len(reference) == 48
    for (ll, greedy), (ll_ref, greedy_ref) in zip(packed, reference):
        assert ll == pytest.approx(ll_ref, rel=1e-5, abs=1e-5)
        assert greedy == greedy_ref
    chosen = [max(range(4), key=lambda j: packed[4 * i + j][0]) for i in range(12)]
    assert chosen == [max(range(4), key=lambda j: reference[4 * i + j][0]) for i in range(12)]


def test_groups_too_long_to_pack_fall_back_to_hflm(tokenizer):
    model, requests = tiny("neox"), hellaswag_requests(3)
    longest_single = max(len(tokenizer.encode(r.arguments[0] + r.arguments[1])) for r in requests)
    reference = scores(HFLM, model, tokenizer, requests, batch_size=1, max_length=longest_single)
    packed = scores(PackedHFLM, model, tokenizer, requests, batch_size=2, max_length=longest_single)
    assert [ll for ll, _ in packed] == pytest.approx([ll for ll, _ in reference], rel=1e-5)


def test_packed_row_layout():
    tokens, positions, blocks, read_at = packed_row([7, 8, 9], [[1, 2, 3], [4], [5, 6]])
    assert tokens == [7, 8, 9, 1, 2, 5]
    assert positions == [0, 1, 2, 3, 4, 3]
    assert blocks == [-1, -1, -1, 0, 0, 2]
    assert read_at == [[2, 3, 4], [2], [2, 5]]


def test_packed_mask_hides_other_continuations_and_the_future():
    _, _, blocks, _ = packed_row([7, 8], [[1, 2, 3], [4, 5]])  # blocks: -1 -1 0 0 1, width 6 (one padding)
    allowed = packed_mask([blocks], 6, torch.float32)[0, 0] == 0
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 0, 0, 1, 0],
                             [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_registered_under_its_name():
    assert get_model(MODEL_NAME) is PackedHFLM


def test_hellaswag_task_through_packed_model_equals_hflm(tokenizer):
    model = tiny("llama")
    packed = hellaswag_lm_eval(model, tokenizer, limit=10, batch_size=4)
    reference = hellaswag_lm_eval(model, tokenizer, limit=10, batch_size=4, lm_model="hflm")
    assert packed.predictions == reference.predictions and packed.predictions_norm == reference.predictions_norm
    assert (packed.acc, packed.acc_norm) == (reference.acc, reference.acc_norm)
    with pytest.raises(GbdError, match="unknown lm-eval model class"):
        hellaswag_lm_eval(model, tokenizer, limit=2, lm_model="vllm")
