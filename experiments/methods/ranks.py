"""Every rank rule in one place (as SliceGPT's one scheduler owns its slicing policy): d from a ratio, lambda from
its unit, SVD-LLM V2's allocation within a group, Basis Sharing's parity rank, per-matrix and budget-optimal ranks
for other weight classes and the MLP chain's per-interface ranks."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from experiments.errors import GbdError
from theory.grassmann import Array
from theory.whitening import whitening


class AllocationError(GbdError):
    """Our V2 rank rule is undefined for these inputs (a relative loss <= 0, all losses total, or R < 0)."""


V2_RULE = ("our scale-free reading of SVD-LLM V2's loss-based allocation (removal ratio proportional to "
           "log(tr(W Sigma W^T) / L), L the truncation loss at the uniform rank)")


def v2_allocation(fractions: Sequence[float], shapes: Sequence[tuple[int, int]], d: int) -> list[int]:
    """Heterogeneous ranks within a group: our scale-free reading of SVD-LLM V2's loss-based allocation.

    f_i = L_i / tr(W_i Sigma_i W_i^T) is layer i's truncation loss at the uniform rank d as a fraction of its
    activation energy (``v2``): unchanged when Sigma_i is scaled, unlike V2's published 1 / log L_i, whose
    ranks move with the calibration size (log of an unnormalised loss). A layer that loses more keeps more:
    R = 1 - sum_i d (m_i + n_i) / sum_i m_i n_i (the group's parameter removal ratio at uniform rank d),
    removal_i = |G| R w_i / sum_j w_j with w_i = log(1 / f_i) (>= 0, falling as f_i grows),
    d_i = round((1 - removal_i) m_i n_i / (m_i + n_i)) clipped to [1, min(m_i, n_i)], then moved by one
    at a time (largest rounding residual first) until sum_i d_i = |G| d. Refused (``AllocationError``): a
    fraction outside (0, 1] (f_i = 0, a layer lossless at rank d, has w_i = inf), every f_i = 1 (sum w = 0),
    and R < 0 (d > m n / (m + n)): a negative removal ratio reverses the ordering, handing the most rank to
    the layers that lose the least.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if len(f) != len(shapes) or len(f) == 0:
        raise GbdError(f"need one loss fraction per shape, got {len(f)} fractions for {len(shapes)} shapes")
    if not np.all(np.isfinite(f)) or np.any(f <= 0.0) or np.any(f > 1.0) or np.all(f == 1.0):
        raise AllocationError(f"V2 allocation needs relative truncation losses in (0, 1], not all 1, got "
                              f"{f.tolist()}; use allocation='uniform'")
    m = np.array([s[0] for s in shapes], dtype=np.float64)
    n = np.array([s[1] for s in shapes], dtype=np.float64)
    hi = np.minimum(m, n).astype(int)
    if np.any(d > hi) or d < 1:
        raise GbdError(f"rank d={d} must lie in [1, {hi.min()}]")
    G = len(f)
    R = 1.0 - d * np.sum(m + n) / np.sum(m * n)
    if R < 0:
        raise AllocationError(f"V2 allocation at rank d={d} has removal ratio R={R:.3g} < 0 (two factors store more than "
                       "W): the rule would invert and give smaller-loss layers more rank; use allocation='uniform'")
    w = -np.log(f)
    removal = G * R * w / w.sum()
    target = np.clip((1.0 - removal) * m * n / (m + n), 1, hi)
    ranks = np.clip(np.rint(target), 1, hi).astype(int)
    return _match_sum(ranks, target, hi, G * d)


def _match_sum(ranks: np.ndarray, target: Array, hi: np.ndarray, total: int) -> list[int]:
    """Shift integer ranks by one at a time (largest residual target - rank first) until they sum to total."""
    ranks = ranks.copy()
    while ranks.sum() != total:
        residual = target - ranks
        if ranks.sum() < total:
            i = int(np.argmax(np.where(ranks < hi, residual, -np.inf)))
            ranks[i] += 1
        else:
            i = int(np.argmin(np.where(ranks > 1, residual, np.inf)))
            ranks[i] -= 1
    return ranks.tolist()


def shared_rank(d: int, n_in: int, n_outs: Sequence[int]) -> int:
    """k with k (n_in + sum_l n_out_l) <= d sum_l (n_in + n_out_l): parameter parity with per-layer rank d.

    For g equal layers: k = floor(g d (n_in + n_out) / (n_in + g n_out)).
    """
    return (d * sum(n_in + m for m in n_outs)) // (n_in + sum(n_outs))


def check_ratio(ratio: float) -> None:
    """The rank ratio d/D must lie in (0, 1]."""
    if not 0 < ratio <= 1:
        raise GbdError(f"rank ratio d/D must lie in (0, 1], got {ratio}")


def rank_for(weights: Sequence[np.ndarray], ratio: float) -> int:
    """d = round(ratio * D), D the smallest side of the targets (the hidden size for W_O); the paper's ratio is 0.25."""
    check_ratio(ratio)
    n = min(min(w.shape) for w in weights)
    return max(1, int(round(ratio * n)))


def absolute_lambda(lam_over_c: float, c: float) -> float:
    """lambda = (lambda / c) * c; lambda / c = inf stays inf when c = 0 (an all-zero stack), never NaN."""
    return float(np.inf) if np.isinf(lam_over_c) else lam_over_c * c


def matrix_ranks(weights: Sequence[Array], ratio: float) -> list[int]:
    """r(W) = round(ratio min(m, n)) per matrix: V1's rank for each matrix alone (module docstring)."""
    return [rank_for([W], ratio) for W in weights]


def budget_optimal_ranks(spectra: Sequence[Array], costs: Sequence[int], budget: int) -> list[int]:
    """argmax over integer r_m in [1, len(s_m)] with sum_m r_m c_m = budget (exactly) of sum_m sum_{i <= r_m} s_m,i^2.

    ``spectra``: each matrix's singular values (of W_m S_m, descending); ``costs``: parameters per unit of rank,
    c_m = n_in + n_out. Exact dynamic programme over the budget in units of g = gcd(c_1, ..., budget): the best
    energy at every reachable exact cost, one matrix at a time. An unreachable budget is an error.
    """
    if len(spectra) != len(costs) or not spectra:
        raise GbdError(f"need one spectrum per cost, got {len(spectra)} spectra and {len(costs)} costs")
    g = math.gcd(int(budget), *(int(c) for c in costs))
    units, steps = int(budget) // g, [int(c) // g for c in costs]
    best = np.full(units + 1, -np.inf)
    best[0] = 0.0
    choice = []
    for s, step in zip(spectra, steps):
        kept = np.cumsum(np.asarray(s, dtype=np.float64) ** 2)           # kept[r - 1]: energy at rank r
        new, pick = np.full(units + 1, -np.inf), np.zeros(units + 1, dtype=int)
        for r in range(1, min(len(kept), units // step) + 1):
            cand = np.full(units + 1, -np.inf)
            cand[r * step:] = best[:units + 1 - r * step] + kept[r - 1]
            better = cand > new
            new[better], pick[better] = cand[better], r
        best = new
        choice.append(pick)
    if not np.isfinite(best[units]):
        raise GbdError(f"no ranks >= 1 with costs {list(costs)} spend exactly {budget} parameters")
    ranks, left = [], units
    for pick, step in zip(reversed(choice), reversed(steps)):
        ranks.append(int(pick[left]))
        left -= ranks[-1] * step
    return ranks[::-1]


def interface_ranks(d: int, widths: Sequence[int]) -> tuple[int, ...]:
    """d_k = round(d n_k / min n), clipped to [1, n_k]: the narrowest interfaces get d, the others the same
    fraction of their width."""
    narrow = min(widths)
    return tuple(int(min(n, max(1, round(d * n / narrow)))) for n in widths)


def shared_parity_rank(weights: Sequence[Array], ranks: Sequence[int]) -> int:
    """k = floor(sum_m r_m (n_in + n_m) / (n_in + sum_m n_m)), clipped to n_in: one k x n_in input factor and
    per-matrix n_m x k output factors within the count of V1 at ranks r_m (module docstring)."""
    n_in = weights[0].shape[1]
    if any(W.shape[1] != n_in for W in weights):
        raise GbdError(f"a shared input factor needs one input width, got {[W.shape[1] for W in weights]}")
    budget = sum(r * (n_in + W.shape[0]) for r, W in zip(ranks, weights, strict=True))
    return min(budget // (n_in + sum(W.shape[0] for W in weights)), n_in)


def qkv_blocks(weights: Sequence[Array], ranks: Sequence[int], what: str) -> list[int]:
    """The first index of each [q, k, v] block, after checking the layout and one rank per matrix."""
    if len(weights) % 3 or not weights:
        raise GbdError(f"{what}: need [q, k, v] per block, got {len(weights)} matrices")
    if len(ranks) != len(weights):
        raise GbdError(f"{what}: need one parity rank per matrix, got {len(ranks)} for {len(weights)}")
    return list(range(0, len(weights), 3))


def qkv_optimal_ranks(weights: Sequence[Array], sigmas: Sequence[Array], ranks: Sequence[int]) -> list[int]:
    """Per block, ``budget_optimal_ranks`` on the whitened spectra s(W_m chol(Sigma_m)) at the count of V1 at
    ``ranks``: the per-matrix V1 ranks with the least total activation error at exactly that count."""
    out: list[int] = []
    for g in qkv_blocks(weights, ranks, "budget-optimal V1"):
        Ws, Ss = weights[g:g + 3], sigmas[g:g + 3]
        spectra = [np.linalg.svd(W @ whitening(S, "cholesky").S, compute_uv=False) for W, S in zip(Ws, Ss)]
        costs = [W.shape[0] + W.shape[1] for W in Ws]
        out += budget_optimal_ranks(spectra, costs, sum(r * c for r, c in zip(ranks[g:g + 3], costs)))
    return out
