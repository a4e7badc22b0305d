"""The Markdown reproduction report: every claim beside its measurement and verdict, the paper's tables
re-made, figures as PNG beside the Markdown, and what is needed to re-run it (command, versions, seeds,
data hashes). Everything printed here is read from the results of the run that writes it; the verdicts come
judged (``experiments.audit.verdicts``): this module only renders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from experiments.audit import statistics
from experiments.audit.measures import (correlations, hs_accuracy, hs_paired, interior_rows, ppl_interval, ppl_ratio,
                                        seed_spread)
from experiments.audit.results import SCHEMA_VERSION, Results
from experiments.audit.verdicts import Judgement, Verdict
from experiments.audit.verdicts import __doc__ as VERDICT_CLASSES
from experiments.audit.verdicts import rule_text
from experiments.cache import atomic_write, write_json
from experiments.methods.ranks import V2_RULE
from experiments.render import plots
from experiments.render.beyond import render_section
from experiments.render.markdown import fmt, lam_label, pct, table
from experiments.render.theory import render_theory
from experiments.threads import RULE as THREAD_RULE

REPORT_NAME = "report.md"
RESULTS_NAME = "results.json"


# ------------------------------------------------------------------------------------------------ sections

def claims_section(judgements: Sequence[Judgement]) -> str:
    counts = {v: sum(j.verdict == v for j in judgements) for v in Verdict}
    summary = ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)
    not_evidence = counts[Verdict.BY_CONSTRUCTION] + counts[Verdict.OWN_RESULT]
    models = sorted({j.why.split(" (the paper measured")[0].removeprefix("on ") for j in judgements
                     if j.verdict in TRANSFER_CLASSES})
    rows = [(j.claim.id, j.claim.section, j.claim.statement, j.claim.paper_value, j.measured,
             f"**{j.verdict.value}**", j.why, j.detect or "-") for j in judgements]
    rules = [(j.claim.id, j.claim.quantity, rule_text(j.claim)) for j in judgements]
    classes = VERDICT_CLASSES.split("Verdict classes:", 1)[1].split("\n\n", 1)[0].strip()
    return "\n\n".join([
        "## Claims and verdicts", f"Verdicts on {len(judgements)} claims: {summary}. Of these, {not_evidence} are "
        "true by construction or this audit's own results, not evidence about the paper"
        + (f"; every 'transfers' / 'does not transfer' verdict was measured on {', '.join(models)}, not on the "
           "paper's model" if models else "") + ". Intervals are 95 % and for "
        "the whole test set / all items: perplexity and paired perplexity ratios by a t interval with "
        "finite-population correction over the sampled windows, HellaSwag differences by the same over the "
        "sampled items (paired) with an exact McNemar test, Spearman rho by a bootstrap over configurations "
        f"({statistics.RESAMPLES} resamples, seed {statistics.BOOTSTRAP_SEED}); the section \"Samples and "
        "intervals\" gives each procedure's measured coverage.",
        table(["id", "section", "claim", "paper", "measured in this run [95 % interval]", "verdict", "why",
               "sample size that would detect the paper's effect"], rows),
        "<details><summary>How each verdict is decided</summary>\n\n" + classes + "\n\n"
        + table(["id", "quantity measured", "rule (numbers from the ledger)"], rules) + "\n\n</details>"])


TRANSFER_CLASSES = (Verdict.TRANSFERS, Verdict.TRANSFERS_DIRECTION, Verdict.DOES_NOT_TRANSFER)


def theory_section(theory: dict[str, Any], out_dir: Path) -> str:
    return render_theory(theory, out_dir)


PHASE_HEADER = ["lambda", "sections", "anchors", "two-sided Frobenius fraction", "BCA sweeps", "converged"]


def phase_rows(phase: dict[str, Any]) -> list[tuple]:
    return [(lam_label(p["lam_over_c"]), "tied" if p["tied"] else "untied", p["convention"],
             f"{p['frobenius_fraction']:.4f}", p["sweeps"] if p["sweeps"] is not None else "-",
             p["converged"] if p["converged"] is not None else "-") for p in phase["points"]]


def phase_section(phase: dict[str, Any], out_dir: Path) -> str:
    name = plots.phase_plot(phase["points"], phase["eckart_young_fraction"], out_dir / "phase.png")
    return "\n\n".join([
        "## Frobenius phase diagram (lambda x tying)",
        f"Two-sided fraction sum_l ||W_l - P_l W_l P_(l-1)||^2 / sum_l ||W_l||^2 on the {phase['L']} real target "
        f"weights (raw, not whitened), d = {phase['d']}; lambda in units of c = max_i (||W_i||_2^2 + "
        f"||W_(i+1)||_2^2). Per-layer Eckart-Young floor (no shared interfaces): "
        f"{phase['eckart_young_fraction']:.4f}.",
        table(PHASE_HEADER, phase_rows(phase)),
        f"![phase diagram]({name})"])


def frobenius_baselines_section(results: dict[str, Any]) -> str:
    """Every method's two-sided (sections) and installed Frobenius fractions beside per-layer rank-d SVD
    (Eckart-Young: the best any per-layer rank-d factorization can do, one- and two-sided alike), and the
    quantization noise of the model file where the run measured it."""
    phase = results["phase"]
    main = [r for r in results["surgery"]["rows"] if r["table"] == "main" and r["method"] is not None]
    ey = phase["eckart_young_fraction"]
    body = [("per-layer rank-d SVD (Eckart-Young)", fmt(ey), fmt(ey), fmt(ey), "the floor of every per-layer method")]
    body += [(r["label"], fmt(r.get("one_sided_fraction")), fmt(r.get("two_sided_fraction")),
              fmt(r.get("frobenius_fraction")),
              "-" if r.get("two_sided_fraction") is None else f"{r['two_sided_fraction'] / ey:.3g}x the floor")
             for r in main]
    noise = results["model"].get("quantization_noise_fraction")
    return "\n\n".join([
        "## Frobenius baselines",
        f"Fractions sum_l ||W_l - W_hat_l||^2 / sum_l ||W_l||^2 on the {phase['L']} real targets at d = {phase['d']}. "
        "One-sided: ||W - P W||^2 with P the projector onto the installed weight's output space; two-sided: the "
        "sandwich P_l W_l P_(l-1) of the method's sections (bundle family only); installed: the weight the model "
        "runs with. A one-sided projection U U^T W of rank d cannot beat the Eckart-Young row; "
        "the paper's Frobenius gain is measured against the two-sided lambda -> inf corner, not against it.",
        table(["method", "one-sided (output space)", "two-sided (sections)", "installed", "two-sided vs per-layer SVD"],
              body),
        "Quantization noise of the model file: " + ("not measured in this run" if noise is None else
                                                    f"{100 * noise:.2f} % of sum ||W||^2 over the targets (uniform "
                                                    "rounding, step^2 / 12 per weight from the GGUF block scales)")
        + ", to compare with the fractions above."])


def per_layer_section(rows: Sequence[dict[str, Any]]) -> str:
    """Every layer's activation error fraction, V1 beside the pure bundle (section 7.4: 'strictly worse per
    layer'); empty when the rows do not record it."""
    by = {r["method"]: r.get("layer_activation") for r in rows if r["table"] == "main"}
    v1, gbd = by.get("v1"), by.get("gbd")
    if not v1 or not gbd:
        return ""
    body = [(i, fmt(a, 3), fmt(b, 3), f"{b / a:.3g}x" if a > 0 else "-") for i, (a, b) in enumerate(zip(v1, gbd))]
    return "### Activation error per layer\n\n" + table(["layer", "V1", "GBD", "GBD / V1"], body)


