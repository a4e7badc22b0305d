"""What ``gbd-audit surgery`` prints: the rank, the protocol, the rows as the report's surgery table, Spearman rho."""
from __future__ import annotations

from typing import Any

from experiments.render.markdown import table
from experiments.render.report import SURGERY_HEADER, surgery_rows


def surgery_text(model: str, kind: str, part: dict[str, Any]) -> str:
    """What ``gbd-audit surgery`` prints: rank, protocol, the rows as the report's surgery table, Spearman rho."""
    rows = part["rows"]
    original = next((r for r in rows if r["method"] is None), None)
    lines = []
    if original is None:
        lines.append("(ratios to the original need the 'original' row too)")
        original = {"ppl": float("nan")}
    lines.append(f"{model}: {kind}, d = {part['d']} of {part['D']}; {rows[0]['ppl_protocol']}")
    if part.get("dtype_check"):
        check = part["dtype_check"]
        lines.append(f"perplexity under {check['dtype']} autocast: mean NLL change on the uncompressed model "
                     f"{check['nll_relative_change']:+.2e} relative to float32")
    lines.append(table(SURGERY_HEADER, surgery_rows(rows, original)))
    for key, rho in part.get("spearman_vs_ppl", {}).items():
        lines.append(f"Spearman rho, {key} vs PPL over the compressed rows: "
                     f"{'undefined' if rho is None else rho.text(3)}")
    return "\n".join(lines)
