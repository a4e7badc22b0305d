"""Theorem 2 as stated is false: a shrunk integer counterexample, found by hypothesis and proved by sympy.

The paper: if every W_l is square and one is non-symmetric, the tied bundle optimum U* strictly
beats Basis-Sharing-core on E2. The argument that breaks it (SPEC.md section 5): for every section U,

    T(U) = sum_l ||U^T W_l U||_F^2 <= sum_l ||U^T W_l||_F^2 = ||U^T [W_1..W_L]||_F^2 <= sum_{k<=d} sigma_k^2,

so whenever T(U_BS) reaches the right-hand side, U_BS is a global maximizer of T and
E2(U*) = E2(U_BS), non-symmetric weights or not. ``minimal_counterexample`` lets hypothesis search
small integer stacks for such a certificate and shrink it; ``prove_exactly`` redoes the certificate
in exact arithmetic (sympy), so the printed counterexample is a proof, not a floating-point event.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st

from theory.bca import basis_sharing_core
from theory.energy import tied_energy
from theory.stack import Stack

# Found by hand first and kept as a regression: n = 2, d = 1, L = 2.
HAND_COUNTEREXAMPLE: tuple[list[list[list[int]]], int] = ([[[-2, 0], [1, 0]], [[2, 0], [1, 0]]], 1)


@dataclass
class ExactCertificate:
    """Exact facts about an integer stack at rank d (all sympy-exact)."""

    weights: list[list[list[int]]]
    d: int
    non_symmetric: bool
    sigma2: list[sp.Expr]            # eigenvalues of G = sum_l W_l W_l^T, descending
    bound: sp.Expr                   # sum of the top-d eigenvalues of G
    t_bs: sp.Expr                    # T(U_BS) = sum_l tr(P W_l P W_l^T), P the projector on U_BS
    gradient_zero: bool              # (I - P) M(P) P == 0 exactly

    @property
    def unique_bs(self) -> bool:
        return self.d >= len(self.sigma2) or bool(sp.simplify(self.sigma2[self.d - 1] - self.sigma2[self.d]) > 0)

    @property
    def refutes_theorem2(self) -> bool:
        """Hypothesis of Theorem 2 holds, U_BS is unique and T(U_BS) reaches the global upper bound."""
        return self.non_symmetric and self.unique_bs and sp.simplify(self.t_bs - self.bound) == 0


def _top_projector(G: sp.Matrix, d: int) -> tuple[sp.Matrix, list[sp.Expr]]:
    """Exact projector on the top-d eigenspace of the symmetric integer matrix G, and G's eigenvalues."""
    pairs = sorted(G.eigenvects(), key=lambda p: float(p[0]), reverse=True)
    values = [v for v, mult, _ in pairs for _ in range(mult)]
    basis = [vec for _, _, vecs in pairs for vec in vecs][:d]
    Q, _ = sp.Matrix.hstack(*basis).QRdecomposition()
    return sp.simplify(Q * Q.T), values


def prove_exactly(weights: list[list[list[int]]], d: int) -> ExactCertificate:
    """Recompute the certificate of the module docstring in exact arithmetic."""
    Ws = [sp.Matrix(W) for W in weights]
    G = sp.zeros(Ws[0].rows, Ws[0].rows)
    for W in Ws:
        G += W * W.T
    P, values = _top_projector(G, d)
    t_bs = sp.simplify(sum(((P * W * P) * W.T).trace() for W in Ws))
    M = sp.zeros(*P.shape)
    for W in Ws:
        M += W * P * W.T + W.T * P * W
    grad = sp.simplify((sp.eye(P.rows) - P) * M * P)
    return ExactCertificate(weights, d, any(W != W.T for W in Ws), values,
                            sp.simplify(sum(values[:d])), t_bs, grad == sp.zeros(*P.shape))


def _float_refutes(example: tuple[list[list[list[int]]], int]) -> bool:
    """Fast floating-point screen for ``ExactCertificate.refutes_theorem2``."""
    weights, d = example
    stack = Stack.of(np.array(weights, dtype=float))
    if not any((np.array(W) != np.array(W).T).any() for W in weights):
        return False
    s = np.linalg.svd(np.hstack(stack.weights), compute_uv=False)
    if s[d - 1] - (s[d] if d < len(s) else 0.0) < 1e-9:
        return False
    return tied_energy(stack, basis_sharing_core(stack, d)) >= float(np.sum(s[:d] ** 2)) - 1e-9


@st.composite
def integer_stacks(draw: st.DrawFn, max_n: int = 3, max_L: int = 3, bound: int = 2
                   ) -> tuple[list[list[list[int]]], int]:
    """Small square integer stacks (n <= max_n, L <= max_L, entries in [-bound, bound]) with a rank d < n."""
    n = draw(st.integers(2, max_n))
    L = draw(st.integers(1, max_L))
    entries = st.integers(-bound, bound)
    weights = [[[draw(entries) for _ in range(n)] for _ in range(n)] for _ in range(L)]
    return weights, draw(st.integers(1, n - 1))


def minimal_counterexample(max_examples: int = 20_000) -> ExactCertificate:
    """Search and shrink with hypothesis (deterministic), then prove the result exactly."""
    weights, d = find(integer_stacks(), _float_refutes,
                      settings=settings(max_examples=max_examples, derandomize=True, database=None,
                                        suppress_health_check=list(HealthCheck)))
    return prove_exactly(weights, d)
