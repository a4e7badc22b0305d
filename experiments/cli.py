"""``gbd-audit`` (also ``python -m experiments``): the command line of the audit.

    gbd-audit [report] [--model M] [--mode quick|standard|full]   theory + phase + surgery -> reports/<model>-<mode>/
                       [--beyond]                                 ... + what the paper left open, as a section
    gbd-audit verify   [--mode ...]                               the theorem audits on seeded stacks
    gbd-audit phase    [--model M]                                Frobenius phase diagram on real weights
    gbd-audit surgery  [--model M] [--only LABEL ...]             calibrate, compress, install, evaluate
    gbd-audit surgery  --method NAME [--plugin MODULE]            any registered method through the diagnostic
    gbd-audit beyond   [--model M] [--question Q ...]             what the paper left open -> beyond.md, beyond.json
    gbd-audit bench    [--quick]                                  timings and ratios beside lm-eval
    gbd-audit compress --method NAME --out DIR [--dense]          calibrate, compress and write the model

Models come from --model or $GBD_MODEL (default: the offline SmolLM2-135M-Instruct GGUF); data from
$GBD_DATA_DIR (default: the data shipped in the package). Failures the user can fix print one line and exit with
status 2.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from experiments.data import CALIBRATION_SOURCES, HELLASWAG_SOURCES
from experiments.errors import GbdError
from experiments.runs.modes import DEFAULT_SEED, MODES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("GBD_CACHE_DIR", REPO / ".cache" / "gbd"))


def _common(p: argparse.ArgumentParser, model: bool = True, mode_default: str = "standard") -> None:
    p.add_argument("--mode", choices=tuple(MODES), default=mode_default,
                   help=f"sample sizes: quick (minutes), standard, full (paper-size; GPU advised) "
                        f"[default: {mode_default}]")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of calibration windows and theory stacks [{DEFAULT_SEED}]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if model:
        p.add_argument("--model", default=None,
                       help="'smollm2' (offline default), a .gguf file, a local model directory or a hub id such "
                            "as EleutherAI/pythia-70m [$GBD_MODEL or smollm2]")
        p.add_argument("--kind", default="attn_out",
                       help="which layers: attn_out (W_O, the paper's), mlp_out, mlp_in, mlp_gate, qkv / q / k / v, or "
                            "the composites mlp_chain (up, gate, down per block) and q_k_v [attn_out]")
        p.add_argument("--ratio", type=float, default=0.25, help="rank ratio d / D [0.25, the paper's]")
        p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                       help=f"calibration and per-configuration cache [$GBD_CACHE_DIR or {DEFAULT_CACHE}]")
        p.add_argument("--device", default=None,
                       help="where the model runs: cpu or cuda[:N]; the solvers stay on the CPU [$GBD_DEVICE or cpu]")
        p.add_argument("--calibration", choices=CALIBRATION_SOURCES, default=None,
                       help="calibration text: local (the packaged tokenized WikiText-2 valid) or wikitext2-train "
                            "(the paper's: the wikitext-2-raw-v1 train split through datasets, online) "
                            "[$GBD_CALIBRATION or local]")
        p.add_argument("--hellaswag", choices=HELLASWAG_SOURCES, default=None,
                       help="HellaSwag: local (the packaged validation file) or lm-eval (lm-eval's own hellaswag "
                            "task and its dataset, online) [$GBD_HELLASWAG or local]")


def _dtype_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32",
                   help="perplexity precision: float32, or bfloat16 autocast (faster on CPUs with bf16; the report "
                        "prints its measured NLL change) [float32]")


def _sample_option(p: argparse.ArgumentParser) -> None:
    from experiments.sampling import SAMPLINGS

    p.add_argument("--sample", choices=SAMPLINGS, default="random",
                   help="which perplexity windows and HellaSwag items: random (drawn without replacement, seeded "
                        "by --seed, one draw for every configuration) or first (the first k: contiguous, not "
                        "representative; named in the report) [random]")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gbd-audit", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=__doc__.split("\n\n", 1)[1])
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("report", help="the full reproduction report (the main job)")
    _common(p)
    p.add_argument("--out", type=Path, default=None, help="output folder [reports/<model>-<mode>]")
    p.add_argument("--beyond", action="store_true",
                   help="also measure what the paper left open (as `gbd-audit beyond`), as a section of the report")
    _dtype_option(p)
    _sample_option(p)
    p.set_defaults(run=cmd_report)
    p = sub.add_parser("verify", help="the theorem audits (BCA, Theorem 1, Theorem 2, Corollary 3)")
    _common(p, model=False)
    p.set_defaults(run=cmd_verify)
    p = sub.add_parser("phase", help="Frobenius phase diagram over lambda x tying on a model's weights")
    _common(p)
    p.set_defaults(run=cmd_phase)
    p = sub.add_parser("surgery", help="calibrate, compress, install and evaluate the configurations")
    _common(p)
    p.add_argument("--only", nargs="+", metavar="LABEL", default=None,
                   help="run only these configuration labels (e.g. 'original' 'SVD-LLM V1')")
    p.add_argument("--method", default=None, metavar="NAME",
                   help="run this registered method (experiments.compress.register_method) beside the references")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module (dotted name or .py file) first, to register its methods; repeatable")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the table and every row to OUT/surgery.md and OUT/surgery.json")
    _dtype_option(p)
    _sample_option(p)
    p.set_defaults(run=cmd_surgery)
    p = sub.add_parser("beyond", help="what the paper left open: cross-layer objectives, controls, ratio sweep")
    _common(p, mode_default="quick")
    p.add_argument("--question", nargs="+", default=None, metavar="Q",
                   help="only these questions (cross-layer, unification-gap, whitened-bundle, table4, ratio-sweep, "
                        "other-weights)")
    p.add_argument("--out", type=Path, default=None, help="output folder [reports/<model>-<mode>]")
    _sample_option(p)
    p.set_defaults(run=cmd_beyond)
    p = sub.add_parser("bench", help="one BCA sweep at Pythia-1.4B size; calibration and evaluation throughput "
                                     "beside lm-evaluation-harness")
    p.add_argument("--quick", action="store_true", help="smaller sizes (seconds) instead of Pythia-1.4B size")
    p.add_argument("--model", default=None, help="model for the throughput part [$GBD_MODEL or smollm2]")
    p.set_defaults(run=cmd_bench)
    p = sub.add_parser("compress", help="calibrate, compress and write the model: two factors per layer, or "
                                        "--dense a standard checkpoint any harness loads")
    _common(p, mode_default="quick")
    p.add_argument("--method", required=True, metavar="NAME",
                   help="a method of the registry: v1, v2, gbd, gbd-tied, bs-core, anchored, basis-sharing, ...")
    p.add_argument("--out", type=Path, required=True, help="folder to write the model into")
    p.add_argument("--dense", action="store_true",
                   help="write W_hat = B A as a standard checkpoint (config, tokenizer, safetensors) that "
                        "transformers and lm-eval's hf model load without this project; default: the factored "
                        "model (fewer parameters), read by experiments.model.lowrank.load_compressed")
    p.set_defaults(run=cmd_compress)
    return top


def default_out(model_name: str, mode: str) -> Path:
    """reports/<model name, lower case, [a-z0-9.-] only>-<mode>."""
    slug = re.sub(r"[^a-z0-9.]+", "-", model_name.lower()).strip("-")
    return REPO / "reports" / f"{slug}-{mode}"


def check_options(args: argparse.Namespace) -> None:
    """Options argparse cannot check by type: a seed >= 0 and a rank ratio in (0, 1] (before any work)."""
    if args.seed < 0:
        raise GbdError(f"--seed must be >= 0, got {args.seed}")
    ratio = getattr(args, "ratio", None)
    if ratio is not None and not 0 < ratio <= 1:
        raise GbdError(f"rank ratio d/D (--ratio) must lie in (0, 1], got {ratio}")


def shown_command(argv: Sequence[str]) -> str:
    """The command line as the report prints it: arguments that are existing paths shown without their absolute
    location (``experiments.data.display_path``)."""
    from experiments.data import display_path

    shown = [display_path(a) if os.path.isabs(os.path.expanduser(a)) and os.path.exists(os.path.expanduser(a))
             else a for a in argv]
    return "gbd-audit " + " ".join(shlex.quote(a) for a in shown)


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
ONLINE_SOURCES = {"calibration": ("GBD_CALIBRATION", "wikitext2-train", "local"),
                  "hellaswag": ("GBD_HELLASWAG", "lm-eval", "local")}


@contextmanager
def chosen_sources(args: argparse.Namespace) -> Iterator[None]:
    """--calibration and --hellaswag as $GBD_CALIBRATION and $GBD_HELLASWAG for the duration (restored after).
    An online source while HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set fails here, before any work, naming
    the offline alternative."""
    saved = {variable: os.environ.get(variable) for variable, _, _ in ONLINE_SOURCES.values()}
    try:
        for option, (variable, online, offline) in ONLINE_SOURCES.items():
            if getattr(args, option, None) is not None:
                os.environ[variable] = getattr(args, option)
            offline_set = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "0").lower() not in ("", "0", "false")]
            if os.environ.get(variable) == online and offline_set:
                raise GbdError(f"--{option} {online} needs the internet but {offline_set[0]} is set; offline, use "
                               f"--{option} {offline}")
        yield
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Every tqdm bar disabled for the duration (ours, lm-eval's, the model loader's and datasets'), whatever
    ``disable`` its caller passes; restored afterwards."""
    from tqdm import tqdm

    original = tqdm.__init__

    def quiet_init(self: Any, *a: Any, **kw: Any) -> None:
        kw["disable"] = True
        original(self, *a, **kw)

    tqdm.__init__ = quiet_init
    try:
        yield
    finally:
        tqdm.__init__ = original


