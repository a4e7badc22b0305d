"""Other weight classes on a tiny random Llama: the MLP chain bundle (per-interface ranks) and Q/K/V on one shared
whitened input basis, each compressed, installed and evaluated end to end; full rank reproduces W; parameter parity
with V1 per matrix; the shared basis is the Eckart-Young optimum of the stacked whitened matrix."""
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from experiments.compress import compress, errors
from experiments.errors import GbdError
from experiments.evaluation.perplexity import windows_available
from experiments.methods.other_weights import MLP_CHAIN, QKV_SHARED, fused_v1, per_matrix_v1
from experiments.methods.ranks import budget_optimal_ranks, interface_ranks, matrix_ranks, qkv_optimal_ranks
from experiments.model.loading import LoadedModel, load_model
from experiments.model.lowrank import installed, module_parameters, read_targets
from experiments.model.moments import second_moments
from experiments.render.beyond import render_section
from experiments.runs.beyond import run_open_questions
from experiments.runs.context import Context
from experiments.runs.modes import MODES
from experiments.runs.rows import measure, perplexity_part
from theory.stopping import StoppingRule

D, I, KV = 16, 40, 8          # hidden, MLP width, K/V width (2 of 4 heads of 4)
CASES = [("mlp_chain", MLP_CHAIN, {}), ("mlp_chain", MLP_CHAIN, {"whitened": False}), ("q_k_v", QKV_SHARED, {})]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=D, intermediate_size=I, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                         max_position_embeddings=64)).eval()
    calib = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(1))
    test = torch.randint(0, 64, (300,), generator=torch.Generator().manual_seed(2))
    return model, calib, test


def _targets(llama, kind):
    model, calib, _ = llama
    names, weights, biases = read_targets(model, kind)
    sigma = second_moments(model, names, calib, progress=False)
    return names, weights, biases, [sigma[n] for n in names]


def _context(model, kind, names, weights, biases, sigmas, test) -> Context:
    """The pipeline's context of the tiny model (no tokenizer: perplexity only, no cache)."""
    return Context(LoadedModel(model, None, "tiny llama", "test"), kind, names, weights, biases, sigmas, test, "",
                   MODES["quick"], windows_available=windows_available(model, test))


def _compress(kind, method, weights, sigmas, biases, ratio, **options):
    ranks = matrix_ranks(weights, ratio)
    opts = {"ranks": ranks} if method == QKV_SHARED else {}
    return compress(weights, sigmas, biases, method, min(ranks), options={**opts, **options}), ranks


def test_composite_kinds_list_their_parts_block_by_block_and_other_families_say_what_is_missing(llama):
    model = llama[0]
    names, weights, _ = read_targets(model, "mlp_chain")
    assert [n.rsplit(".", 1)[-1] for n in names] == ["up_proj", "gate_proj", "down_proj"] * 3
    assert [W.shape for W in weights[:3]] == [(I, D), (I, D), (D, I)]
    assert [n.rsplit(".", 1)[-1] for n in read_targets(model, "q_k_v")[0][:3]] == ["q_proj", "k_proj", "v_proj"]
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=64))
    with pytest.raises(GbdError, match="no target kind 'mlp_gate' \\(needed by 'mlp_chain'\\)"):
        read_targets(neox, "mlp_chain")
    with pytest.raises(GbdError, match="no target kind 'q'"):
        read_targets(neox, "q_k_v")


@pytest.mark.parametrize("kind, method, options", CASES)
def test_full_rank_reproduces_every_weight_and_the_model(llama, kind, method, options):
    model, _, test = llama
    names, weights, biases, sigmas = _targets(llama, kind)
    comp, _ = _compress(kind, method, weights, sigmas, biases, 1.0, **options)
    err = errors(weights, sigmas, comp)
    assert err["activation_fraction"] < 1e-20 and err["frobenius_fraction"] < 1e-20
    ctx = _context(model, kind, names, weights, biases, sigmas, test)
    row = measure(ctx, comp, 2, 0, progress=False)
    assert row["ppl"] == pytest.approx(perplexity_part(ctx, ctx.window_index(2), progress=False)["ppl"], rel=1e-5)


@pytest.mark.parametrize("kind, method, options", CASES)
def test_compressed_end_to_end_at_v1_parameter_parity(llama, kind, method, options):
    model, _, test = llama
    names, weights, biases, sigmas = _targets(llama, kind)
    comp, ranks = _compress(kind, method, weights, sigmas, biases, 0.25, **options)
    v1 = per_matrix_v1(weights, sigmas, biases, ranks)
    assert [f.rank for f in v1.layers] == [max(1, round(0.25 * min(W.shape))) for W in weights]
    if method == MLP_CHAIN:
        assert comp.n_params == v1.n_params                    # every matrix at V1's rank d
    else:                                                      # k = floor(budget / (D + n_q + n_k + n_v))
        assert v1.n_params - 3 * (D + D + 2 * KV) < comp.n_params <= v1.n_params
    row = measure(_context(model, kind, names, weights, biases, sigmas, test), comp, 2, 0, progress=False)
    assert np.isfinite(row["ppl"]) and 0 < row["activation_fraction"] < 1 and row["params_kept"] == comp.n_params
    with installed(model, names, comp):                        # a shared A is stored once
        assert module_parameters(model, names) == comp.n_params
    assert type(model.get_submodule(names[0])).__name__ == "Linear"


