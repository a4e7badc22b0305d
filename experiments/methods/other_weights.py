"""Other weight classes (the paper's section 8.3): the MLP as a rectangular chain, and Q/K/V sharing one input basis.

Parameter rule (both methods and their V1 baselines): the run's ratio d/D gives every matrix W (m x n) the rank
r(W) = round(ratio min(m, n)) that SVD-LLM V1 gives it alone (``experiments.methods.ranks.rank_for`` on that matrix),
i.e. r(W) (m + n) parameters; every method below stores exactly as many in total.

MLP chain (``mlp-chain``, composite kind ``mlp_chain`` = [up_1, gate_1, down_1, up_2, ...], Llama family). up_l
(I x D) and gate_l (I x D) read the residual stream x (D), down_l (D x I) reads h = silu(gate_l x) * (up_l x) (I)
and writes the stream. So [up_1, down_1, up_2, down_2, ..., up_L, down_L] chains with interface widths
(D, I, D, I, ..., D): up_l writes coordinates that down_l reads (up to the elementwise gate), down_l writes the
stream up_{l+1} reads (up to the residual sum and the RMSNorm's per-token scale and fixed gain). The bundle
energy with one rank per interface (theory.bca, per-interface ranks)

    E(U_0..U_2L) = sum_{k=1}^{2L} ||U_k^T W~_k U_{k-1}||_F^2,   U_k in Gr(n_k, d_k),

is maximized by BCA (lambda = 0, from the original anchors) on W~_k = W_k S_k (``whitened``, default; S_k S_k^T =
Sigma_k, Cholesky: the input side of each matrix in its whitened coordinates, as in the activation-aware bundle of
experiments.methods.controls, whose note on coordinates applies: the output side of up_l is the raw I-space, the
input side of down_l its whitened version, identified index by index) or on W~_k = W_k (``whitened=False``).
Interface ranks: d_k = round(d n_k / D), D the narrowest width, so d at every D-interface and round(d I / D) >= d
at every I-interface; each matrix's sandwich U_out C V^T has rank <= min(d_out, d_in) = d and is stored as two
factors at that inner rank (experiments.compress.section_factors): d (I + D) parameters, V1's count at rank d.
Each matrix is installed by the generalized projection C = U_out^T W Sigma V (V^T Sigma V)^{-1} (V = S^{-T} U_in
when whitened), the activation-optimal C for its sections. The gate gets up_l's sections, not its own: it reads
the same x (so the same input interface, same Sigma and whitening) and its output is multiplied coordinate by
coordinate with up_l's, so the I-interface that up_l writes and down_l reads is also the gate's output space; a
separate gate section would need an interface no chain has. The gate is installed but not part of E.

Q/K/V shared basis (``qkv-shared``, composite kind ``q_k_v`` = [q_1, k_1, v_1, q_2, ...]). Q, K and V of one block
read the same input x (D) with one second moment Sigma = S S^T. With ONE input factor A (k x D) and per-matrix
output factors B_q, B_k, B_v the objective

    min_{A, B_m} sum_{m in q,k,v} ||(W_m - B_m A) X||_F^2 = ||([W_q; W_k; W_v] - [B_q; B_k; B_v] A) S||_F^2

is Eckart-Young on the stacked whitened matrix: [W_q; W_k; W_v] S = U Sg V^T, A = V_k^T S^{-1}, [B_q; B_k; B_v] =
U_k Sg_k (the reference Basis Sharing with the group {q_l, k_l, v_l} and Sigma_q + Sigma_k + Sigma_v = 3 Sigma,
whose Cholesky factor only rescales B and A: experiments.compress's ``basis-sharing`` with groups of three).
Parameters k D + k (n_q + n_k + n_v) (A counted once) against sum_m r_m (D + n_m) for per-matrix V1 at ranks r_m,
so k = floor(sum_m r_m (D + n_m) / (D + n_q + n_k + n_v)) (``shared_parity_rank``; option ``ranks``: the r_m,
default d for every matrix). GPT-NeoX's fused query_key_value is already one matrix: V1 on kind ``qkv`` is its
shared basis.

Two more Q/K/V baselines separate what the shared basis gains by allocation from what it gains by sharing:
- V1 at budget-optimal per-matrix ranks (``budget_optimal_ranks``): per block, the ranks r_m >= 1 with
  sum_m r_m (D + n_m) equal to the uniform ranks' count that keep the most whitened energy
  sum_m sum_{i <= r_m} s_i(W_m S)^2, i.e. (Eckart-Young per matrix) the least total activation error of V1;
- V1 on the fused [W_q; W_k; W_v] (``fused_v1``) at the shared rank k: its W_hat is U_k U_k^T [W_q; W_k; W_v]
  with U_k from [W_q; W_k; W_v] S, the same Eckart-Young optimum as the shared basis (one input basis within one
  block is V1 on the fused matrix), stored as one k x D factor and per-matrix output factors.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from experiments.errors import GbdError
from experiments.methods.basis_sharing import shared_basis
from experiments.methods.bundle import solve_memo
from experiments.methods.factors import Compression, LowRankFactors, section_factors, whiten
from experiments.methods.ranks import interface_ranks, qkv_blocks, shared_parity_rank
from experiments.methods.registry import builtin_method, compress
from theory.grassmann import Array
from theory.stack import Stack
from theory.stopping import COMPRESSION

MLP_CHAIN = "mlp-chain"
QKV_SHARED = "qkv-shared"



def per_matrix_v1(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None],
                  ranks: Sequence[int]) -> Compression:
    """SVD-LLM V1 on each matrix alone at its own rank r_m (the baseline of both methods)."""
    parts = [compress([W], [S], [b], "v1", r) for W, S, b, r in zip(weights, sigmas, biases, ranks, strict=True)]
    return Compression("v1 per matrix", [p.layers[0] for p in parts], list(ranks),
                       [f"SVD-LLM V1 on each matrix at ranks {sorted(set(ranks))}"] + [n for p in parts for n in p.notes])



def fused_v1(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None],
             ranks: Sequence[int]) -> Compression:
    """SVD-LLM V1 on each block's fused [W_q; W_k; W_v] (Sigma of the shared input) at the shared parity rank k,
    split back into per-matrix factors that share the k x D factor A = U_k^T [W_q; W_k; W_v]."""
    layers: list[LowRankFactors] = []
    notes: list[str] = []
    for g in qkv_blocks(weights, ranks, "fused V1"):
        Ws, bs = weights[g:g + 3], biases[g:g + 3]
        k = shared_parity_rank(Ws, ranks[g:g + 3])
        fused_bias = None if any(b is None for b in bs) else np.concatenate(bs)
        f = compress([np.vstack(Ws)], [sigmas[g]], [fused_bias], "v1", k).layers[0]
        rows = np.cumsum([0] + [W.shape[0] for W in Ws])
        layers += [LowRankFactors(f.A, f.B[rows[j]:rows[j + 1]],
                                  None if f.bias is None else f.bias[rows[j]:rows[j + 1]]) for j in range(3)]
        notes.append(f"block {g // 3 + 1}: V1 on [W_q; W_k; W_v] at rank k={k} for per-matrix ranks {ranks[g:g + 3]}")
    return Compression("v1 fused q/k/v", layers, [f.rank for f in layers], notes,
                       shared=[[g, g + 1, g + 2] for g in range(0, len(weights), 3)], bias_rule="keep")


def _mlp_blocks(weights: Sequence[Array]) -> int:
    """L, after checking [up_1, gate_1, down_1, ...]: up and gate I x D, down D x I, widths equal across blocks."""
    if len(weights) % 3 or not weights:
        raise GbdError(f"{MLP_CHAIN}: need [up, gate, down] per block, got {len(weights)} matrices")
    I, D = weights[0].shape
    for l in range(len(weights) // 3):
        up, gate, down = weights[3 * l: 3 * l + 3]
        if up.shape != (I, D) or gate.shape != (I, D) or down.shape != (D, I):
            raise GbdError(f"{MLP_CHAIN}: block {l + 1} has up {up.shape}, gate {gate.shape}, down {down.shape}; "
                           f"expected {(I, D)}, {(I, D)}, {(D, I)}")
    return len(weights) // 3


@builtin_method(MLP_CHAIN, bias="project")
def mlp_chain(weights: list[Array], sigmas: list[Array], biases: list[Array | None], d: int,
              options: Mapping[str, Any]) -> Compression:
    """The MLP chain bundle (module docstring); options: "whitened" (default True), "stopping" (a
    theory.stopping.StoppingRule, default COMPRESSION)."""
    L = _mlp_blocks(weights)
    whitened = bool(options.get("whitened", True))
    notes: list[str] = []
    chain = [k for l in range(L) for k in (3 * l, 3 * l + 2)]             # up_1, down_1, up_2, ...
    whs = {k: whiten(sigmas[k], "cholesky", f"matrix {k + 1}", notes) for k in chain} if whitened else None
    stack = Stack.of([weights[k] for k in chain])
    if whs is not None:
        stack = stack.whitened([whs[k].S for k in chain])
    ranks = interface_ranks(d, stack.dims)
    try:
        sol = solve_memo(stack, ranks, 0.0, False, "original", options.get("stopping", COMPRESSION))
    except ValueError as e:
        raise GbdError(f"{MLP_CHAIN}: {e}") from e
    layers: list[LowRankFactors] = []
    for l in range(L):
        U_in, U_mid, U_out = sol.sections[2 * l: 2 * l + 3]
        wh_in, wh_mid = (None, None) if whs is None else (whs[3 * l], whs[3 * l + 2])
        for k, (U_o, U_i, wh) in zip(range(3 * l, 3 * l + 3), ((U_mid, U_in, wh_in), (U_mid, U_in, wh_in),
                                                              (U_out, U_mid, wh_mid))):
            layers.append(section_factors(weights[k], sigmas[k], U_o, U_i, wh, "projection", f"matrix {k + 1}", notes))
    run = sol.run
    notes.append(f"MLP chain bundle, lambda=0, {'whitened' if whitened else 'unwhitened'}, interface ranks "
                 f"{sorted(set(ranks))} (d={d} at width {min(stack.dims)}); gate_l on up_l's sections; "
                 f"{run.stop_note}")
    return Compression(MLP_CHAIN, layers, [f.rank for f in layers], notes, sol.sections, run.sweeps, run.history)


@builtin_method(QKV_SHARED, bias="keep")
def qkv_shared(weights: list[Array], sigmas: list[Array], biases: list[Array | None], d: int,
               options: Mapping[str, Any]) -> Compression:
    """One whitened input basis per block for [q, k, v] (module docstring); option "ranks": per-matrix V1 ranks."""
    ranks = [int(r) for r in options.get("ranks", [d] * len(weights))]
    layers: list[LowRankFactors] = []
    notes: list[str] = []
    for g in qkv_blocks(weights, ranks, QKV_SHARED):
        Ws, Ss = weights[g:g + 3], sigmas[g:g + 3]
        try:
            k = shared_parity_rank(Ws, ranks[g:g + 3])
        except GbdError as e:
            raise GbdError(f"{QKV_SHARED}: block {g // 3 + 1}: {e}") from e
        layers += shared_basis(Ws, sum(Ss) / 3, k, f"block {g // 3 + 1}", notes)
        notes.append(f"block {g // 3 + 1}: shared rank k={k} for per-matrix ranks {ranks[g:g + 3]}")
    return Compression(QKV_SHARED, layers, [f.rank for f in layers], notes,
                       shared=[[g, g + 1, g + 2] for g in range(0, len(weights), 3)])