def cmd_report(args: argparse.Namespace) -> None:
    from experiments.model.loading import DEFAULT_MODEL
    from experiments.reproduce import reproduce

    command = shown_command(args.argv)
    model = args.model or os.environ.get("GBD_MODEL") or DEFAULT_MODEL
    out = args.out or default_out(Path(model).stem if model.endswith(".gguf") else model.split("/")[-1], args.mode)
    results, path = reproduce(model, args.mode, args.seed, args.ratio, args.kind, out, args.cache_dir, command,
                              progress=not args.quiet, dtype=args.dtype, beyond=args.beyond, device=args.device,
                              sample=args.sample)
    verdicts = results["verdicts"]
    width = max(len(k) for k in verdicts)
    for claim_id, v in verdicts.items():
        print(f"{claim_id:<{width}}  {v['verdict']:<15}  {v['measured']}")
    print(f"report written to {path}")


def cmd_verify(args: argparse.Namespace) -> None:
    from experiments.audit.ledger import claim
    from experiments.audit.verdicts import judge
    from experiments.runs.theory_audit import audit_theory

    results = {"theory": audit_theory(args.mode, args.seed)}
    theory = results["theory"]
    for claim_id in ("bca-monotone", "thm1-bound", "thm1-rate", "thm2", "cor3", "cor3-exact"):
        j = judge(claim(claim_id), results)
        print(f"{claim_id}: {j.verdict.value}\n  measured: {j.measured}\n  why: {j.why}")
    bca = theory["bca"]
    print(f"BCA: largest energy drop {bca['max_drop']:.2e} over {bca['runs']} runs; reached the best solver's "
          f"energy in {bca['reached_best']}/{bca['comparisons']} cases (worst gap {bca['worst_gap']:.2e})")
    print("  stop reasons: " + ", ".join(f"{k} {v}" for k, v in bca["stop_reasons"].items()))
    print("  end points: " + ", ".join(f"{k} {v}" for k, v in bca["endpoints"].items())
          + f"; solvers' own end points failing their check: {len(bca['solver_failures'])}")
    print("  plain tied step (no shift): " + ", ".join(f"{k} {v}" for k, v in bca["plain_step"].items()))
    t1 = theory["theorem1"]
    print(f"Theorem 1: both bounds held on {t1['bound_holds']}/{t1['stacks']} stacks (a priori "
          f"{t1['prior_bound_holds']}); slope by lambda/c window: "
          + ", ".join(f"{k}: {v['median']:.2f}" for k, v in t1["tightness"]["window_slopes"].items()))
    print("Theorem 2, the sharp statement:")
    for statement, checked, result in theory["theorem2"]["sharp"]["rows"]:
        print(f"  [{result}] {statement}\n      {checked}")
    families = theory["theorem2"]["by_family"].items()
    print("  undecided per family (n <= 4 among them; decided by a certified global maximum): "
          + ", ".join(f"{f} {r['undecided']} ({r['undecided_small']}; {r['global']})" for f, r in families))
    for name, e in theory["theorem2"]["sharp"]["examples"].items():
        print(f"  exact: {name}: W = {e['weights']}, sum B^2 = {e['sum_B2']}, gradient {e['gradient']}, "
              f"U_BS {e['u_bs']}, verdict {e['verdict']}")
    c3 = theory["corollary3"]
    third = c3["third_order"]
    worst = max((r["rel_err_t1"] for r in c3["rows"]), default=float("nan"))
    print(f"Corollary 3, part 1 (the paper's second-order form as exact): refuted, relative error at U_BS up "
          f"to {worst:.2e}, order t^{third['slope_order2']:.2f}")
    print(f"Corollary 3, part 2 (the exact principal-angle form): holds, largest relative error "
          f"{c3['exact_max_relative_error']:.1e} over {c3['exact_stacks']} stacks; with the 3rd / 4th order "
          f"terms the error falls like t^{third['slope_order3']:.2f} / t^{third['slope_order4']:.2f}")