def test_mlp_chain_sections_have_the_interface_ranks_and_the_gate_follows_up(llama):
    _, weights, biases, sigmas = _targets(llama, "mlp_chain")
    comp, _ = _compress("mlp_chain", MLP_CHAIN, weights, sigmas, biases, 0.25)
    d = max(1, round(0.25 * D))
    assert interface_ranks(d, [D, I, D]) == (d, round(d * I / D), d)
    assert [U.shape for U in comp.sections] == [(D, d), (I, round(d * I / D))] * 3 + [(D, d)]
    h = np.asarray(comp.energy_history)
    assert np.all(np.diff(h) >= -1e-10 * np.abs(h[1:]))
    for l in range(3):
        P_mid = comp.sections[2 * l + 1] @ comp.sections[2 * l + 1].T
        P_out = comp.sections[2 * l + 2] @ comp.sections[2 * l + 2].T
        up, gate, down = comp.layers[3 * l: 3 * l + 3]
        for f in (up, gate):                                   # outputs in the I-interface section
            assert np.allclose(P_mid @ f.W_hat, f.W_hat, atol=1e-10)
        assert np.allclose(P_out @ down.W_hat, down.W_hat, atol=1e-10)
        assert np.linalg.matrix_rank(gate.A) == d               # the gate reads the same d-dim input section
        assert np.allclose(gate.A @ np.linalg.pinv(up.A) @ up.A, gate.A, atol=1e-8)


def test_qkv_shared_is_the_eckart_young_optimum_of_the_stacked_whitened_matrix(llama):
    _, weights, biases, sigmas = _targets(llama, "q_k_v")
    comp, ranks = _compress("q_k_v", QKV_SHARED, weights, sigmas, biases, 0.25)
    for g in range(0, len(weights), 3):
        S = np.linalg.cholesky(sigmas[g])                    # Q, K and V read one input: one second moment
        s = np.linalg.svd(np.vstack(weights[g:g + 3]) @ S, compute_uv=False)
        k = comp.ranks[g]
        budget = sum(r * (D + W.shape[0]) for r, W in zip(ranks[g:g + 3], weights[g:g + 3]))
        assert k == budget // (D + D + 2 * KV)
        tail = sum(float(np.trace((W - f.W_hat) @ sigmas[g] @ (W - f.W_hat).T))
                   for W, f in zip(weights[g:g + 3], comp.layers[g:g + 3]))
        assert tail == pytest.approx(float(np.sum(s[k:] ** 2)), rel=1e-8)
        assert comp.layers[g].A is comp.layers[g + 1].A is comp.layers[g + 2].A


def test_bad_layouts_are_refused(llama):
    _, weights, biases, sigmas = _targets(llama, "mlp_chain")
    with pytest.raises(GbdError, match="need \\[up, gate, down\\] per block"):
        compress(weights[:4], sigmas[:4], biases[:4], MLP_CHAIN, 2)
    with pytest.raises(GbdError, match="block 1 has up"):
        compress(weights[1:4], sigmas[1:4], biases[1:4], MLP_CHAIN, 2)
    with pytest.raises(GbdError, match="one parity rank per matrix"):
        compress(weights[:3], sigmas[:3], biases[:3], QKV_SHARED, 2, options={"ranks": [2]})


