"""Benchmarks (``gbd-audit bench``): one untied BCA sweep at Pythia-1.4B size, and calibration and evaluation
throughput beside lm-evaluation-harness. Every row is printed as it is measured: name, seconds, throughput,
ratio and what the ratio is; ``run_bench`` returns the same figures as a dict.

1. BCA sweep (theory.bca, the loop body of ``bca_untied``): for i = 0..L, U_i <- top-d range of
   F_i = untied_factor(stack, sections, i, lambda, anchors) (M_i = F_i F_i^T), random Gaussian W_l (n x n,
   entries N(0, 1/n), numpy default_rng(seed)), random starting sections, lambda = 0. Three ways to get the
   top-d range of F (n x k):
     ours     theory.grassmann.top_range: thin SVD of F (k < n);
     naive    eigh of the dense n x n operator M = F F^T;
     Gram     eigh of the k x k Gram matrix F^T F = V S^2 V^T, then U = orth(F V_d) (proposed, bench only).
   All start from the same sections; agreement is max_i ||sin Theta(U_i, U_i')||_F after the sweep
   (not arccos of cosines, whose floor is ~1e-8).
2. Calibration: tokens/s of experiments.calibration.second_moments on the attn_out targets vs a plain forward
   pass (no hooks) over the same windows; ratio = plain tokens/s / hooked tokens/s (the hook overhead).
3. Evaluation: tokens/s of experiments.evaluation.perplexity over the first k WikiText-2 test windows of T
   tokens vs lm-eval's HFLM.loglikelihood_rolling (max_length = T) on one request per window whose text is the
   decoded window; ratio = ours tokens/s / lm-eval tokens/s. Throughput counts the positions fed to the model
   (k T for ours; for lm-eval the re-encoded tokens, each of its windows having as many inputs as
   predictions). lm-eval's time includes its own tokenization of the text (ours gets token ids).
"""
from __future__ import annotations

import io
import math
import os
import platform
import time
from contextlib import redirect_stderr
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from experiments.adapters import adapter_for
from experiments.calibration import calibration_batch, second_moments
from experiments.data import calibration_text, data_dir, wikitext2_test
from experiments.errors import GbdError
from experiments.evaluation import quiet_lm_eval, perplexity, tokenize_corpus
from experiments.loading import LoadedModel, load_model
from theory.bca import untied_sweep
from theory.grassmann import Array, orthonormalize, random_section, sin_theta_fro, top_eigenspace, top_range
from theory.stack import Stack

R = TypeVar("R")
TopRange = Callable[[Array, int], Array]
NEOX_TOKENIZER = "gpt-neox-20b-tokenizer/20B_tokenizer.json"
NEOX_EOT = "<|endoftext|>"
SEED = 0            # weights and starting sections of the BCA problem
CALIBRATION_SEED = 3  # SVD-LLM's calibration seed


@dataclass(frozen=True)
class BenchSizes:
    """Problem sizes: BCA stack (L layers, n x n, rank d) and the throughput windows (count x T tokens)."""

    L: int
    n: int
    d: int
    sweep_repeats: int
    seq_len: int
    windows: int
    pass_repeats: int


QUICK = BenchSizes(L=4, n=256, d=64, sweep_repeats=3, seq_len=128, windows=2, pass_repeats=2)
FULL = BenchSizes(L=24, n=2048, d=512, sweep_repeats=1, seq_len=512, windows=4, pass_repeats=1)  # Pythia-1.4B W_O


# --------------------------------------------------------------------------------------------- printing, timing
COLUMNS = (("name", 46), ("seconds", 10), ("throughput", 22), ("ratio", 9), ("ratio is", 0))


def _line(cells: Sequence[str]) -> str:
    return "  ".join(f"{c:<{w}}" if w else c for c, (_, w) in zip(cells, COLUMNS))


def print_row(name: str, seconds: float, throughput: str, ratio: float, ratio_is: str) -> None:
    """One table line: name, seconds, throughput, ratio, what the ratio is."""
    print(_line([name, f"{seconds:.4g}", throughput, f"{ratio:.3g}", ratio_is]), flush=True)