def cmd_phase(args: argparse.Namespace) -> None:
    from experiments.model.loading import load_model
    from experiments.render.markdown import table
    from experiments.render.report import PHASE_HEADER, phase_rows
    from experiments.runs.phase import phase_part

    loaded = load_model(args.model, device=args.device)
    phase = phase_part(loaded, args.kind, args.ratio, args.mode, progress=not args.quiet)
    print(f"{loaded.name} ({loaded.source}): {phase['L']} layers {args.kind}, d = {phase['d']}; per-layer "
          f"Eckart-Young floor {phase['eckart_young_fraction']:.4f}")
    print(table(PHASE_HEADER, phase_rows(phase)))


def cmd_surgery(args: argparse.Namespace) -> None:
    from experiments.cache import ensure_writable
    from experiments.model.loading import load_model
    from experiments.runs.plugin import load_plugin, method_part
    from experiments.render.surgery import surgery_text
    from experiments.runs.surgery import surgery_part

    if args.method is not None and args.only is not None:
        raise GbdError("--method runs its own rows beside the references; it does not combine with --only")
    if args.out is not None:
        ensure_writable(args.out, "output folder")     # before the model is read
    for plugin in args.plugin:
        load_plugin(plugin)
    started = time.time()
    loaded = load_model(args.model, device=args.device)
    if args.method is not None:
        part = method_part(loaded, args.method, args.kind, args.ratio, args.mode, args.seed, args.cache_dir,
                           progress=not args.quiet, dtype=args.dtype, sample=args.sample)
    else:
        part = surgery_part(loaded, args.kind, args.ratio, args.mode, args.seed, args.cache_dir, args.only,
                            progress=not args.quiet, dtype=args.dtype, sample=args.sample)
    text = surgery_text(loaded.name, args.kind, part)
    print(text)
    if args.out is not None:
        from experiments.cache import write_json
        from experiments.reproduce import model_info, versions

        command, seconds = shown_command(args.argv), time.time() - started
        header = (f"# Surgery, {args.mode} mode: {loaded.name}\n\n    {command}\n\n"
                  f"The model ran on {loaded.device}, the solvers on the CPU; took {seconds / 60:.1f} min.\n\n")
        (args.out / "surgery.md").write_text(header + text + "\n")
        write_json(args.out / "surgery.json", {"command": command, "mode": args.mode, "seed": args.seed,
                                               "model": model_info(loaded), "versions": versions(),
                                               "seconds": seconds, "surgery": part})
        print(f"written to {args.out / 'surgery.md'} and {args.out / 'surgery.json'}")