def _hs_cell(row: dict[str, Any], norm: bool) -> str:
    """'acc ± se' from the per-item data (lm-eval's stderr for acc when the row has none)."""
    measured = hs_accuracy(row, norm)
    if measured is not None:
        return f"{pct(measured[0].estimate)} ± {100 * measured[1]:.1f}"
    if norm:
        return pct(row["hellaswag_acc_norm"])
    return f"{pct(row['hellaswag_acc'])} ± {100 * row['hellaswag_acc_stderr']:.1f}"


def _hs_change(row: dict[str, Any], original: dict[str, Any]) -> str:
    """acc(row) - acc(original) in points with its paired interval, and the exact McNemar p."""
    pair = hs_paired(original, row)
    if pair is None:
        return "-"
    return f"{pair.difference.text(3, 100)}, p = {pair.mcnemar_p:.2g}"


def surgery_rows(rows: Sequence[dict[str, Any]], original: dict[str, Any]) -> list[tuple]:
    out = []
    for r in rows:
        compressed = r["method"] is not None
        out.append((r["label"], ppl_interval(r).text(4), _hs_cell(r, False), _hs_cell(r, True),
                    fmt(r.get("frobenius_fraction")), fmt(r.get("two_sided_fraction")),
                    fmt(r.get("activation_fraction")),
                    f"{r['params_kept'] / r['params_original']:.3f}" if compressed else "1",
                    ppl_ratio(r, original).text(4, unit="x") if compressed else "1",
                    _hs_change(r, original) if compressed else "-", r.get("bias_rule") or "-"))
    return out


