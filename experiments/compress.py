"""Compress a group of same-kind layers W_1..W_L (n_out x n_in, depth order) to low-rank factors B A.

Inputs per layer: the weight W_l, the input second moment Sigma_l = sum_t x_t x_t^T (n_in x n_in)
and the bias b_l (or None). Every method returns ``LowRankFactors`` with W_hat = B A (B: n_out x d,
A: d x n_in), so the model surgery (``experiments.surgery``) is method-agnostic.

Methods (``METHODS``, the registry; ``register_method`` adds a user's function to it):
- ``v1``  SVD-LLM V1: S = chol(Sigma), U_d = top-d left singular vectors of W S, W_hat = U_d U_d^T W.
- ``v2``  SVD-LLM V2: Sigma = U_s S_s U_s^T, W S = U_ws S_ws V_ws^T with S = U_s S_s^{1/2},
          W_hat = U_ws Trunc_d(S_ws) V_ws^T S^+, ranks allocated within the group from the relative
          truncation losses (``v2_allocation``, ours; ``allocation="uniform"`` keeps rank d everywhere).
- ``bundle`` and its corners ``gbd`` (lam 0, untied), ``gbd-tied`` (lam 0, tied), ``bs-core-two-sided``
          (lam inf, tied: U_BS on both sides), ``anchored`` (lam inf, untied): sections U_0..U_L from
          ``theory.corners.solve`` on the (optionally whitened) stack, installed by the generalized projection
          or the sandwich.
- ``bs-core`` Basis-Sharing-core as the paper's section 7.1 describes it: the tied OUTPUT section U_BS (top-d
          left singular subspace of [W_1 ... W_L]) shared by every layer, per-layer INPUT sections V_l (top-d
          right singular subspace of W_l), installed like the bundle family.
- ``basis-sharing`` the reference Basis Sharing: one whitened SVD per group of consecutive layers,
          a shared input factor A and per-layer output factors B_l.

Bias (``bias_rule``): V1, V2 and the reference Basis Sharing keep the layer's bias b unchanged, as their
authors' code does; every other method installs b_hat = P_out b (SPEC section 2), P_out the orthogonal
projector onto range(B). ``compress(..., bias_mode="keep" | "project")`` imposes either rule on any method.

All solver and whitening mathematics lives in ``theory``; this module only assembles factors.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.linalg import orth

from experiments.cache import cache_key
from experiments.errors import GbdError
from theory.anchors import CONVENTIONS
from theory.corners import Solution, solve
from theory.energy import activation_error
from theory.grassmann import Array, top_left_singular
from theory.stack import Stack
from theory.stopping import COMPRESSION, StoppingRule
from theory.whitening import Whitening, whitening

INSTALLATIONS = ("projection", "sandwich")
ALLOCATIONS = ("loss", "uniform")
BIAS_MODES = ("method-default", "keep", "project")
WHITENINGS = ("cholesky", "sqrt")
V2_RULE = ("our scale-free reading of SVD-LLM V2's loss-based allocation (removal ratio proportional to "
           "log(tr(W Sigma W^T) / L), L the truncation loss at the uniform rank)")
BIAS_KEEPING = ("v1", "v2", "basis-sharing")   # the built-in methods whose authors' code leaves the bias as it is


class AllocationError(GbdError):
    """Our V2 rank rule is undefined for these inputs (a relative loss <= 0, all losses total, or R < 0)."""


@dataclass
class LowRankFactors:
    """W_hat = B A with A: d x n_in (first factor), B: n_out x d (second factor), and the bias b_hat."""

    A: Array
    B: Array
    bias: Array | None

    @property
    def W_hat(self) -> Array:
        return self.B @ self.A

    @property
    def rank(self) -> int:
        """The inner dimension d (the installed rank; the matrix rank of B A is at most d)."""
        return self.A.shape[0]

    @property
    def n_params(self) -> int:
        """d n_in + n_out d (+ n_out for a bias): what the installed two-factor module stores."""
        return self.A.size + self.B.size + (0 if self.bias is None else self.bias.size)


@dataclass
class Compression:
    """Compressed group: per-layer factors, the ranks used, notes on what was done.

    ``sections`` (bundle family) are U_0..U_L; with ``whitened`` solves the input sides live in whitened
    coordinates. ``shared`` lists groups of layer indices whose factors share one A object (Basis Sharing):
    the shared A is counted once in ``n_params``. ``bias_rule`` is the bias rule applied ("keep" or "project").
    """

    method: str
    layers: list[LowRankFactors]
    ranks: list[int]
    notes: list[str]
    sections: list[Array] | None = None
    bca_sweeps: int | None = None
    energy_history: list[float] | None = None
    shared: list[list[int]] | None = None
    bias_rule: str | None = None

    @property
    def W_hats(self) -> list[Array]:
        return [f.W_hat for f in self.layers]

    @property
    def n_params(self) -> int:
        """Stored parameters, a factor shared by a group counted once."""
        total = sum(f.n_params for f in self.layers)
        for group in self.shared or []:
            total -= (len(group) - 1) * self.layers[group[0]].A.size
        return total


@dataclass(frozen=True)
class Request:
    """Validated inputs and options of one ``compress`` call."""

    method: str
    weights: list[Array]
    sigmas: list[Array]
    biases: list[Array | None]
    d: int
    lam: float
    tied: bool
    convention: str
    installation: str
    whitened: bool
    bca: bool
    group_size: int
    allocation: str
    whitening: str
    stopping: StoppingRule
    options: Mapping[str, Any] = field(default_factory=dict)   # free options of a registered method


# ----------------------------------------------------------------------------------------------- helpers

def _whiten(Sigma: Array, kind: str, label: str, notes: list[str]) -> Whitening:
    """theory.whitening, recording a Cholesky fallback (jitter) in ``notes``."""
    w = whitening(Sigma, kind)
    if w.jitter > 0 or "support" in w.note:
        notes.append(f"{label}: {w.note}")
    return w


def output_bias(B: Array, b: Array | None, mode: str) -> Array | None:
    """b_hat = P_out b with P_out the orthogonal projector onto range(B) (``project``), or b (``keep``)."""
    if b is None or mode == "keep":
        return b
    Q = orth(B)
    return Q @ (Q.T @ b)


def bias_rule(method: str, bias_mode: str) -> str | None:
    """The bias rule of ``method``: ``bias_mode`` itself ("keep" or "project"), or for "method-default" the
    method's default (``BIAS_DEFAULTS``): "keep" for V1, V2 and the reference Basis Sharing (their authors' code
    leaves the bias unchanged), "project" (b_hat = P_out b, the paper's rule for its bundle) for the other built-in
    methods, and for a registered method the rule it was registered with, or None: the bias it returns."""
    _check_option("bias mode", bias_mode, BIAS_MODES)
    if bias_mode != "method-default":
        return bias_mode
    return BIAS_DEFAULTS.get(method)


def with_bias(compression: Compression, biases: Sequence[Array | None], rule: str | None) -> Compression:
    """``compression`` with every layer's bias set by ``rule`` (``output_bias`` on its B) and ``bias_rule``
    recorded; the factors A and B (a shared A object included) are kept as they are. ``rule`` None leaves the
    biases as the method made them (``bias_rule`` "method's own" unless the method named it)."""
    if rule is None:
        compression.bias_rule = compression.bias_rule or "method's own"
        return compression
    compression.layers = [replace(f, bias=output_bias(f.B, b, rule))
                          for f, b in zip(compression.layers, biases, strict=True)]
    compression.bias_rule = rule
    return compression


def generalized_projection(W: Array, Sigma: Array, U_out: Array, V: Array) -> tuple[Array, str | None]:
    """C = U_out^T W Sigma V (V^T Sigma V)^{-1}: the minimizer over C of tr(E Sigma E^T), E = W - U_out C V^T.

    With Sigma = X X^T this is min_C ||(W - U_out C V^T) X||_F^2: U_out orthonormal splits the error into
    ||(I - P_out) W X||^2 + ||U_out^T W X - C V^T X||^2, a least-squares problem in C whose normal
    equations are C (V^T Sigma V) = U_out^T W Sigma V. Solved with ``solve``; when V^T Sigma V is
    singular (Sigma blind to part of span V) the minimum-norm pseudo-inverse solution is taken and a
    note returned.
    """
    G = V.T @ Sigma @ V
    R = U_out.T @ W @ Sigma @ V
    if np.linalg.cond(G) < 1e12:
        return np.linalg.solve(G, R.T).T, None
    return R @ np.linalg.pinv(G, hermitian=True), "U_in^T Sigma U_in is singular: pseudo-inverse used"


def v2_allocation(fractions: Sequence[float], shapes: Sequence[tuple[int, int]], d: int) -> list[int]:
    """Heterogeneous ranks within a group: our scale-free reading of SVD-LLM V2's loss-based allocation.

    f_i = L_i / tr(W_i Sigma_i W_i^T) is layer i's truncation loss at the uniform rank d as a fraction of its
    activation energy (``_v2``): unchanged when Sigma_i is scaled, unlike V2's published 1 / log L_i, whose
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


# ----------------------------------------------------------------------------------------------- methods

def _v1(req: Request) -> Compression:
    """SVD-LLM V1: U_d = top-d left singular vectors of W S (S = chol(Sigma)); B = U_d, A = U_d^T W."""
    notes: list[str] = []
    layers = []
    for l, (W, Sigma) in enumerate(zip(req.weights, req.sigmas), start=1):
        U = top_left_singular(W @ _whiten(Sigma, "cholesky", f"layer {l}", notes).S, req.d)
        layers.append(LowRankFactors(U.T @ W, U, None))
    return Compression(req.method, layers, [req.d] * len(layers), notes)


def _v2(req: Request) -> Compression:
    """SVD-LLM V2: W_hat = U_ws Trunc_{d_i}(S_ws) V_ws^T S^+ with S = U_s S_s^{1/2}; B = U_ws[:, :d_i]."""
    notes: list[str] = []
    whs = [_whiten(S, "sqrt", f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
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


SOLVE_MEMO_SIZE = 16
_solutions: OrderedDict[str, Solution] = OrderedDict()


def solve_memo(stack: Stack, d: int | Sequence[int], lam: float, tied: bool, convention: str,
               stopping: StoppingRule) -> Solution:
    """theory.corners.solve, remembered in this process (the last SOLVE_MEMO_SIZE) under the exact inputs:
    every weight's shape and float64 bytes, d, lambda, tying, convention and the whole stopping rule
    (StoppingRule.key). The phase diagram and the surgery runs solve identical problems (GBD and its sandwich variant, the lambda = c rows, BS-core);
    each is solved once. The Solution returned is shared: callers must not modify it."""
    key = cache_key(*(f"{W.shape}" for W in stack.weights),
                    *(np.ascontiguousarray(W, dtype=np.float64).tobytes() for W in stack.weights),
                    repr((stack.ranks(d), float(lam), bool(tied), str(convention), stopping.key())))
    if key in _solutions:
        _solutions.move_to_end(key)
        return _solutions[key]
    solution = solve(stack, d, lam, tied, convention, rule=stopping)
    _solutions[key] = solution
    while len(_solutions) > SOLVE_MEMO_SIZE:
        _solutions.popitem(last=False)
    return solution


def section_factors(W: Array, Sigma: Array, U_out: Array, U_in: Array, wh: Whitening | None,
                    installation: str, label: str, notes: list[str]) -> LowRankFactors:
    """Install W (n_out x n_in) on the output section U_out (n_out x d_out) and the input section U_in (n_in x d_in;
    whitened coordinates when ``wh`` is given): W_hat = U_out C V^T (``_bundle`` says how C and V are formed).

    Two factors at the inner rank min(d_out, d_in), enough for W_hat's rank: B = U_out, A = C V^T when
    d_out <= d_in, else B = U_out C, A = V^T. The bias is left to ``with_bias``.
    """
    V = U_in if wh is None else wh.S_pinv.T @ U_in
    if installation == "sandwich":
        C = U_out.T @ (W if wh is None else W @ wh.S) @ U_in
    else:
        C, note = generalized_projection(W, Sigma, U_out, V)
        if note:
            notes.append(f"{label}: {note}")
    A, B = (C @ V.T, U_out) if U_out.shape[1] <= U_in.shape[1] else (V.T, U_out @ C)
    return LowRankFactors(A, B, None)


def _bundle(req: Request) -> Compression:
    """Sections U_0..U_L from theory.corners.solve; layer l installed with U_out = U_l, U_in = U_{l-1}.

    Input basis V: V = U_in on the raw stack. On the whitened stack W_l S_l, U_in lives in whitened
    coordinates and the layer reads x through U_in^T S^+ x, i.e. V = (S^+)^T U_in. Then (A = C V^T, B = U_out)
    - sandwich:   C = U_out^T (W S) U_in, so W_hat = P_out W S P_in S^+ (raw: P_out W P_in);
    - projection: C = U_out^T W Sigma V (V^T Sigma V)^{-1} (``generalized_projection``).
    When S S^T = Sigma exactly and S is invertible, Sigma V = S U_in and V^T Sigma V = I, so the whitened
    projection coincides with the whitened sandwich; they differ only under a Cholesky jitter.
    ``bca=False`` keeps the initial sections (anchors untied, U_BS tied) to isolate what BCA adds.
    """
    notes: list[str] = []
    whs = ([_whiten(S, req.whitening, f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
           if req.whitened else None)
    try:
        stack = Stack.of(req.weights)
        if whs is not None:
            stack = stack.whitened([w.S for w in whs])
        sol = solve_memo(stack, req.d, req.lam if req.bca else np.inf, req.tied, req.convention,
                         req.stopping)
    except ValueError as e:
        raise GbdError(f"{req.method}: {e}") from e
    layers = [section_factors(W, Sigma, sol.sections[l], sol.sections[l - 1], None if whs is None else whs[l - 1],
                              req.installation, f"layer {l}", notes)
              for l, (W, Sigma) in enumerate(zip(req.weights, req.sigmas), start=1)]
    notes.append(f"lambda={req.lam}, tied={req.tied}, convention={sol.convention}, installation="
                 f"{req.installation}, whitened={req.whitened}" + ("" if req.bca else ", no BCA (initial sections)"))
    if sol.run is not None and not sol.run.converged:
        notes.append(sol.run.stop_note)
    run = sol.run
    return Compression(req.method, layers, [req.d] * len(layers), notes, sol.sections,
                       run.sweeps if run else None, run.history if run else None)


def _corner(lam: float, tied: bool) -> Callable[[Request], Compression]:
    """A named corner: ``bundle`` with (lambda, tied) fixed, whatever the caller passed."""
    return lambda req: _bundle(replace(req, lam=lam, tied=tied))


def _bs_core(req: Request) -> Compression:
    """Basis-Sharing-core as the paper's section 7.1 describes it: tied output, per-layer input.

    Output section U_BS = top-d left singular subspace of [W~_1 ... W~_L] (SPEC section 1; it minimizes the
    one-sided error sum_l ||W~_l - P W~_l||^2), the same for every layer; input section of layer l: the top-d
    right singular subspace of W~_l alone. W~_l = W_l, or W_l S_l when ``whitened`` (then the input section lives
    in whitened coordinates). Installed by ``section_factors`` like the bundle family (generalized projection
    or sandwich). At d = n every section is the whole space and W_hat_l = W_l.
    """
    notes: list[str] = []
    whs = ([_whiten(S, req.whitening, f"layer {l}", notes) for l, S in enumerate(req.sigmas, start=1)]
           if req.whitened else None)
    stack = Stack.of(req.weights)
    if whs is not None:
        stack = stack.whitened([w.S for w in whs])
    n_out = stack.weights[0].shape[0]
    if any(W.shape[0] != n_out for W in stack.weights):
        raise GbdError(f"bs-core: a tied output section needs one output width, got "
                       f"{[W.shape[0] for W in stack.weights]}")
    U_BS = top_left_singular(np.hstack(stack.weights), req.d)
    layers = [section_factors(W, Sigma, U_BS, top_left_singular(Wt.T, req.d), None if whs is None else whs[l - 1],
                              req.installation, f"layer {l}", notes)
              for l, (W, Sigma, Wt) in enumerate(zip(req.weights, req.sigmas, stack.weights), start=1)]
    notes.append(f"Basis-Sharing-core (section 7.1): tied output U_BS, per-layer input sections, installation="
                 f"{req.installation}, whitened={req.whitened}")
    return Compression(req.method, layers, [req.d] * len(layers), notes)


def shared_rank(d: int, n_in: int, n_outs: Sequence[int]) -> int:
    """k with k (n_in + sum_l n_out_l) <= d sum_l (n_in + n_out_l): parameter parity with per-layer rank d.

    For g equal layers: k = floor(g d (n_in + n_out) / (n_in + g n_out)).
    """
    return (d * sum(n_in + m for m in n_outs)) // (n_in + sum(n_outs))


def shared_basis(Ws: Sequence[Array], Sigma: Array, k: int, label: str, notes: list[str]) -> list[LowRankFactors]:
    """min_{A, B_l} sum_l ||(W_l - B_l A) X||_F^2 (Sigma = X X^T) at inner rank k: [W_1; ...; W_g] S = U Sg V^T
    (S = chol(Sigma)), A = V_k^T S^{-1} shared (one object), B_l = the rows of U_k Sg_k belonging to layer l."""
    w = _whiten(Sigma, "cholesky", label, notes)
    U, s, Vt = np.linalg.svd(np.vstack(Ws) @ w.S, full_matrices=False)
    A = Vt[:k] @ w.S_pinv
    rows = np.cumsum([0] + [W.shape[0] for W in Ws])
    US = U[:, :k] * s[:k]
    return [LowRankFactors(A, US[rows[j]:rows[j + 1]], None) for j in range(len(Ws))]


def _basis_sharing(req: Request) -> Compression:
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


METHODS: dict[str, Callable[[Request], Compression]] = {
    "v1": _v1,
    "v2": _v2,
    "bundle": _bundle,
    "gbd": _corner(0.0, False),
    "gbd-tied": _corner(0.0, True),
    "bs-core": _bs_core,
    "bs-core-two-sided": _corner(np.inf, True),
    "anchored": _corner(np.inf, False),
    "basis-sharing": _basis_sharing,
}
BIAS_DEFAULTS: dict[str, str] = {m: "keep" if m in BIAS_KEEPING else "project" for m in METHODS}

UserMethod = Callable[[list[Array], list[Array], list["Array | None"], int, Mapping[str, Any]],
                      "Compression | Sequence[LowRankFactors]"]


def register_method(name: str, *, overwrite: bool = False, bias: str | None = None
                    ) -> Callable[[UserMethod], UserMethod]:
    """Decorator adding ``fn(weights, sigmas, biases, d, options)`` to ``METHODS``, the one registry of methods.

    ``fn`` gets the validated float64 W_l (n_out x n_in), Sigma_l = sum x x^T, b_l (or None), the rank d and the
    ``options`` mapping given to ``compress``; it returns a Compression or one LowRankFactors per layer (W_hat_l
    = B_l A_l). The built-in methods live in the same dict, so ``compress``, ``gbd-audit surgery --method NAME``
    and the report treat a registered method exactly like ``v1``. Re-registering a name needs ``overwrite``.
    ``bias`` ("keep" or "project") makes that the method's default bias rule, applied by ``compress`` over the
    biases it returns; None (default) keeps the biases it returns unless ``compress`` is given a ``bias_mode``.
    """
    if bias is not None:
        _check_option("bias rule", bias, BIAS_MODES[1:])
    if not isinstance(name, str) or not name.strip():
        raise GbdError(f"a method name must be a non-empty string, got {name!r}")

    def decorate(fn: UserMethod) -> UserMethod:
        if name in METHODS and not overwrite:
            raise GbdError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
        @functools.wraps(fn)
        def run(req: Request) -> Compression:
            return _as_compression(name, fn(req.weights, req.sigmas, req.biases, req.d, dict(req.options)), req.weights)
        METHODS[name] = run
        BIAS_DEFAULTS.pop(name, None)
        if bias is not None:
            BIAS_DEFAULTS[name] = bias
        return fn
    return decorate


def _as_compression(name: str, out: object, weights: Sequence[Array]) -> Compression:
    """A registered method's result as a Compression, after checking one factor pair per layer of the right shape."""
    layers = out.layers if isinstance(out, Compression) else list(out) if isinstance(out, (list, tuple)) else None
    if layers is None or len(layers) != len(weights) or not all(isinstance(f, LowRankFactors) for f in layers):
        raise GbdError(f"method {name!r} must return a Compression or {len(weights)} LowRankFactors, got {type(out)}")
    for l, (f, W) in enumerate(zip(layers, weights), start=1):
        if f.A.ndim != 2 or f.B.shape != (W.shape[0], f.A.shape[0]) or f.A.shape[1] != W.shape[1]:
            raise GbdError(f"method {name!r}, layer {l}: factors B {f.B.shape} A {f.A.shape} do not give W {W.shape}")
    if isinstance(out, Compression):
        return out
    return Compression(name, layers, [f.rank for f in layers], [f"registered method {name!r}"])


# ----------------------------------------------------------------------------------------------- entry points

def _as_matrix(x: object, what: str) -> Array:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise GbdError(f"{what} must be 2-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GbdError(f"{what} contains NaN or infinite entries")
    return a


def _validate(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None] | None,
              d: int) -> tuple[list[Array], list[Array], list[Array | None]]:
    """float64 copies; equal list lengths; Sigma_l n_in x n_in symmetric, finite; b_l (n_out,); 1 <= d <= min dim."""
    if len(weights) == 0:
        raise GbdError("need at least one weight matrix")
    biases = [None] * len(weights) if biases is None else list(biases)
    if not len(weights) == len(sigmas) == len(biases):
        raise GbdError(f"got {len(weights)} weights, {len(sigmas)} second moments, {len(biases)} biases")
    Ws, Ss, bs = [], [], []
    for l, (W, Sigma, b) in enumerate(zip(weights, sigmas, biases), start=1):
        W = _as_matrix(W, f"W_{l}")
        Sigma = _as_matrix(Sigma, f"Sigma_{l}")
        if Sigma.shape != (W.shape[1], W.shape[1]):
            raise GbdError(f"Sigma_{l} has shape {Sigma.shape}, W_{l} reads {W.shape[1]} inputs")
        if np.abs(Sigma - Sigma.T).max() > 1e-8 * max(np.abs(Sigma).max(), 1e-300):
            raise GbdError(f"Sigma_{l} is not symmetric")
        if b is not None:
            b = np.asarray(b, dtype=np.float64)
            if b.shape != (W.shape[0],) or not np.all(np.isfinite(b)):
                raise GbdError(f"b_{l} must be a finite vector of length {W.shape[0]}, got shape {b.shape}")
        if not isinstance(d, (int, np.integer)) or not 1 <= d <= min(W.shape):
            raise GbdError(f"rank d={d} must be an integer in [1, {min(W.shape)}] for W_{l} of shape {W.shape}")
        Ws.append(W)
        Ss.append(0.5 * (Sigma + Sigma.T))
        bs.append(b)
    return Ws, Ss, bs


def _check_option(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise GbdError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


def compress(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None] | None,
             method: str, d: int, *, lam: float = 0.0, tied: bool = False, convention: str = "original",
             installation: str = "projection", whitened: bool = False, bca: bool = True, group_size: int = 2,
             allocation: str = "loss", bias_mode: str = "method-default", whitening: str = "cholesky",
             stopping: StoppingRule = COMPRESSION, options: Mapping[str, Any] | None = None) -> Compression:
    """Compress layers W_l (n_out x n_in, depth order) with inputs Sigma_l = sum x x^T to rank d.

    ``lam``, ``tied``, ``convention``, ``installation``, ``whitened``, ``bca``, ``whitening`` (the factor used
    when ``whitened``) apply to the bundle family (named corners fix lam and tied themselves);
    ``allocation`` ("loss" or "uniform") to ``v2``; ``group_size`` to ``basis-sharing``; ``bias_mode``
    ("method-default": ``bias_rule``; "project": b_hat = P_out b onto range(B); "keep": b_hat = b) to all,
    registered methods included (``with_bias``); ``stopping`` stops BCA (theory.stopping.StoppingRule:
    relative gradient, relative energy change per sweep, sweep limit); ``options`` go to a
    ``register_method`` method.
    """
    _check_option("method", method, list(METHODS))
    _check_option("installation", installation, INSTALLATIONS)
    _check_option("anchor convention", convention, CONVENTIONS)
    _check_option("allocation", allocation, ALLOCATIONS)
    rule = bias_rule(method, bias_mode)
    _check_option("whitening", whitening, WHITENINGS)
    if not (lam >= 0):
        raise GbdError(f"lambda must be >= 0 (np.inf allowed), got {lam}")
    if not isinstance(stopping, StoppingRule):
        raise GbdError(f"stopping must be a theory.stopping.StoppingRule, got {type(stopping).__name__}")
    if not isinstance(group_size, int) or group_size < 1:
        raise GbdError(f"group_size must be a positive integer, got {group_size}")
    Ws, Ss, bs = _validate(weights, sigmas, biases, d)
    req = Request(method, Ws, Ss, bs, int(d), float(lam), bool(tied), convention, installation, bool(whitened),
                  bool(bca), group_size, allocation, whitening, stopping,
                  dict(options or {}))
    return with_bias(METHODS[method](req), bs, rule)


def error_fraction(error: float, total: float) -> float:
    """error / total, with 0 / 0 = 0: a zero layer (total 0) that its approximation leaves at zero loses nothing;
    a nonzero error against a zero total is inf."""
    if total > 0:
        return error / total
    return 0.0 if error == 0 else float("inf")


def frobenius_error_fraction(weights: Sequence[Array], approximations: Sequence[Array]) -> float:
    """sum_l ||W_l - W_hat_l||_F^2 / sum_l ||W_l||_F^2, through ``error_fraction`` (0 for an all-zero stack
    approximated by zero)."""
    return error_fraction(sum(float(np.sum((W - Wh) ** 2)) for W, Wh in zip(weights, approximations, strict=True)),
                          sum(float(np.sum(W * W)) for W in weights))


def errors(weights: Sequence[Array], sigmas: Sequence[Array], compression: Compression) -> dict:
    """Frobenius fraction sum ||W - W_hat||^2 / sum ||W||^2 and activation fraction
    sum tr((W - W_hat) Sigma (W - W_hat)^T) / sum tr(W Sigma W^T), total and per layer (``error_fraction``:
    defined for zero layers), plus the unnormalized activation errors."""
    Ws = [np.asarray(W, dtype=np.float64) for W in weights]
    Ss = [np.asarray(S, dtype=np.float64) for S in sigmas]
    Whs = compression.W_hats
    if not len(Ws) == len(Ss) == len(Whs):
        raise GbdError(f"got {len(Ws)} weights, {len(Ss)} second moments, {len(Whs)} compressed layers")
    frob = [(float(np.sum((W - Wh) ** 2)), float(np.sum(W * W))) for W, Wh in zip(Ws, Whs)]
    act = [(activation_error(W, Wh, S), activation_error(W, np.zeros_like(W), S)) for W, Wh, S in zip(Ws, Whs, Ss)]
    per_layer = [{"frobenius_fraction": error_fraction(*f), "activation_fraction": error_fraction(*a),
                  "activation_error": a[0]} for f, a in zip(frob, act)]
    return {"frobenius_fraction": error_fraction(*np.sum(frob, axis=0)),
            "activation_fraction": error_fraction(*np.sum(act, axis=0)),
            "activation_error": float(sum(a[0] for a in act)),
            "per_layer": per_layer}


__all__ = ["AllocationError", "LowRankFactors", "Compression", "Request", "METHODS", "register_method", "compress",
           "errors", "error_fraction", "frobenius_error_fraction", "generalized_projection", "section_factors", "shared_basis",
           "v2_allocation", "shared_rank", "output_bias", "bias_rule", "with_bias", "V2_RULE", "BIAS_MODES"]
