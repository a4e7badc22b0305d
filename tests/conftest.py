"""Shared test set-up.

Hypothesis profiles: ``default`` (60 examples per property, about 500 over the theory properties,
deterministic) and ``thorough`` (GBD_HYPOTHESIS_PROFILE=thorough, more examples, random).
``save_tiny``: a fixture that saves a tiny model, with the GPT-NeoX-20B tokenizer of the shared data, as a
local model directory (what ``--model DIR`` reads). ``tiny_neox(context)``: the seeded tiny random GPT-NeoX
(hidden 32, 3 layers, 4 heads, MLP 64, attention.dense with biases) that the end-to-end tests save.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, settings
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from experiments.data import data_dir

settings.register_profile("default", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GBD_HYPOTHESIS_PROFILE", "default"))


def _save_tiny(model: torch.nn.Module, path: Path, with_tokenizer: bool) -> str:
    model.save_pretrained(path)
    if with_tokenizer:
        tokenizer_file = data_dir() / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"
        PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token="<|endoftext|>").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def save_tiny() -> Callable[[torch.nn.Module, Path, bool], str]:
    return _save_tiny


def _tiny_neox(context: int) -> GPTNeoXForCausalLM:
    """A tiny random GPT-NeoX (seed 0) with the Pythia vocabulary and ``context`` positions."""
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                            intermediate_size=64, vocab_size=50304, max_position_embeddings=context))


@pytest.fixture(scope="session")
def tiny_neox() -> Callable[[int], GPTNeoXForCausalLM]:
    return _tiny_neox
