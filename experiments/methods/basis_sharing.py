"""The reference Basis Sharing (Wang et al., 2024): one whitened SVD per group of consecutive layers, a shared input
factor A and per-layer output factors B_l, at the shared rank of parameter parity (``ranks.shared_rank``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from experiments.errors import GbdError
from experiments.methods.factors import Compression, LowRankFactors, Request, whiten
from experiments.methods.ranks import shared_rank
from theory.grassmann import Array


def shared_basis(Ws: Sequence[Array], Sigma: Array, k: int, label: str, notes: list[str]) -> list[LowRankFactors]:
    """min_{A, B_l} sum_l ||(W_l - B_l A) X||_F^2 (Sigma = X X^T) at inner rank k: [W_1; ...; W_g] S = U Sg V^T
    (S = chol(Sigma)), A = V_k^T S^{-1} shared (one object), B_l = the rows of U_k Sg_k belonging to layer l."""
    w = whiten(Sigma, "cholesky", label, notes)
    U, s, Vt = np.linalg.svd(np.vstack(Ws) @ w.S, full_matrices=False)
    A = Vt[:k] @ w.S_pinv
    rows = np.cumsum([0] + [W.shape[0] for W in Ws])
    US = U[:, :k] * s[:k]
    return [LowRankFactors(A, US[rows[j]:rows[j + 1]], None) for j in range(len(Ws))]


def basis_sharing(req: Request) -> Compression:
    """Basis Sharing: per group, [W_1; ...; W_g] S = U Sg V^T (S = chol(sum Sigma_l)), truncated to k.

    Shared A = V_k^T S^{-1} (k x n_in); B_l = the rows of U_k Sg_k belonging to layer l.
    """
    notes: list[str] = []
    layers: list[LowRankFactors] = []
    ranks: list[int] = []
    groups = [list(range(i, min(i + req.group_size, len(req.weights))))
              for i in range(0, len(req.weights), req.group_size)]
    for group in groups:
        Ws = [req.weights[i] for i in group]
        n_in = Ws[0].shape[1]
        if any(W.shape[1] != n_in for W in Ws):
            raise GbdError(f"basis-sharing group {group} mixes input widths {[W.shape[1] for W in Ws]}")
        n_outs = [W.shape[0] for W in Ws]
        k = shared_rank(req.d, n_in, n_outs)
        k_ok = min(max(k, 1), n_in, sum(n_outs))
        if k_ok != k:
            notes.append(f"group {group}: parity rank {k} clipped to {k_ok}")
        layers += shared_basis(Ws, sum(req.sigmas[i] for i in group), k_ok, f"group {group}", notes)
        ranks += [k_ok] * len(group)
        notes.append(f"group {group}: shared rank k={k_ok} by parameter parity with per-layer rank {req.d}; "
                     "the shared factor A is counted once")
    return Compression(req.method, layers, ranks, notes, shared=[g for g in groups if len(g) > 1])

