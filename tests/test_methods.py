"""The method registry: a user's function registered with one decorator runs through compress() and through the
whole diagnostic of `gbd-audit surgery --method NAME` on a tiny model; the beyond-the-paper section end to end."""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch

from experiments.cli import main
from experiments.compress import METHODS, Compression, LowRankFactors, compress, register_method
from experiments.errors import GbdError
from experiments.model.loading import load_model
from experiments.render.beyond import SECTION_TITLE, render_section
from experiments.runs.beyond import QUESTIONS, run_open_questions
from experiments.runs.context import Context
from experiments.runs.modes import MODES
from experiments.runs.plan import Config
from experiments.runs.rows import compress_config
from theory.stopping import StoppingRule

TOY = '''
import numpy as np
from experiments.compress import LowRankFactors, register_method

@register_method("toy-svd")
def toy_svd(weights, sigmas, biases, d, options):
    """Plain truncated SVD of each W (activation-blind): B = U_d diag(s_d), A = V_d^T, no bias."""
    out = []
    for W in weights:
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        out.append(LowRankFactors(Vt[:d], U[:, :d] * s[:d], None))
    return out
'''


@pytest.fixture
def registry():
    """Names registered during a test are removed afterwards (the registry is process-wide)."""
    before = set(METHODS)
    yield
    for name in set(METHODS) - before:
        del METHODS[name]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny, tiny_neox) -> str:
    return save_tiny(tiny_neox(512), tmp_path_factory.mktemp("tiny-neox-512"), True)


def test_a_registered_function_runs_through_compress(registry):
    @register_method("scaled-v1")
    def scaled(weights, sigmas, biases, d, options):
        base = compress(weights, sigmas, biases, "v1", d)
        return [LowRankFactors(f.A, options["scale"] * f.B, f.bias) for f in base.layers]

    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((5, 4)) for _ in range(2)]
    Ss = [(lambda X: X @ X.T)(rng.standard_normal((4, 9))) for _ in range(2)]
    c = compress(Ws, Ss, None, "scaled-v1", 2, options={"scale": 2.0})
    v1 = compress(Ws, Ss, None, "v1", 2)
    assert c.method == "scaled-v1" and c.ranks == [2, 2]
    assert all(np.allclose(a, 2 * b) for a, b in zip(c.W_hats, v1.W_hats))


def test_registration_errors(registry):
    with pytest.raises(GbdError, match="already registered"):
        register_method("v1")(lambda *a: None)

    @register_method("wrong-shape")
    def wrong(weights, sigmas, biases, d, options):
        return [LowRankFactors(np.ones((d, 3)), np.ones((weights[0].shape[0], d)), None) for _ in weights]

    @register_method("wrong-count")
    def short(weights, sigmas, biases, d, options):
        return []

    Ws, Ss = [np.eye(4)], [np.eye(4)]
    with pytest.raises(GbdError, match="do not give W"):
        compress(Ws, Ss, None, "wrong-shape", 2)
    with pytest.raises(GbdError, match="must return a Compression or 1 LowRankFactors"):
        compress(Ws, Ss, None, "wrong-count", 2)


def test_surgery_method_runs_a_plugin_end_to_end(registry, tiny_dir, tmp_path, capsys):
    plugin = tmp_path / "toy_plugin.py"
    plugin.write_text(textwrap.dedent(TOY))
    argv = ["surgery", "--model", tiny_dir, "--mode", "quick", "--method", "toy-svd", "--plugin", str(plugin),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"toy-svd", "SVD-LLM V1", "original"} <= set(rows)
    assert "Spearman rho, activation_fraction vs PPL" in out
    # the toy's Frobenius error is the Eckart-Young tail, computed here independently from the saved weights
    model = load_model(tiny_dir).model
    Ws = [l.attention.dense.weight.detach().double().numpy() for l in model.gpt_neox.layers]
    s = [np.linalg.svd(W, compute_uv=False) for W in Ws]
    tail = sum(np.sum(x[8:] ** 2) for x in s) / sum(np.sum(x ** 2) for x in s)
    cells = [c.strip() for c in rows["toy-svd"].split("|")[1:-1]]
    assert float(cells[4]) == pytest.approx(tail, rel=1e-3)
    assert float(cells[7]) == pytest.approx(3 * 2 * 8 * 32 / (3 * (32 * 32 + 32)), abs=1e-3)   # 2dD, no bias


SMALL = replace(MODES["quick"], calib_n=2, calib_T=64, ppl_windows=2, hellaswag_items=2, open_sweep_windows=1,
                open_sweep_items=0, open_lambdas=(1.0,), open_mus=(1.0,),
                stopping=StoppingRule(stall_tol=1e-6, max_sweeps=5))


