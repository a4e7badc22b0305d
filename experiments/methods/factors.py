"""What every compression method shares: the factor types (W_hat = B A), the validated request, the whitening
of a second moment, the bias rules' projection and the installation of a weight on output and input sections.

``LowRankFactors``: W_hat = B A with B: n_out x d, A: d x n_in, so the model surgery is method-agnostic.
``generalized_projection``: C = U_out^T W Sigma V (V^T Sigma V)^{-1}, the activation-optimal core on given sections.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.linalg import orth

from theory.grassmann import Array
from theory.stopping import StoppingRule
from theory.whitening import Whitening, whitening

INSTALLATIONS = ("projection", "sandwich")


ALLOCATIONS = ("loss", "uniform")


BIAS_MODES = ("method-default", "keep", "project")


WHITENINGS = ("cholesky", "sqrt")


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


def whiten(Sigma: Array, kind: str, label: str, notes: list[str]) -> Whitening:
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


def section_factors(W: Array, Sigma: Array, U_out: Array, U_in: Array, wh: Whitening | None,
                    installation: str, label: str, notes: list[str]) -> LowRankFactors:
    """Install W (n_out x n_in) on the output section U_out (n_out x d_out) and the input section U_in (n_in x d_in;
    whitened coordinates when ``wh`` is given): W_hat = U_out C V^T (``bundle`` says how C and V are formed).

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