def best_time(fn: Callable[[], R], repeats: int) -> tuple[float, R]:
    """min over ``repeats`` runs of the perf_counter seconds of fn(), and the last run's result."""
    best, result = math.inf, None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine_facts() -> dict[str, Any]:
    """CPU count (and the CPUs this process may use), torch threads, the BLAS thread variable, the 1-minute load
    average (above the CPU count, other processes compete and threaded BLAS timings can be far off), versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "unset",
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------------- BCA sweep
def top_range_gram(F: Array, d: int) -> Array:
    """Top-d left singular subspace of F (n x k) from the k x k Gram matrix (proposed; not used by theory/).

    F^T F = V S^2 V^T (eigh), U = orth(F V_d) = span of the top-d left singular vectors F V_d S_d^{-1}.
    Squaring S costs accuracy: the angle error is about eps s_1^2 / (s_d^2 - s_{d+1}^2), fine on
    well-conditioned F. Falls back to top_range (thin SVD / eigh) when k >= n, when F is not finite (its
    error message) or when the numerical rank is below d (s_d^2 <= k eps s_1^2), where F V_d is not a basis.
    """
    n, k = F.shape
    if k >= n or k < d or not np.all(np.isfinite(F)):
        return top_range(F, d)
    evals, V = np.linalg.eigh(F.T @ F)
    if evals[-d] <= k * np.finfo(np.float64).eps * evals[-1]:
        return top_range(F, d)
    return orthonormalize(F @ V[:, -d:])


def naive_top_range(F: Array, d: int) -> Array:
    """Top-d eigenspace of the dense n x n operator M = F F^T (eigh): the naive way."""
    return top_eigenspace(F @ F.T, d)


TOP_RANGES: dict[str, TopRange] = {"top_range": top_range, "naive eigh F F^T": naive_top_range,
                                   "Gram eigh F^T F": top_range_gram}


def sweep_distance(a: Sequence[Array], b: Sequence[Array]) -> float:
    """max_i ||sin Theta(a_i, b_i)||_F over the interfaces (0 iff every pair spans the same subspace)."""
    return max(sin_theta_fro(x, y) for x, y in zip(a, b, strict=True))


def random_problem(L: int, n: int, d: int, seed: int = SEED) -> tuple[Stack, list[Array]]:
    """L Gaussian n x n weights with N(0, 1/n) entries and L+1 Haar-random sections, from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    stack = Stack.of([rng.standard_normal((n, n)) / np.sqrt(n) for _ in range(L)])
    return stack, [random_section(n, d, rng) for _ in range(L + 1)]


def bench_bca(sizes: BenchSizes, seed: int = SEED) -> dict[str, Any]:
    """Time one untied BCA sweep (lambda = 0) with each top-range method; ratios and distances to ``top_range``."""
    stack, start = random_problem(sizes.L, sizes.n, sizes.d, seed)
    seconds: dict[str, float] = {}
    results: dict[str, list[Array]] = {}
    distance: dict[str, float] = {}
    for method, top in TOP_RANGES.items():  # top_range first: the reference
        seconds[method], results[method] = best_time(lambda: untied_sweep(stack, start, sizes.d, top=top),
                                                     sizes.sweep_repeats)
        distance[method] = sweep_distance(results["top_range"], results[method])
        print_row(f"BCA sweep, {method}", seconds[method], f"{(sizes.L + 1) / seconds[method]:.3g} interfaces/s",
                  seconds[method] / seconds["top_range"],
                  f"time / top_range time; max sin-theta to top_range {distance[method]:.1e}")
    return {"L": sizes.L, "n": sizes.n, "d": sizes.d, "lambda": 0.0, "seed": seed, "repeats": sizes.sweep_repeats,
            "seconds": seconds, "max_sin_theta_to_top_range": distance,
            "naive_over_ours": seconds["naive eigh F F^T"] / seconds["top_range"],
            "gram_over_ours": seconds["Gram eigh F^T F"] / seconds["top_range"]}