SURGERY_HEADER = ["configuration", "PPL [95 % interval]", "HellaSwag acc ± se (points)", "acc_norm ± se",
                  "Frobenius (installed)", "two-sided (sections)", "activation error", "params kept",
                  "PPL / original [paired 95 % interval]", "acc - original (points) [paired 95 %], McNemar p",
                  "bias (keep: b; project: P_out b)"]


def surgery_section(results: dict[str, Any], out_dir: Path) -> str:
    s = results["surgery"]
    rows = s["rows"]
    original = next(r for r in rows if r["method"] is None)
    by_table = {t: [r for r in rows if r["table"] == t] for t in ("main", "sweep", "convention", "surgery")}
    gbd = [r for r in by_table["main"] if r["method"] == "gbd"]
    budget = s["budget"]
    parts = ["## Compression on the real model",
             f"{results['model']['name']}, {s['kind']} of all {results['model']['layers']} blocks at d = {s['d']} of D = {s['D']} (d/D = {results['ratio']}). Calibration: "
             f"{budget['calib_n']} sequences x {budget['calib_T']} tokens, seed {results['seed']}. Perplexity: "
             f"{original['ppl_protocol']}. HellaSwag: {original['hellaswag_n']} items, {original['hellaswag_source']}. "
             "Errors are fractions: ||W - W_hat||^2 / ||W||^2 and tr(D Sigma D^T) / tr(W Sigma W^T), summed over "
             "layers. Bundle-family layers are installed with the generalized projection C = U_out^T W Sigma "
             "U_in (U_in^T Sigma U_in)^-1 unless the row says otherwise.",
             "### Main table", table(SURGERY_HEADER, surgery_rows(by_table["main"], original)),
             *filter(None, [per_layer_section(rows)]),
             f"SVD-LLM V2's rank allocation is {V2_RULE} (SVD-LLM V2 publishes no code): ranks "
             f"{next((r['ranks'] for r in by_table['main'] if r['method'] == 'v2'), '-')}."]
    parts += ["### Anchor strength sweep (untied, original anchors)",
              table(SURGERY_HEADER, surgery_rows(gbd + by_table["sweep"] + [r for r in by_table["main"]
                                                                          if r["method"] == "anchored"], original)),
              "### Anchor convention (paper's Table 4)",
              table(SURGERY_HEADER, surgery_rows(by_table["convention"] + [r for r in by_table["sweep"] if
                                                  r["lam_over_c"] == by_table["convention"][0]["lam_over_c"]],
                                                  original)),
              "### Surgery formula",
              table(SURGERY_HEADER, surgery_rows(gbd + by_table["surgery"], original))]
    cross = s.get("hellaswag_cross_check")
    if cross:
        parts.append(f"HellaSwag cross-check on the uncompressed model, {cross['n']} of the {cross.get('of', cross['n'])} "
                     f"evaluated items (drawn at random from them): lm-eval acc "
                     f"{pct(cross['lm_eval_acc'])} / acc_norm {pct(cross['lm_eval_acc_norm'])}, independent scorer "
                     f"{pct(cross['direct_acc'])} / {pct(cross['direct_acc_norm'])}; items where the chosen ending "
                     f"differs: {cross['disagreements_acc']} (acc), {cross['disagreements_acc_norm']} (acc_norm). "
                     f"Note: {original['hellaswag_note']}.")
    check = s.get("dtype_check")
    if check:
        parts.append(f"Perplexities above were computed under {check['dtype']} autocast (opt-in; the default is "
                     f"float32). On the uncompressed model over the same windows the mean NLL changes by "
                     f"{check['nll_relative_change']:+.2e} relative ({check['float32_nll']:.6g} in float32, "
                     f"{check['dtype_nll']:.6g} in {check['dtype']}).")
    bad = [r["label"] for r in rows if r.get("nonfinite_windows")]
    parts.append("Windows with non-finite loss: " + (", ".join(bad) if bad else "none") + ".")
    notes = [(r["label"], "; ".join(r.get("notes") or [])) for r in rows if r.get("notes")]
    if notes:
        parts.append("<details><summary>Per-configuration notes</summary>\n\n" + table(["configuration", "notes"],
                                                                                       notes) + "\n\n</details>")
    return "\n\n".join(parts)


