"""experiments.threads: each part runs with the rule's thread counts, records them, and restores torch's count."""
from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from experiments.errors import GbdError
from experiments.threads import part_threads, usable_cores


def test_part_threads_applies_records_and_restores(monkeypatch):
    monkeypatch.setenv("GBD_BLAS_THREADS", "1")
    before, record = torch.get_num_threads(), {}
    with part_threads("phase", record):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
        assert torch.get_num_threads() == usable_cores()
    assert torch.get_num_threads() == before
    assert record["phase"]["blas_threads"] == 1 and record["phase"]["torch_threads"] == usable_cores()


def test_busy_machine_gets_one_blas_thread(monkeypatch):
    monkeypatch.delenv("GBD_BLAS_THREADS", raising=False)
    monkeypatch.setattr("experiments.threads.other_runnable", lambda: 1)
    record = {}
    with part_threads("theory", record):
        pass
    assert record["theory"]["blas_threads"] == 1
    monkeypatch.setattr("experiments.threads.other_runnable", lambda: 0)
    with part_threads("theory", record):
        pass
    assert record["theory"]["blas_threads"] == usable_cores()


def test_bad_forced_count_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("GBD_BLAS_THREADS", "two")
    with pytest.raises(GbdError, match="GBD_BLAS_THREADS"):
        with part_threads("theory", {}):
            pass