# --------------------------------------------------------------------------------------------- models
def neox_tokenizer() -> PreTrainedTokenizerFast:
    """The GPT-NeoX-20B (Pythia) tokenizer from the shared data, with <|endoftext|> as BOS/EOS/pad (lm-eval's
    rolling windows need a prefix token)."""
    path = data_dir() / NEOX_TOKENIZER
    if not path.is_file():
        raise GbdError(f"tokenizer file {path} not found (data directory: set GBD_DATA_DIR)")
    return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=NEOX_EOT, eos_token=NEOX_EOT,
                                   pad_token=NEOX_EOT)


def tiny_neox(tokenizer: PreTrainedTokenizerFast, context: int, seed: int = SEED) -> GPTNeoXForCausalLM:
    """A randomly initialised 2-layer GPT-NeoX (hidden 64) over the tokenizer's vocabulary; global RNG untouched."""
    config = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                           vocab_size=len(tokenizer), max_position_embeddings=context)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPTNeoXForCausalLM(config).eval()


def bench_model(model: str | None, sizes: BenchSizes, quick: bool) -> LoadedModel:
    """``load_model(model)``; with quick and no model, the tiny random GPT-NeoX instead (seconds, no weights)."""
    if model is not None or not quick:
        return load_model(model)
    tokenizer = neox_tokenizer()
    return LoadedModel(tiny_neox(tokenizer, sizes.seq_len), tokenizer, "tiny random GPT-NeoX",
                       "built in code (hidden 64, 2 layers, GPT-NeoX-20B tokenizer)")