COVERAGE_HEADER = ["used by", "quantity", "interval procedure", "sample", "measured coverage of the whole-set value"]


def sampling_section(surgery: dict[str, Any]) -> str:
    """What was sampled, how, and the measured coverage of each interval procedure at this run's sizes."""
    sample, measured = surgery.get("sample"), surgery.get("coverage") or {}
    drawn = ("Windows and items: not recorded (results from before sampling was recorded)." if sample is None else
             f"Perplexity windows: {sample['windows']}. HellaSwag items: {sample['items']}. One draw for the whole "
             "run, shared by every configuration and calibration seed, so every comparison is paired; each row "
             "records its indices (`ppl_window_index`, `hellaswag_item_index` in results.json).")
    if "rows" not in measured:
        return "\n\n".join(["## Samples and intervals", drawn,
                             f"Coverage not measured: {measured.get('missing', 'not recorded in this run')}."])

    def covered(c: dict[str, Any]) -> str:
        if not c["draws"]:
            return "the whole set: no sampling error"
        return f"{100 * c['covered'] / c['draws']:.1f} % of {c['draws']} draws"
    rows = [(c["used_by"], c["procedure"], c["method"], f"{c['n']} of {c['population']} ({c['design']})", covered(c))
            for c in measured["rows"]]
    return "\n\n".join([
        "## Samples and intervals", drawn,
        f"Each interval procedure was simulated on the committed full-size run ({measured['source']}): samples of "
        "this run's sizes, drawn the way this run draws them (first k: a contiguous block at a random start), "
        f"and the share of nominal {100 * measured['nominal']:.0f} % intervals that cover the value on every "
        "window / item (ratio and difference: SVD-LLM V1 against the original).",
        table(COVERAGE_HEADER, rows)])


def _rho_text(rho: statistics.Interval | None) -> str:
    return "n/a (< 3 points)" if rho is None else f"{rho.text(3)} (n = {rho.n})"


def mechanism_section(results: dict[str, Any], out_dir: Path) -> str:
    rows = [r for r in results["surgery"]["rows"] if r["method"] is not None]
    c = correlations(results)
    intervals = [ppl_interval(r) for r in rows]
    parts = ["## Mechanism: which error tracks perplexity"]
    for key, label, rho, name in (("activation_fraction", "activation error fraction", c["activation"],
                                   "scatter_activation.png"),
                                  ("frobenius_fraction", "Frobenius error fraction (installed)", c["frobenius"],
                                   "scatter_frobenius.png")):
        if rho is not None:
            parts.append(f"![{label}]({plots.scatter_plot(rows, intervals, key, label, rho.estimate, out_dir / name)})")
    interior = interior_rows(results)
    parts.append(f"Spearman rho [95 % bootstrap interval over configurations] over {c['n']} compressed "
                 f"configurations: rho(activation, PPL) = {_rho_text(c['activation'])}, rho(Frobenius, PPL) = "
                 f"{_rho_text(c['frobenius'])}; over the {len(interior)} interior configurations rho(Frobenius, PPL) = "
                 f"{_rho_text(c['frobenius_interior'])}. Error bars: the perplexity intervals.")
    return "\n\n".join(parts)


def seeds_section(results: dict[str, Any]) -> str:
    """The spread of PPL, activation and Frobenius error of V1, V2 and GBD over calibration seeds."""
    spreads = seed_spread(results)
    if not spreads:
        return ("## Calibration seeds\n\nOne calibration seed in this mode (the paper uses one); the standard and "
                "full modes re-run V1, V2 and GBD with further seeds.")
    rows = [(m, stat["ppl"]["n"], *(f"{stat[k]['mean']:.4g} ± {stat[k]['sd']:.2g} [{stat[k]['min']:.4g}, "
                                     f"{stat[k]['max']:.4g}]" for k in ("ppl", "activation_fraction",
                                                                        "frobenius_fraction")))
            for m, stat in spreads.items()]
    seeds = ", ".join([str(results["seed"]), *results["surgery"]["seed_rows"]])
    return "\n\n".join(["## Calibration seeds",
                         f"V1, V2 and GBD calibrated with seeds {seeds}: mean ± sd (ddof 1) [min, max] over seeds.",
                         table(["method", "seeds", "PPL", "activation error", "Frobenius (installed)"], rows)])


