"""Thread counts per part of a run, chosen by a stated rule and recorded (results["threads"]).

Measured on the 2-core machine (issue 11): LAPACK calls (SVD, eigh) with 2 threads run 3-11x slower while
another process keeps the other core busy, and gain only 1.1x on a quiet machine; a whole GBD compression ran
3.4x slower with 2 threads than with 1 under such load. torch's forward passes are large matmuls that use
every core. Hence, per part:
    BLAS / LAPACK threads (numpy, scipy) = the usable cores when no other process is runnable, else 1;
    torch threads                        = the usable cores.
"Other runnable processes" is the kernel's instantaneous count of runnable tasks (/proc/loadavg, field 4)
minus this one; where that file is missing, the 1-minute load average. GBD_BLAS_THREADS forces the BLAS count.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_info, threadpool_limits

from experiments.errors import GbdError

LOADAVG = Path("/proc/loadavg")
RULE = "BLAS: all usable cores if no other process is runnable, else 1; torch: all usable cores"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def other_runnable() -> float:
    """Runnable tasks other than this process, now (/proc/loadavg field 4), else the 1-minute load average."""
    try:
        running = int(LOADAVG.read_text().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def blas_threads() -> int:
    """The BLAS thread count by the module's rule (or GBD_BLAS_THREADS)."""
    forced = os.environ.get("GBD_BLAS_THREADS")
    if forced is not None:
        if not forced.isdigit() or int(forced) < 1:
            raise GbdError(f"GBD_BLAS_THREADS must be a positive integer, got {forced!r}")
        return int(forced)
    return usable_cores() if other_runnable() < 1 else 1


@contextmanager
def part_threads(part: str, record: dict[str, Any]) -> Iterator[None]:
    """Run a part with the rule's BLAS and torch thread counts; record[part] says which were used and why."""
    blas, torch_n, before = blas_threads(), usable_cores(), torch.get_num_threads()
    record[part] = {"blas_threads": blas, "torch_threads": torch_n, "other_runnable": other_runnable(),
                    "libraries": sorted({i["internal_api"] for i in threadpool_info()}), "rule": RULE}
    torch.set_num_threads(torch_n)
    try:
        with threadpool_limits(blas, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