# --------------------------------------------------------------------------------------------- throughput
def _plain_forward(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    """The forward passes second_moments makes (batch size 1, use_cache=False), without hooks."""
    with torch.no_grad():
        for row in input_ids.split(1):
            model(row, use_cache=False)


def bench_calibration(loaded: LoadedModel, sizes: BenchSizes) -> dict[str, Any]:
    """Tokens/s of second_moments on the attn_out targets vs plain forward passes over the same windows."""
    model = loaded.model
    names = adapter_for(model).target_names(model, "attn_out")
    windows = calibration_batch(loaded.tokenizer, calibration_text().text, sizes.windows, sizes.seq_len,
                                CALIBRATION_SEED)
    _plain_forward(model, windows[:1])  # warm-up: first-call allocations are not throughput
    tokens = windows.numel()
    hooked_s, _ = best_time(lambda: second_moments(model, names, windows, progress=False, cache=None),
                            sizes.pass_repeats)
    plain_s, _ = best_time(lambda: _plain_forward(model, windows), sizes.pass_repeats)
    overhead = hooked_s / plain_s  # = plain tokens/s / hooked tokens/s
    print_row(f"calibration, second_moments ({len(names)} hooks)", hooked_s, f"{tokens / hooked_s:.4g} tok/s",
              overhead, "hook overhead: plain tok/s / hooked tok/s")
    print_row("calibration, plain forward (no hooks)", plain_s, f"{tokens / plain_s:.4g} tok/s", 1.0, "reference")
    return {"targets": len(names), "tokens": tokens, "hooked_s": hooked_s, "plain_s": plain_s,
            "hooked_tok_s": tokens / hooked_s, "plain_tok_s": tokens / plain_s, "hook_overhead": overhead}


def lm_eval_rolling_nll(loaded: LoadedModel, windows: torch.Tensor,
                        repeats: int = 1) -> tuple[float, float, int, int]:
    """(best seconds, total NLL, tokens scored, windows re-encoded exactly) of lm-eval's loglikelihood_rolling on
    one request per window, text = the decoded window, HFLM(batch_size=1, max_length=T)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    with quiet_lm_eval():
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1, max_length=windows.shape[1])
    texts = [loaded.tokenizer.decode(w) for w in windows.tolist()]
    encoded = [lm.tok_encode(text) for text in texts]
    exact = sum(enc == w for enc, w in zip(encoded, windows.tolist()))
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=i)
                for i, text in enumerate(texts)]
    with redirect_stderr(io.StringIO()):  # lm-eval's per-window progress bars ignore disable_tqdm
        seconds, logliks = best_time(lambda: lm.loglikelihood_rolling(requests, disable_tqdm=True), repeats)
    return seconds, -float(sum(logliks)), sum(len(e) for e in encoded), exact


def bench_evaluation(loaded: LoadedModel, sizes: BenchSizes) -> dict[str, Any]:
    """Tokens/s and total NLL of perplexity() vs lm-eval's loglikelihood_rolling on the first k test windows."""
    ids = tokenize_corpus(loaded.tokenizer, wikitext2_test().text)
    T, k = sizes.seq_len, sizes.windows
    if ids.numel() < k * T:
        raise GbdError(f"WikiText-2 test has {ids.numel()} tokens, fewer than {k} windows of {T}")
    ours_s, ours = best_time(lambda: perplexity(loaded.model, ids, seq_len=T, max_windows=k, progress=False),
                             sizes.pass_repeats)
    lm_s, lm_nll, lm_tokens, exact = lm_eval_rolling_nll(loaded, ids[: k * T].view(k, T), sizes.pass_repeats)
    ours_tps, lm_tps = k * T / ours_s, lm_tokens / lm_s
    rel = (lm_nll - ours.nll_sum) / ours.nll_sum
    print_row("evaluation, perplexity (ours)", ours_s, f"{ours_tps:.4g} tok/s", ours_tps / lm_tps,
              "ours tok/s / lm-eval tok/s")
    print_row("evaluation, lm-eval loglikelihood_rolling", lm_s, f"{lm_tps:.4g} tok/s", 1.0, "reference")
    print(f"  total NLL: ours {ours.nll_sum:.6g} over {ours.n_tokens} predictions, lm-eval {lm_nll:.6g} over "
          f"{lm_tokens} predictions; relative difference (lm-eval - ours) / ours = {rel:+.3%}")
    print(f"  {exact}/{k} decoded windows re-encode to exactly their {T} tokens. lm-eval also predicts each "
          f"window's first token from the prefix token alone ({k} extra, usually poorly predicted, tokens), "
          "ours predicts only the T-1 next tokens of each window", flush=True)
    return {"ours_s": ours_s, "lm_eval_s": lm_s, "ours_tok_s": ours_tps, "lm_eval_tok_s": lm_tps,
            "ours_over_lm_eval": ours_tps / lm_tps, "nll_ours": ours.nll_sum, "nll_lm_eval": lm_nll,
            "nll_rel_diff": rel, "predictions_ours": ours.n_tokens, "predictions_lm_eval": lm_tokens,
            "exact_round_trips": exact}


# --------------------------------------------------------------------------------------------- entry point
def run_bench(quick: bool = False, model: str | None = None) -> dict[str, Any]:
    """Run and print the three benchmarks (module docstring); return every figure as a dict.

    ``quick``: L=4, n=256, d=64, and (unless ``model`` is given) a tiny random GPT-NeoX with 2 windows of 128
    tokens. Otherwise Pythia-1.4B size (L=24, n=2048, d=512) and ``load_model(model)`` with 4 windows of 512.
    """
    sizes = QUICK if quick else FULL
    facts = machine_facts()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in facts.items()))
    print(_line([name for name, _ in COLUMNS]))
    bca = bench_bca(sizes)
    loaded = bench_model(model, sizes, quick)
    print(f"model: {loaded.name} ({loaded.source}); {sizes.windows} windows of T={sizes.seq_len} tokens, "
          f"batch size 1, best of {sizes.pass_repeats}")
    calibration = bench_calibration(loaded, sizes)
    evaluation = bench_evaluation(loaded, sizes)
    return {"machine": facts, "sizes": asdict(sizes), "model": f"{loaded.name} ({loaded.source})", "bca": bca,
            "calibration": calibration, "evaluation": evaluation}