def cmd_beyond(args: argparse.Namespace) -> None:
    from experiments.cache import write_json
    from experiments.model.loading import DEFAULT_MODEL, load_model
    from experiments.render.beyond import render_section
    from experiments.runs.beyond import check_questions, run_open_questions
    from experiments.runs.modes import mode

    check_questions(args.question)
    model = args.model or os.environ.get("GBD_MODEL") or DEFAULT_MODEL
    loaded = load_model(model, device=args.device)
    out = args.out or default_out(loaded.name, args.mode)
    data = run_open_questions(loaded, mode(args.mode), args.ratio, args.seed, args.cache_dir, args.question,
                              progress=not args.quiet, sample=args.sample)
    write_json(out / "beyond.json", data)
    (out / "beyond.md").write_text(render_section(data, out) + "\n")
    print(f"written to {out / 'beyond.md'} and {out / 'beyond.json'}")


def cmd_bench(args: argparse.Namespace) -> None:
    from experiments.runs.bench import run_bench

    run_bench(quick=args.quick, model=args.model)


def cmd_compress(args: argparse.Namespace) -> None:
    from experiments.model.loading import load_model
    from experiments.runs.export import check_export, compress_and_save

    check_export(args.method, args.ratio, args.out)      # before the model is read
    loaded = load_model(args.model, device=args.device)
    record = compress_and_save(loaded, args.method, args.ratio, args.mode, args.seed, args.cache_dir, args.out,
                               args.kind, args.dense, progress=not args.quiet)
    print(f"{record['model']}: {args.kind} compressed by {args.method} at d = {record['d']}; target parameters "
          f"{record['target_parameters_original']:,} -> {record['target_parameters_kept']:,}; "
          f"{record['format']} model written to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["report", *argv]     # no command: the report (no arguments at all: offline, default options)
    args = parser().parse_args(argv)
    args.argv = argv
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        if hasattr(args, "seed"):
            check_options(args)
        with chosen_sources(args):
            if getattr(args, "quiet", False):
                with no_progress_bars():
                    run(args)
            else:
                run(args)
    except GbdError as e:
        print(f"gbd-audit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gbd-audit: interrupted; finished parts are cached, the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
