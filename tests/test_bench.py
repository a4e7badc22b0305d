"""experiments.runs.bench and the fast paths it times: the Gram route gives the reference sections and energy, the
benchmark's cross-checks hold end to end (quick sizes), and its flop counts match closed forms (no speed tested)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.runs.bench import forward_gflop, neox_tokenizer, random_problem, run_bench, sweep_distance, tiny_neox
from theory.anchors import anchors as make_anchors
from theory.bca import untied_sweep
from theory.energy import bundle_energy
from theory.grassmann import check_section, orthonormalize, top_range, top_range_gram, top_range_svd


@pytest.fixture(scope="module")
def bench() -> dict:
    return run_bench(quick=True)


def positive_finite(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_figures_are_positive_and_finite(bench):
    figures = [*bench["peaks"].values(), *bench["bca"]["seconds"].values(), bench["bca"]["gflop"],
               bench["calibration"]["hooked_s"], bench["calibration"]["plain_s"],
               bench["evaluation"]["ours_s"], bench["evaluation"]["lm_eval_s"], bench["evaluation"]["bf16_s"],
               bench["hellaswag"]["packed_s"], bench["hellaswag"]["hflm_s"]]
    assert all(positive_finite(x) for x in figures), figures


def test_bench_cross_checks_hold(bench):
    bca, ev, hs, sizes = bench["bca"], bench["evaluation"], bench["hellaswag"], bench["sizes"]
    assert bca["max_sin_theta"] < 1e-8 and bca["energy_rel_diff"] < 1e-10
    assert hs["choices_differ"] == 0 and hs["max_rel_loglik_diff"] < 1e-4
    assert ev["nll_full_logits"] == pytest.approx(ev["nll_ours"], rel=1e-6)
    assert 0 < abs(ev["bf16_nll_rel_change"]) < 1e-2
    assert ev["predictions_ours"] == sizes["windows"] * (sizes["seq_len"] - 1)
    assert ev["exact_round_trips"] == sizes["windows"]
    assert ev["predictions_lm_eval"] == ev["predictions_ours"] + sizes["windows"]  # lm-eval adds first tokens
    assert bench["calibration"]["tokens"] == sizes["windows"] * sizes["seq_len"]


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_gram_sweep_gives_the_svd_sweeps_sections_and_energy(lam):
    stack, start = random_problem(L=4, n=60, d=12, seed=5)
    anchors = make_anchors(stack, 12, "original") if lam else None
    fast = untied_sweep(stack, start, 12, lam, anchors, top=top_range)
    reference = untied_sweep(stack, start, 12, lam, anchors, top=top_range_svd)
    assert sweep_distance(fast, reference) < 1e-10
    assert bundle_energy(stack, fast, lam, anchors) == pytest.approx(bundle_energy(stack, reference, lam, anchors),
                                                                     rel=1e-12)


@given(n=st.integers(6, 40), extra=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 10 ** 6))
def test_top_range_recovers_a_known_singular_subspace(n, extra, d, seed):
    """F = Q diag(s) V^T with distinct s: the top-d range is span(Q[:, :d]), whatever route top_range takes."""
    k = min(d + extra, n - 1)
    d = min(d, k)
    rng = np.random.default_rng(seed)
    Q, V = orthonormalize(rng.standard_normal((n, k))), orthonormalize(rng.standard_normal((k, k)))
    s = np.sort(rng.uniform(0.5, 3.0, k))[::-1] + np.arange(k, 0, -1) * 0.05
    U = top_range((Q * s) @ V.T, d)
    check_section(U, n, d)
    assert sweep_distance([U], [Q[:, :d]]) < 1e-9


def test_gram_route_declines_a_degenerate_gap_and_top_range_falls_back_to_svd():
    rng = np.random.default_rng(4)
    Q = orthonormalize(rng.standard_normal((30, 6)))
    F = Q * np.array([3.0, 2.0, 1.0, 1.0, 0.5, 0.2])  # s_3 = s_4: no unique top-3 subspace by eigenvalue gap
    assert top_range_gram(F, 3) is None
    assert top_range_gram(F, 2) is not None
    assert sweep_distance([top_range(F, 3)], [top_range_svd(F, 3)]) < 1e-12
    near = Q * np.array([3.0, 2.0, 1.0 + 1e-6, 1.0, 0.5, 0.2])  # a unique top-3 subspace, too close for Gram
    assert top_range_gram(near, 3) is None
    assert sweep_distance([top_range(near, 3)], [Q[:, :3]]) < 1e-7


def test_sweep_distance_is_the_sine_of_a_known_angle():
    theta = 0.3
    U = np.eye(5)[:, :2]
    V = np.stack([np.eye(5)[:, 0], np.cos(theta) * np.eye(5)[:, 1] + np.sin(theta) * np.eye(5)[:, 4]], axis=1)
    assert sweep_distance([U, U], [U, V]) == pytest.approx(math.sin(theta), rel=1e-12)


def test_forward_flops_count_the_linear_weights_and_causal_attention():
    tok = neox_tokenizer()
    model = tiny_neox(tok, context=64)
    h, inter, layers, vocab, T = 64, 256, 2, len(tok), 32
    weights = layers * (3 * h * h + h * h + 2 * h * inter) + vocab * h  # qkv, dense, mlp in/out; embed_out
    expected = 2 * weights * 3 * T + 2 * layers * T * T * h * 3
    assert forward_gflop(model, 3 * T, T) == pytest.approx(expected / 1e9, rel=1e-12)


def test_extrapolation_figure_is_a_monotone_pair_of_solves(bench):
    ex = bench["extrapolation"]
    limit = ex["stopping"]["max_sweeps"]
    assert limit > 0 and ex["d"] >= 1
    for row in (ex["plain"], ex["extrapolated"]):
        assert 1 <= row["sweeps"] <= limit and row["converged"] == (row["stop_reason"] == "gradient")