def test_open_questions_end_to_end(tiny_dir, tmp_path):
    loaded = load_model(tiny_dir)
    data = run_open_questions(loaded, SMALL, 0.25, 3, tmp_path / "cache", progress=False)
    json.dumps(data)                                            # JSON-ready
    rows = data["rows"]
    assert {r["table"] for r in rows} == set(QUESTIONS)
    by = {(r["table"], r["label"], r["ratio"]): r for r in rows}
    v1 = by[("cross-layer", "SVD-LLM V1", 0.25)]
    cell = by[("unification-gap", "one-sided, whitened, v1-output anchors", 0.25)]
    assert cell["ppl_window_nll"] == pytest.approx(v1["ppl_window_nll"], rel=1e-6)   # the cube's V1 cell is V1
    assert v1["activation_fraction"] <= min(r["activation_fraction"] for r in rows
                                            if r["kind"] == "attn_out" and r["ratio"] == 0.25
                                            and "activation_fraction" in r) + 1e-12
    sweep_v1 = [by[("ratio-sweep", "SVD-LLM V1", x)]["activation_fraction"] for x in (0.5, 0.25, 0.0625)]
    assert sweep_v1 == sorted(sweep_v1)                          # less rank, more activation error
    assert all(r["windows"] == 1 and "hellaswag_acc" not in r for r in rows if r["table"] == "ratio-sweep")
    for r in (v1, by[("cross-layer", "original", 0.25)]):         # per-item HellaSwag data, for paired tests
        assert r["hellaswag_n"] == 2 and len(r["hellaswag_gold"]) == len(r["hellaswag_pred_norm"]) == 2
        assert r["hellaswag_acc_norm"] == np.mean(np.equal(r["hellaswag_gold"], r["hellaswag_pred_norm"]))
        assert r["hellaswag_acc_norm_stderr"] >= 0
    md = render_section(data, tmp_path / "out")
    assert md.startswith(f"## {SECTION_TITLE}") and md.count("**Answer.**") == len(QUESTIONS)
    assert (tmp_path / "out" / "beyond-ratio.png").is_file()


