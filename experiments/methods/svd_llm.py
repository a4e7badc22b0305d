"""SVD-LLM V1 and V2 (Wang et al.): per-layer whitened truncated SVD.

- ``v1``: S = chol(Sigma), U_d = top-d left singular vectors of W S, W_hat = U_d U_d^T W.
- ``v2``: Sigma = U_s S_s U_s^T, W S = U_ws S_ws V_ws^T with S = U_s S_s^{1/2}, W_hat = U_ws Trunc_d(S_ws) V_ws^T S^+,
  ranks allocated within the group from the relative truncation losses (``ranks.v2_allocation``, ours;
  ``allocation="uniform"`` keeps rank d everywhere).
"""
from __future__ import annotations

import numpy as np

from experiments.methods.factors import Compression, LowRankFactors, Request, whiten
from experiments.methods.metrics import error_fraction
from experiments.methods.ranks import V2_RULE, v2_allocation
from theory.grassmann import top_left_singular


def v1(req: Request) -> Compression:
    """SVD-LLM V1: U_d = top-d left singular vectors of W S (S = chol(Sigma)); B = U_d, A = U_d^T W."""
    notes: list[str] = []
    layers = []
    for l, (W, Sigma) in enumerate(zip(req.weights, req.sigmas), start=1):
        U = top_left_singular(W @ whiten(Sigma, "cholesky", f"layer {l}", notes).S, req.d)
        layers.append(LowRankFactors(U.T @ W, U, None))
    return Compression(req.method, layers, [req.d] * len(layers), notes)


def v2(req: Request) -> Compression:
    """SVD-LLM V2: W_hat = U_ws Trunc_{d_i}(S_ws) V_ws^T S^+ with S = U_s S_s^{1/2}; B = U_ws[:, :d_i]."""
    notes: list[str] = []
    whs = [whiten(S, "sqrt", f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
    svds = [np.linalg.svd(W @ w.S, full_matrices=False) for W, w in zip(req.weights, whs)]
    if req.allocation == "uniform":
        ranks = [req.d] * len(svds)
        notes.append("uniform rank allocation")
    else:
        fractions = [error_fraction(float(np.sum(s[req.d:] ** 2)), float(np.sum(s ** 2))) for _, s, _ in svds]
        ranks = v2_allocation(fractions, [W.shape for W in req.weights], req.d)
        notes.append(f"{V2_RULE}: relative truncation losses {[f'{x:.4g}' for x in fractions]} -> ranks {ranks}")
    layers = [LowRankFactors((s[:k, None] * Vt[:k]) @ w.S_pinv, U[:, :k], None)
              for (U, s, Vt), w, k in zip(svds, whs, ranks)]
    return Compression(req.method, layers, ranks, notes)