def data_warnings(results: dict[str, Any]) -> list[str]:
    """One bold warning per data file whose sha256 differs from the data folder's SHA256SUMS."""
    return [f"**Warning: the {k} file {v.get('path')} does not match the data folder's checksums ({v['checksum']}); "
            "its numbers are not comparable with runs on the listed file.**"
            for k, v in results["surgery"]["sources"].items() if str(v.get("checksum", "")).startswith("MISMATCH")]


def reproducibility_section(results: dict[str, Any]) -> str:
    s, m = results["surgery"], results["model"]
    model_rows = [(k, v) for k, v in m.items()]
    data_rows = [(k, v.get("name", ""), v.get("path") or "hub", v.get("sha256") or "-", v.get("checksum", "-"))
                 for k, v in s["sources"].items()]
    adjustments = s.get("adjustments") or []
    return "\n\n".join([
        "## Re-running this report",
        f"    {results['command']}",
        f"Started {results['started']}; the model ran on {m.get('device', 'cpu')}, the solvers on the CPU; "
        f"mode {results['mode']}; seed {results['seed']} (calibration windows, "
        f"theory sample); model weights fingerprint (sha256 of every parameter) `{s['fingerprint'][:16]}...`. "
        "Calibration and each configuration are cached under the cache directory, keyed by the code version, "
        "the model, the options and every data file's sha256, so a re-run resumes."
        + ("".join(f" Adjusted: {a}." for a in adjustments)),
        *data_warnings(results),
        table(["model", ""], model_rows),
        table(["data", "what", "file (in the data folder)", "sha256", "SHA256SUMS"], data_rows),
        table(["package", "version"], results["versions"].items()),
        table(["part", "seconds", "BLAS threads", "torch threads"],
              [(k, f"{v:.0f}", *_threads_used(results.get("threads", {}).get(k)))
               for k, v in results["timings_s"].items()]),
        f"Threads: {THREAD_RULE}." + _reproduction_time(results["timings_s"])])


def _reproduction_time(timings: dict[str, float]) -> str:
    """With the open questions run, the time of the paper's reproduction alone (theory, phase, surgery)."""
    if "beyond" not in timings:
        return ""
    own = sum(timings.get(k, 0.0) for k in ("theory", "phase", "surgery"))
    return (f" The reproduction of the paper's claims (theory, phase, surgery) took {own / 60:.1f} min; the "
            f"section on what the paper left open {timings['beyond'] / 60:.1f} min more.")


def _threads_used(part: dict[str, Any] | None) -> tuple[str, str]:
    """(BLAS threads, torch threads) recorded for a part, or dashes."""
    return ("-", "-") if part is None else (str(part["blas_threads"]), str(part["torch_threads"]))


def render(results: dict[str, Any], judgements: Sequence[Judgement], out_dir: Path) -> str:
    """The whole Markdown report (writes the figures into ``out_dir`` as it goes)."""
    m = results["model"]
    head = "\n\n".join([
        "# Reproduction report: Cross-Layer Subspace Coupling for LLM Compression",
        f"Made by `{results['command']}` on {results['started']} ({results['mode']} mode, results schema "
        f"{SCHEMA_VERSION}). Model: **{m['name']}** ({m['source']}). Data: local WikiText-2 and HellaSwag files "
        "(hashes at the end). Every number below was measured by this run.", *data_warnings(results)])
    sections = [head, claims_section(judgements), theory_section(results["theory"], out_dir),
                phase_section(results["phase"], out_dir), frobenius_baselines_section(results),
                surgery_section(results, out_dir), sampling_section(results["surgery"]),
                seeds_section(results), mechanism_section(results, out_dir)]
    if results.get("beyond"):
        sections.append(render_section(results["beyond"], out_dir))
    sections.append(reproducibility_section(results))
    return "\n\n".join(sections) + "\n"


def write_report(results: Results, judgements: Sequence[Judgement], out_dir: Path) -> Path:
    """Write the figures, ``results.json`` and ``report.md`` into ``out_dir`` (atomically); nothing is judged
    or changed here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = results.as_dict()
    text = render(data, judgements, out_dir)
    write_json(out_dir / RESULTS_NAME, data)
    path = out_dir / REPORT_NAME
    atomic_write(path, lambda f: f.write(text.encode()))
    return path