def test_the_sections_questions_skip_hellaswag_when_the_mode_says_so_and_reuse_the_perplexity(tiny_dir, tmp_path,
                                                                                              monkeypatch):
    """``open_hellaswag`` False (standard): the section's questions are scored on perplexity only, over the same
    windows; every perplexity is the one already evaluated for the same installed factors (served from the cache)."""
    from experiments.runs import rows

    loaded = load_model(tiny_dir)
    scored = run_open_questions(loaded, SMALL, 0.25, 3, tmp_path, questions=["cross-layer"], progress=False)
    calls = []
    real = rows.perplexity_part
    monkeypatch.setattr(rows, "perplexity_part", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    plain = run_open_questions(loaded, replace(SMALL, open_hellaswag=False), 0.25, 3, tmp_path,
                               questions=["cross-layer"], progress=False)
    assert all(r["hellaswag_n"] == 2 for r in scored["rows"]) and not any("hellaswag_n" in r for r in plain["rows"])
    assert [r["ppl_window_nll"] for r in plain["rows"]] == [r["ppl_window_nll"] for r in scored["rows"]]
    assert calls == []


def test_hellaswag_cross_check_scores_a_random_subset_of_the_evaluated_items_again(tiny_dir, tmp_path, monkeypatch):
    """The cross-check's lm-eval half is the uncompressed row's (not scored again); the direct scorer sees the
    run's draw of ``cross_check_items`` items, a subset of the evaluated ones, and both accuracies are over it."""
    from experiments.evaluation.hellaswag import chosen_items
    from experiments.runs import rows, surgery
    from experiments.runs.context import prepare

    loaded = load_model(tiny_dir)
    budget = replace(SMALL, hellaswag_items=6, cross_check_items=3)
    ctx = prepare(loaded, budget, 3, tmp_path, progress=False)
    original = rows.evaluated(ctx, None, budget.ppl_windows, budget.hellaswag_items, progress=False)
    scored, checked = [], []
    real_part, real_direct = rows.hellaswag_part, surgery.hellaswag_direct
    monkeypatch.setattr(rows, "hellaswag_part", lambda *a, **k: scored.append(a) or real_part(*a, **k))
    monkeypatch.setattr(surgery, "hellaswag_direct", lambda m, t, items: checked.append(items) or real_direct(m, t, items))
    cross = surgery.hellaswag_cross_check(ctx, budget)
    subset = ctx.item_index(3)
    assert scored == [] and checked == [chosen_items(item_index=subset)]
    assert set(subset) < set(original["hellaswag_item_index"]) and (cross["n"], cross["of"]) == (3, 6)
    at = [original["hellaswag_item_index"].index(i) for i in subset]
    assert cross["lm_eval_acc"] == np.mean([original["hellaswag_pred"][p] == original["hellaswag_gold"][p] for p in at])
    assert (cross["disagreements_acc"], cross["disagreements_acc_norm"]) == (0, 0)
    assert (cross["direct_acc"], cross["direct_acc_norm"]) == (cross["lm_eval_acc"], cross["lm_eval_acc_norm"])


def test_beyond_command_rejects_an_unknown_question(tiny_dir, capsys, tmp_path):
    assert main(["beyond", "--model", tiny_dir, "--question", "nonsense", "--cache-dir", str(tmp_path), "--quiet"]) == 2
    assert "unknown question(s) ['nonsense']" in capsys.readouterr().err


def test_per_layer_methods_run_on_targets_that_do_not_chain():
    """MLP down projections (D x 4D) do not chain, so they have no lambda unit c; V1 and V2 (lambda = 0) still run
    through the pipeline and equal compress() called directly."""
    rng = np.random.default_rng(1)
    Ws = [rng.standard_normal((4, 8)) for _ in range(3)]                 # each reads 8, writes 4
    Ss = [(lambda X: X @ X.T)(rng.standard_normal((8, 20))) for _ in range(3)]
    ctx = Context(None, "mlp_out", ["a", "b", "c"], Ws, [None] * 3, Ss, torch.empty(0), "", MODES["quick"])
    with pytest.raises(ValueError, match="do not chain"):
        ctx.c
    for method in ("v1", "v2"):
        got = compress_config(ctx, Config(method, method, "main"), 2, MODES["quick"])
        want = compress(Ws, Ss, [None] * 3, method, 2, stopping=MODES["quick"].stopping)
        assert all(np.allclose(a, b) for a, b in zip(got.W_hats, want.W_hats))


def test_equal_factors_are_evaluated_once_whatever_produced_them(tiny_dir, tmp_path, monkeypatch):
    """rows.evaluated keys an evaluation by what is installed: a second Compression with the same factors
    (another method name, another label) is served the first one's row without evaluating; a factor changed in
    its last bit, other windows, or the uncompressed model are evaluated anew; a run without a cache folder
    always evaluates."""
    from experiments.runs import rows
    from experiments.runs.context import prepare

    loaded = load_model(tiny_dir)
    ctx = prepare(loaded, SMALL, 3, tmp_path / "cache", progress=False)
    calls = []
    real = rows.perplexity_part
    monkeypatch.setattr(rows, "perplexity_part", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    v1 = compress(ctx.weights, ctx.sigmas, ctx.biases, "v1", 8)
    twin = Compression("renamed", [LowRankFactors(f.A.copy(), f.B.copy(), f.bias) for f in v1.layers], v1.ranks, [])
    first = rows.evaluated(ctx, v1, 1, 0, progress=False)
    assert rows.evaluated(ctx, twin, 1, 0, progress=False) == first and len(calls) == 1
    nudged = [LowRankFactors(f.A, f.B, f.bias) for f in v1.layers]
    nudged[-1] = LowRankFactors(np.nextafter(v1.layers[-1].A, np.inf), v1.layers[-1].B, v1.layers[-1].bias)
    rows.evaluated(ctx, Compression("v1", nudged, v1.ranks, []), 1, 0, progress=False)
    rows.evaluated(ctx, v1, 2, 0, progress=False)
    original = rows.evaluated(ctx, None, 1, 0, progress=False)
    assert len(calls) == 4 and original["ppl"] != first["ppl"]
    ctx.device = "cuda (another device)"                 # the same factors measured elsewhere: evaluated anew
    rows.evaluated(ctx, v1, 1, 0, progress=False)
    assert len(calls) == 5
    ctx.cache_dir = None
    rows.evaluated(ctx, twin, 1, 0, progress=False)
    assert len(calls) == 6


def test_ratio_sweep_answer_names_a_tie_at_the_printed_precision():
    """Two configurations with the same PPL to the printed digits are a tie, not a win of whichever came first;
    a clearly lower PPL is a single winner."""
    from experiments.render.beyond import _answer_sweep
    rows = [{"ratio": 0.5, "label": "SVD-LLM V1", "ppl": 23.1800001}, {"ratio": 0.5, "label": "SVD-LLM V2", "ppl": 23.18},
            {"ratio": 0.5, "label": "GBD", "ppl": 30.0},
            {"ratio": 0.25, "label": "SVD-LLM V1", "ppl": 26.5}, {"ratio": 0.25, "label": "SVD-LLM V2", "ppl": 26.9}]
    answer = _answer_sweep(rows)
    assert "d/D=0.5: tie of SVD-LLM V1 and SVD-LLM V2 (PPL 23.18)" in answer
    assert "d/D=0.25: SVD-LLM V1 (PPL 26.5)" in answer and "GBD" not in answer


def test_per_kind_answer_calls_v1_best_when_it_has_the_lowest_ppl_and_three_windows_undecided():
    """'best' means lowest PPL: V2 at 1.28x V1 is not the best of mlp_out; a ratio over three windows cannot be
    decided (fewer than five), so it reads 'undecided', never 'not distinguishable'."""
    from experiments.audit.statistics import Interval
    from experiments.render.beyond import _answer_per_kind
    v2 = {"kind": "mlp_out", "label": "SVD-LLM V2", "windows": 3, "ratio": 0.25,
          "vs_v1": Interval(1.28, 0.9, 1.6, 3, "test", decisive=False)}
    answer = _answer_per_kind([v2])
    assert "best: SVD-LLM V1 (lowest PPL); next: SVD-LLM V2" in answer and "undecided (fewer than 5 windows)" in answer
