"""Shared test set-up.

Hypothesis profiles: ``default`` (60 examples per property, about 500 over the theory properties,
deterministic) and ``thorough`` (GBD_HYPOTHESIS_PROFILE=thorough, more examples, random).
``save_tiny``: a fixture that saves a tiny model, with the GPT-NeoX-20B tokenizer of the shared data, as a
local model directory (what ``--model DIR`` reads).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, settings
from transformers import PreTrainedTokenizerFast

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
