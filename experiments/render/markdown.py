"""Markdown helpers of every renderer: tables, numbers, percentages and lambda labels (never computes)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; cells are str()-ed with '|' escaped."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 4) -> str:
    """Numbers for tables: None -> '-', infinities spelled out, else ``digits`` significant digits."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def lam_label(x: float) -> str:
    return "0" if x == 0 else "inf" if math.isinf(x) else f"{x:g} c"
