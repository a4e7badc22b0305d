"""Markdown of the section "What the paper left open, measured here", from ``run_open_questions``'s data.

Every number is read from the data; each question ends with a one-line answer computed from its rows. PPL
intervals are 95 % t intervals with finite-population correction for the whole test set over the run's drawn
windows; "PPL / V1" is the ratio to SVD-LLM V1, paired over the same windows
(``experiments.audit.measures.ppl_interval`` / ``ppl_ratio``).
An interval over fewer than ``MIN_DECISIVE_UNITS`` windows is printed but never decides "beats V1".
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from experiments.audit.measures import ppl_interval, ppl_ratio
from experiments.audit.statistics import MIN_DECISIVE_UNITS
from experiments.render.markdown import fmt, table
from experiments.runs.beyond import (ALLOCATED_V1_LABEL, FUSED_V1_LABEL, MLP_MILD_RATIO, ORIGINAL_LABEL,
                                     QKV_SHARED_LABEL, V1_LABEL)

SECTION_TITLE = "What the paper left open, measured here"
HEADER = ["configuration", "d/D", "PPL [95 % CI]", "PPL / V1 [95 % CI]", "activation error", "Frobenius",
          "HellaSwag acc", "windows / items"]
PAPER_CORNER = "two-sided, unwhitened, original anchors"
SWITCHES = {"sides": "one-sided, unwhitened, original anchors", "whitening": "two-sided, whitened, original anchors",
            "anchor convention": "two-sided, unwhitened, v1-output anchors"}
CROSS_LAYER = ("sequential", "activation-coupled")
RATIO_DIGITS = 6           # PPL / V1 lies near 1: enough digits that the printed interval shows which side of 1 it is


def with_v1_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``vs_v1`` (paired ratio to the V1 row of the same kind, d and windows), where one exists."""
    v1 = {(r["kind"], r["d"], r["windows"]): r for r in rows if r["label"] == V1_LABEL}
    out = []
    for r in rows:
        base = v1.get((r["kind"], r["d"], r["windows"]))
        out.append({**r, "vs_v1": None if base is None else ppl_ratio(r, base)})
    return out


def _cells(r: dict[str, Any]) -> tuple:
    hs = (f"{100 * r['hellaswag_acc']:.1f} ± {100 * r['hellaswag_acc_stderr']:.1f} %"
          if "hellaswag_acc" in r else "-")
    v = r["vs_v1"]
    label = f"{r['label']} [{r['kind']}]" if r["table"] == "other-weights" else r["label"]
    return (label, f"{r['ratio']:g}", ppl_interval(r).text(),
            "-" if v is None else v.text(RATIO_DIGITS),
            fmt(r.get("activation_fraction")), fmt(r.get("frobenius_fraction")), hs,
            f"{r['windows']} / {r.get('hellaswag_n', 0)}")


def _versus(r: dict[str, Any]) -> str:
    """'PPL / V1 = r [lo, hi]: beats V1 | worse than V1 | not distinguishable from V1'."""
    v = r["vs_v1"]
    if v is None:
        return "no V1 row to compare with"
    text = f"PPL / V1 = {v.text(RATIO_DIGITS)} over {r['windows']} windows"
    if v.below(1):
        return text + ": beats V1"
    if v.above(1):
        return text + ": worse than V1"
    if not v.decisive:
        return text + f": undecided (fewer than {MIN_DECISIVE_UNITS} windows)"
    return text + ": not distinguishable from V1 at this sample size"