def test_the_other_weights_question_runs_them_on_a_llama_and_renders_their_targets(save_tiny, tmp_path):
    """run_open_questions on a saved tiny Llama (Pythia tokenizer): the MLP chain and Q/K/V rows beside V1 per
    matrix on the same targets, rendered with their target kinds."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=D, intermediate_size=I, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=50304,
                                         max_position_embeddings=256))
    loaded = load_model(save_tiny(model, tmp_path / "llama", True))
    small = replace(MODES["quick"], calib_n=2, calib_T=64, open_sweep_windows=1, open_sweep_items=0,
                    stopping=StoppingRule(stall_tol=1e-6, max_sweeps=5))
    data = run_open_questions(loaded, small, 0.25, 3, tmp_path / "cache", ["other-weights"], progress=False)
    by = {(r["kind"], r["label"]): r for r in data["rows"]}
    for kind in ("mlp_chain", "q_k_v"):
        v1 = by[(kind, "SVD-LLM V1")]
        others = [r for (k, _), r in by.items() if k == kind and r is not v1]
        assert others and all(np.isfinite(r["ppl"]) and r["windows"] == 1 for r in others)
        assert all(r["params_kept"] <= v1["params_kept"] for r in others)
    md = render_section(data, tmp_path / "out")
    assert "Q/K/V on one shared whitened input basis [q_k_v]" in md and "SVD-LLM V1 [mlp_chain]" in md
    for r in data["rows"]:                    # the uncompressed model far ahead (random weights need not be) ...
        if r["label"] == "original":
            r["ppl_window_nll"] = [0.5 * x for x in r["ppl_window_nll"]]
            r["ppl"] = float(np.exp(sum(r["ppl_window_nll"]) / sum(r["ppl_window_tokens"])))
    answer = render_section(data, tmp_path / "out").split("**Answer.**")[-1]
    assert all(f"[{kind}] best: " in answer for kind in ("mlp_out", "mlp_chain", "q_k_v"))
    assert "best: original" not in answer                     # ... is still no candidate: one best per kind


def test_qkv_baselines_have_exactly_the_parameter_count_of_uniform_v1_and_order_by_activation_error(llama):
    """Uniform V1, budget-optimal V1 and (to within the floor of k) fused V1 / the shared basis store the same
    parameters; the optimal ranks never lose to the uniform ones, and fused V1 equals the shared basis (neither
    it nor per-matrix V1 dominates: a shared rank k holds no block-diagonal rank split, and vice versa)."""
    _, weights, biases, sigmas = _targets(llama, "q_k_v")
    comp, ranks = _compress("q_k_v", QKV_SHARED, weights, sigmas, biases, 0.25)
    uniform = per_matrix_v1(weights, sigmas, biases, ranks)
    best_ranks = qkv_optimal_ranks(weights, sigmas, ranks)
    allocated = per_matrix_v1(weights, sigmas, biases, best_ranks)
    fused = fused_v1(weights, sigmas, biases, ranks)
    assert allocated.n_params == uniform.n_params and fused.n_params == comp.n_params
    assert best_ranks != ranks                                  # the allocation moves rank here: not a no-op
    err = {name: errors(weights, sigmas, c)["activation_error"] for name, c in
           (("uniform", uniform), ("allocated", allocated), ("fused", fused), ("shared", comp))}
    assert err["allocated"] <= err["uniform"] * (1 + 1e-12)
    assert err["fused"] == pytest.approx(err["shared"], rel=1e-9)


def test_fused_v1_is_the_eckart_young_optimum_of_the_stacked_whitened_matrix(llama):
    _, weights, biases, sigmas = _targets(llama, "q_k_v")
    ranks = matrix_ranks(weights, 0.25)
    fused = fused_v1(weights, sigmas, biases, ranks)
    shared, _ = _compress("q_k_v", QKV_SHARED, weights, sigmas, biases, 0.25)
    for g in range(0, len(weights), 3):
        s = np.linalg.svd(np.vstack(weights[g:g + 3]) @ np.linalg.cholesky(sigmas[g]), compute_uv=False)
        k = fused.ranks[g]
        tail = sum(float(np.trace((W - f.W_hat) @ sigmas[g] @ (W - f.W_hat).T))
                   for W, f in zip(weights[g:g + 3], fused.layers[g:g + 3]))
        assert tail == pytest.approx(float(np.sum(s[k:] ** 2)), rel=1e-8)
        assert fused.layers[g].A is fused.layers[g + 2].A
        for f, h in zip(fused.layers[g:g + 3], shared.layers[g:g + 3]):
            assert np.allclose(f.W_hat, h.W_hat, atol=1e-8 * np.abs(h.W_hat).max())


@pytest.mark.parametrize("seed", range(6))
def test_budget_optimal_ranks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    spectra = [np.sort(rng.exponential(size=n))[::-1] for n in (5, 4, 4)]
    costs = [int(c) for c in rng.choice([2, 3, 4, 6], size=3)]
    uniform = [2, 2, 2]
    budget = sum(r * c for r, c in zip(uniform, costs))
    ranks = budget_optimal_ranks(spectra, costs, budget)

    def kept(rs):
        return sum(float(np.sum(s[:r] ** 2)) for s, r in zip(spectra, rs))
    feasible = [rs for rs in itertools.product(*(range(1, len(s) + 1) for s in spectra))
                if sum(r * c for r, c in zip(rs, costs)) == budget]
    assert sum(r * c for r, c in zip(ranks, costs)) == budget
    assert kept(ranks) == pytest.approx(max(kept(rs) for rs in feasible), rel=1e-12)
    with pytest.raises(GbdError, match="spend exactly"):
        budget_optimal_ranks(spectra, [4, 4, 4], 2)