def _best(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The compressed row other than V1 with the lowest PPL / V1 (the uncompressed model is no candidate)."""
    rows = [r for r in rows if r["vs_v1"] is not None and r["label"] not in (V1_LABEL, ORIGINAL_LABEL)]
    return min(rows, key=lambda r: r["vs_v1"].estimate) if rows else None


def _answer_cross_layer(rows: Sequence[dict[str, Any]]) -> str:
    best = _best([r for r in rows if r["label"].startswith(CROSS_LAYER)])
    if best is None:
        return "no cross-layer configuration was run"
    return f"Best activation-coupled cross-layer objective: {best['label']}, {_versus(best)}."


def _answer_gap(rows: Sequence[dict[str, Any]]) -> str:
    by = {r["label"]: r for r in rows}
    v1 = by.get("one-sided, whitened, v1-output anchors")
    corner = by.get(PAPER_CORNER)
    if v1 is None or corner is None:
        return "the corner or the V1 cell is missing"
    gap = math.log(corner["ppl"]) - math.log(v1["ppl"])
    if gap <= 0:
        return f"no gap here: the paper's corner has PPL {fmt(corner['ppl'])}, the V1 cell {fmt(v1['ppl'])}"
    closed = {what: (math.log(corner["ppl"]) - math.log(by[label]["ppl"])) / gap
              for what, label in SWITCHES.items() if label in by}
    best = max(closed, key=closed.get)
    return (f"log-PPL gap between the paper's corner ({fmt(corner['ppl'])}) and V1 ({fmt(v1['ppl'])}); share of it "
            "closed by changing one thing: " + ", ".join(f"{k} {100 * x:.0f} %" for k, x in closed.items())
            + f". The {best} carries most of the gap.")


def _answer_whitened(rows: Sequence[dict[str, Any]]) -> str:
    best = _best([r for r in rows if r["label"].endswith(", whitened")])
    return "no whitened configuration was run" if best is None else \
        f"Best activation-aware bundle corner: {best['label']}, {_versus(best)}."


def _best_text(best: dict[str, Any]) -> str:
    """"best" means lowest PPL: V1 itself when every other configuration's PPL is higher."""
    if best["vs_v1"].estimate > 1:
        return f"{V1_LABEL} (lowest PPL); next: {best['label']}, {_versus(best)}"
    return f"{best['label']}, {_versus(best)}"


def _answer_best(rows: Sequence[dict[str, Any]]) -> str:
    best = _best(rows)
    return "no configuration beside V1" if best is None else f"Best configuration: {_best_text(best)}."


def _answer_per_kind(rows: Sequence[dict[str, Any]]) -> str:
    """The best configuration of each target kind (and ratio, where a kind runs at several) against that kind's V1
    at that ratio (kinds are not comparable); then ``_mlp_mild`` and ``_qkv_split``."""
    parts = []
    main_ratio = rows[0]["ratio"] if rows else None
    for kind, ratio in dict.fromkeys((r["kind"], r["ratio"]) for r in rows):
        best = _best([r for r in rows if r["kind"] == kind and r["ratio"] == ratio])
        where = kind if ratio == main_ratio else f"{kind} at d/D={ratio:g}"
        parts.append(f"[{where}] " + ("no configuration beside V1" if best is None
                                      else f"best: {_best_text(best)}"))
    return "; ".join(parts) + ". " + _mlp_mild(rows) + " " + _qkv_split(rows)


def _mlp_mild(rows: Sequence[dict[str, Any]]) -> str:
    """Whether V1 on the MLP chain keeps PPL within 2x of the original at MLP_MILD_RATIO (paired over windows)."""
    v1 = next((r for r in rows if r["kind"] == "mlp_chain" and r["ratio"] == MLP_MILD_RATIO and
               r["label"] == V1_LABEL), None)
    original = next((r for r in rows if r["label"] == ORIGINAL_LABEL and v1 is not None and
                     r["windows"] == v1["windows"]), None)
    if v1 is None or original is None:
        return ""
    iv = ppl_ratio(v1, original)
    verdict = "within" if iv.below(2) else "not within" if iv.above(2) else "not decidably within"
    return (f"At d/D={MLP_MILD_RATIO:g} V1 on the MLP chain has PPL / original = {iv.text(3)}: {verdict} 2x, so "
            "there the chain bundle is compared with a V1 that still works.")


def _qkv_split(rows: Sequence[dict[str, Any]]) -> str:
    """How much of the shared basis's gain over uniform-rank V1 is allocation (V1 at budget-optimal ranks) and how
    much is sharing: shares of the activation-error and of the log-PPL gain, and the paired PPL ratios."""
    by = {r["label"]: r for r in rows if r["kind"] == "q_k_v"}
    if not {V1_LABEL, ALLOCATED_V1_LABEL, QKV_SHARED_LABEL} <= set(by):
        return ""
    uniform, allocated, shared = by[V1_LABEL], by[ALLOCATED_V1_LABEL], by[QKV_SHARED_LABEL]

    def share(key: Callable[[dict[str, Any]], float]) -> str:
        gain = key(uniform) - key(shared)
        return "-" if gain <= 0 else f"{100 * (key(uniform) - key(allocated)) / gain:.0f} %"
    fused = by.get(FUSED_V1_LABEL)
    same = ("" if fused is None else f" V1 on the fused [W_q; W_k; W_v] has activation error "
            f"{fmt(fused['activation_fraction'])} against the shared basis's {fmt(shared['activation_fraction'])}: "
            "one input basis within a block is V1 on the fused matrix, not cross-layer coupling.")
    return (f"[q_k_v] Of the shared basis's gain over V1 at uniform ranks, allocation (V1 at budget-optimal "
            f"per-matrix ranks, same parameter count) explains {share(lambda r: r['activation_fraction'])} of the "
            f"activation-error gain and {share(lambda r: math.log(r['ppl']))} of the log-PPL gain; the rest is "
            f"sharing. Paired over {uniform['windows']} windows: PPL(allocated) / PPL(uniform) = "
            f"{ppl_ratio(allocated, uniform).text(RATIO_DIGITS)}, PPL(shared) / PPL(allocated) = "
            f"{ppl_ratio(shared, allocated).text(RATIO_DIGITS)}.{same}")


def _answer_sweep(rows: Sequence[dict[str, Any]]) -> str:
    """The lowest PPL at each ratio; configurations whose PPL equals it at the printed precision are a tie."""
    parts = []
    for ratio in sorted({r["ratio"] for r in rows}, reverse=True):
        at = [r for r in rows if r["ratio"] == ratio]
        lowest = fmt(min(r["ppl"] for r in at))
        tied = [r["label"] for r in at if fmt(r["ppl"]) == lowest]
        who = tied[0] if len(tied) == 1 else "tie of " + " and ".join(tied)
        parts.append(f"d/D={ratio:g}: {who} (PPL {lowest})")
    return "Lowest PPL at each ratio: " + "; ".join(parts) + "."


QUESTION_TEXT = {
    "cross-layer": ("Can a cross-layer objective that follows the forward pass beat per-layer V1?",
                    "Sequential compression fits each layer to the original model's output W_l X_l from the inputs "
                    "X~_l the already-compressed layers deliver (closed-form reduced-rank regression), plain and "
                    "shrunk toward W_l (penalty delta ||W_hat - W_l||^2, which keeps the V1 case and curbs the fit "
                    "to calibration noise); its activation error column is on the ORIGINAL inputs' moments, which "
                    "are not what it fits. The joint "
                    "objective adds to the per-layer activation energies a residual-stream coupling between "
                    "consecutive output sections, solved by BCA (mu in units of max_l ||W_l S_l||_2^2).",
                    _answer_cross_layer),
    "unification-gap": ("Which difference between the lambda -> inf untied corner and V1 carries the gap?",
                        "The corner over sides (two-sided generalized projection / one-sided P_out W) x whitening x "
                        "anchor convention; the cell one-sided, whitened, v1-output anchors is V1 itself.",
                        _answer_gap),
    "whitened-bundle": ("Does the activation-aware (whitened) bundle still lose to V1?",
                        "Every corner on W_l S_l (Cholesky), installed with the generalized projection; the input "
                        "side lives in whitened coordinates and is mapped back through S_l^{-T}.", _answer_whitened),
    "table4": ("The whole of the paper's Table 4", "Original anchors with BCA; V1-output anchors used directly; "
               "V1-output anchors with BCA (lambda in units of c = max_i ||W_i||_2^2 + ||W_{i+1}||_2^2).",
               _answer_best),
    "ratio-sweep": ("Lower-dimensional bottlenecks: the compression ratio d/D",
                    "V1, V2, GBD and Basis-Sharing-core at each d/D (fewer windows, said in each row).", _answer_sweep),
    "other-weights": ("Other weight classes: MLP projections and Q/K/V",
                      "At the main d/D (fewer windows), targets in brackets: V1, V2 and sequential on the MLP down "
                      "projections; the MLP chain [up_1, down_1, up_2, ...] by the bundle with one rank per "
                      "interface (d at the D-wide, round(d I / D) at the I-wide interfaces; gate_l on up_l's "
                      "sections) against V1 on every up, gate and down matrix, also at d/D = "
                      f"{MLP_MILD_RATIO:g}, where V1 itself still works. Limitation of the linear-chain view: the "
                      "gate borrows up's sections (no interface of the chain is its own), and the SiLU gate "
                      "multiplies up's output coordinate by coordinate, so down does not read a linear image of "
                      "up's output. Q, K and V of each block: V1 per matrix at uniform ranks, V1 at the "
                      "budget-optimal per-matrix ranks (most whitened energy kept at exactly the same count), V1 "
                      "on the fused [W_q; W_k; W_v], and the shared whitened input basis. Every matrix keeps V1's "
                      "parameter count (rank round(d/D min(m, n))); the Q/K/V shared rank k (fused V1's too) "
                      "matches the block's total.",
                      _answer_per_kind),
}


def ratio_plot(rows: Sequence[dict[str, Any]], path: Path) -> str:
    """PPL (95 % interval bars) and activation error against d/D, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r for r in rows if r["label"] == label), key=lambda r: r["ratio"])
        x = [r["ratio"] for r in pts]
        y = [r["ppl"] for r in pts]
        ivs = [ppl_interval(r) for r in pts]
        err = [[0.0 if math.isnan(iv.low) else max(0.0, iv.estimate - iv.low) for iv in ivs],
               [0.0 if math.isnan(iv.high) else max(0.0, iv.high - iv.estimate) for iv in ivs]]
        a.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        b.plot(x, [r["activation_fraction"] for r in pts], marker="o", label=label)
    for ax, ylabel in ((a, "WikiText-2 PPL"), (b, "activation error fraction")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d / D")
        ax.set_ylabel(ylabel)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _sample_text(sample: dict[str, Any] | None) -> str:
    """How the section's windows and items were drawn (recorded with each row as ppl_window_index and
    hellaswag_item_index)."""
    if sample is None:
        return "not recorded"
    if sample["how"] == "first":
        return "the first k of the test set's windows and items (--sample first: contiguous, not representative)"
    return f"drawn at random without replacement (seed {sample['seed']}), the surgery's draw, recorded in every row"


def render_section(data: dict[str, Any], out_dir: Path) -> str:
    """The Markdown section (``##`` level); writes ``beyond-ratio.png`` into ``out_dir`` when the sweep ran."""
    rows = with_v1_ratios(data["rows"])
    cal = data["calibration"]
    parts = [f"## {SECTION_TITLE}",
             f"{data['model']}, {data['kind']} at d = {data['d']} of D = {data['D']} (d/D = {data['ratio']:g}) unless "
             f"a row says otherwise; mode {data['mode']}. Calibration {cal['sequences']} x {cal['tokens_each']} "
             f"tokens, "
             f"seed {cal['seed']}. Errors are fractions of sum ||W||^2 and sum tr(W Sigma W^T) on the calibration "
             "moments; PPL intervals are 95 % t intervals with finite-population correction for the whole test set "
             "(none with one window, 'too few to decide' with fewer than five; measured coverage in \"Samples and "
             "intervals\"); 'PPL / V1' is paired on the same windows; HellaSwag acc ± its standard error. Windows and "
             f"items: {_sample_text(data.get('sample'))}."]
    for question, (title, what, answer) in QUESTION_TEXT.items():
        q = [r for r in rows if r["table"] == question]
        if not q:
            continue
        parts += [f"### {title}", what, table(HEADER, [_cells(r) for r in q]), f"**Answer.** {answer(q)}"]
        if question == "ratio-sweep":
            out_dir.mkdir(parents=True, exist_ok=True)
            parts.append(f"![PPL and activation error against d/D]({ratio_plot(q, out_dir / 'beyond-ratio.png')})")
    return "\n\n".join(parts)
