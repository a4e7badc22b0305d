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
from theory.grassmann import Array
from theory.energy import tied_energy
from theory.objective import spectrum
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
    s = spectrum(stack)
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


# ----------------------------------------------------------------- the sharp Theorem 2, decided exactly (n = 2, d = 1)

# Exact examples for the sharp statement (theory.theorem2); all have U_BS = e_1, decided by ``decide_exactly``.
SHARP_EXAMPLES: dict[str, list[list[list[int]]]] = {
    # critical, B != 0 (not certified), not block-diagonal, yet U_BS is the global maximum: T(u) = 2 u_1^2
    "equality without the certificate": [[[1, 1], [0, 0]], [[1, -1], [0, 0]]],
    # critical, B != 0, a strict local maximum of T (T(U_BS) = 1) that is not global (T(e_2) = 4)
    "strict local maximum, not global": [[[-1, 0], [0, 2]], [[0, 2], [0, 0]]],
    # every W_l symmetric, L = 2, nonzero gradient at U_BS: strict although the paper's hypothesis fails
    "all symmetric, strict": [[[2, 1], [1, -2]], [[1, 0], [0, 0]]],
    # non-symmetric, not block-diagonal (C != 0), B = 0: the certificate, equality
    "non-symmetric, not block-diagonal, equality": HAND_COUNTEREXAMPLE[0],
}


@dataclass
class ExactDecision:
    """Theorem 2 decided in exact arithmetic for a 2 x 2 integer stack at d = 1 with a rational U_BS.

    u(phi) = cos(phi) v + sin(phi) w (v spans U_BS, w its complement, both unit), g(phi) = T(u(phi)).
    ``global_max``: T(U_BS) >= T(u) for every unit u, certified by the nonnegativity on R of
    p(t) = T(U_BS) (1 + t^2)^2 - N(t), N(t) = sum_l ((v + t w)^T W_l (v + t w))^2 (every real root of
    even multiplicity, checked by Sturm counts on the square-free factors, and p > 0 somewhere), and
    T(U_BS) >= T(w) (the point t = infinity). Otherwise ``witness`` is a rational u with T(u) > T(U_BS).
    """

    weights: list[list[list[int]]]
    symmetric: bool
    block_diagonal: bool                # every B_l = 0 and C_l = 0 in the basis (v, w)
    t_bs: sp.Expr
    bound: sp.Expr                      # sigma_1^2 of [W_1, W_2, ...]
    off_block: sp.Expr                  # sum_l B_l^2
    gradient: sp.Expr                   # g'(0)
    gradient_by_blocks: sp.Expr         # 2 sum_l (B_l A_l - D_l B_l)
    hessian: sp.Expr                    # g''(0)
    global_max: bool
    witness: list[sp.Expr] | None
    witness_value: sp.Expr | None

    @property
    def verdict(self) -> str:
        return "equality" if self.global_max else "strict"

    @property
    def bs_class(self) -> str:
        if self.gradient != 0:
            return "not critical"
        return "local maximum" if self.hessian < 0 else "saddle or degenerate"

    def describe(self) -> dict[str, object]:
        """JSON-ready summary (exact values as strings)."""
        return {"weights": self.weights, "d": 1, "symmetric": self.symmetric, "block_diagonal": self.block_diagonal,
                "t_bs": str(self.t_bs), "bound": str(self.bound), "sum_B2": str(self.off_block),
                "gradient": str(self.gradient), "hessian": str(self.hessian), "u_bs": self.bs_class,
                "verdict": self.verdict, "witness": None if self.witness is None else [str(x) for x in self.witness],
                "witness_T": None if self.witness_value is None else str(self.witness_value)}


def _nonnegative_on_reals(p: sp.Poly) -> bool:
    """p(t) >= 0 for every real t: odd-multiplicity factors have no real root and p > 0 at some point."""
    if p.is_zero:
        return True
    _, factors = p.sqf_list()
    if any(k % 2 == 1 and f.degree() > 0 and f.count_roots() > 0 for f, k in factors):
        return False
    t = next(x for x in range(1, p.degree() + 2) if p.eval(x) != 0)
    return bool(p.eval(t) > 0)


def decide_exactly(weights: list[list[list[int]]]) -> ExactDecision:
    """Decide E2(U*) = E2(U_BS) or < for a 2 x 2 integer stack at d = 1 (see ExactDecision)."""
    Ws = [sp.Matrix(W) for W in weights]
    if any(W.shape != (2, 2) for W in Ws):
        raise ValueError("the exact decision handles 2 x 2 weights at d = 1")
    G = sum((W * W.T for W in Ws), sp.zeros(2, 2))
    (top, _, vecs), *_ = sorted(G.eigenvects(), key=lambda p: float(p[0]), reverse=True)
    if len(vecs) != 1 or not all(x.is_rational for x in vecs[0]):
        raise ValueError("the exact decision needs a unique, rational U_BS")
    v = vecs[0] / vecs[0].norm()
    w = sp.Matrix([-v[1], v[0]])
    phi, t = sp.symbols("phi t", real=True)
    u = sp.cos(phi) * v + sp.sin(phi) * w
    g = sum(((u.T * W * u)[0]) ** 2 for W in Ws)
    A = [(v.T * W * v)[0] for W in Ws]
    B = [(v.T * W * w)[0] for W in Ws]
    C = [(w.T * W * v)[0] for W in Ws]
    D = [(w.T * W * w)[0] for W in Ws]
    t_bs = sp.nsimplify(sum(a ** 2 for a in A))
    y = v + t * w
    N = sp.expand(sum(((y.T * W * y)[0]) ** 2 for W in Ws))
    p = sp.Poly(sp.expand(t_bs * (1 + t ** 2) ** 2 - N), t)
    t_perp = sum(d_ ** 2 for d_ in D)
    global_max = bool(_nonnegative_on_reals(p) and t_bs >= t_perp)
    witness, value = None, None
    if not global_max:
        witness, value = _witness(Ws, v, w, t_bs)
    return ExactDecision(
        weights, all(W == W.T for W in Ws), all(b == 0 for b in B) and all(c == 0 for c in C), t_bs, top,
        sp.nsimplify(sum(b ** 2 for b in B)), sp.simplify(sp.diff(g, phi).subs(phi, 0)),
        sp.simplify(2 * sum(b * a - d_ * b for a, b, d_ in zip(A, B, D))),
        sp.simplify(sp.diff(g, phi, 2).subs(phi, 0)), global_max, witness, value)


def _witness(Ws: list[sp.Matrix], v: sp.Matrix, w: sp.Matrix, t_bs: sp.Expr) -> tuple[list[sp.Expr], sp.Expr]:
    """A unit vector with rational-cosine coordinates (Pythagorean parametrization) where T > T(U_BS)."""
    def T(u: sp.Matrix) -> sp.Expr:
        return sp.nsimplify(sum(((u.T * W * u)[0]) ** 2 for W in Ws))

    grid = np.linspace(0.0, np.pi, 2001)
    Wf = [np.array(W.tolist(), dtype=float) for W in Ws]
    vals = sum(np.einsum("ip,ij,jp->p", np.stack([np.cos(grid), np.sin(grid)]), W, np.stack([np.cos(grid),
                                                                                          np.sin(grid)])) ** 2
               for W in Wf)
    start = float(grid[int(np.argmax(vals))])
    for q in (10, 100, 1000, 10000):
        m = sp.Rational(round(np.tan(start / 2) * q), q)      # u = ((1 - m^2), 2 m) / (1 + m^2): exactly unit
        u = sp.Matrix([(1 - m ** 2) / (1 + m ** 2), 2 * m / (1 + m ** 2)])
        if T(u) > t_bs:
            return list(u), T(u)
    raise ValueError("no rational witness found (T(U_BS) may be the maximum)")


# ---------------------------------------------------------------- any real 2 x 2 stack at d = 1: a certified global max

DIGITS = 60             # working precision of the critical values (sympy's real roots are isolated exactly)
TIE = 1e-40             # critical values closer than TIE * sum_l ||W_l||^2 count as a tie: not decided


@dataclass
class CircleDecision:
    """T(U_BS) against every critical value of T on Gr(2, 1), for real (float) 2 x 2 weights read exactly.

    Each float is a rational (sympy.Rational), so the stack is exact. Directions u(t) = (1, t) / sqrt(1 + t^2) and
    u(inf) = e_2 cover Gr(2, 1); g(t) = T(u(t)) = N(t) / (1 + t^2)^2, N(t) = sum_l ((1, t) W_l (1, t)^T)^2, so
    g'(t) = 0 iff q(t) = N'(t) (1 + t^2) - 4 t N(t) = 0 (rational coefficients). The slopes of the eigenvectors of
    G = sum_l W_l W_l^T are the roots of m(t) = g_12 t^2 + (g_11 - g_22) t - g_12 (t = inf when g_12 = 0 and
    e_2 is the top one). Then, exactly:
    - ``critical``: U_BS is a critical point of T iff the minimal polynomial of its slope divides q (U_BS = e_2 is
      first moved to slope 0 by swapping the basis);
    - the global maximum of T is the largest of g at the real roots of q and of T(e_2), every real root isolated
      exactly by sympy and g evaluated to DIGITS digits;
    - ``verdict``: "strict" when U_BS is not critical (exactly) or another critical point has a larger T (its slope
      is the ``witness``), "equality" when no critical value exceeds T(U_BS). A tie with another critical point
      (closer than TIE) is not decided (``decide_on_circle`` returns None).
    """

    t_bs: sp.Expr | None                # slope of U_BS (None: U_BS = e_2)
    critical: bool
    t_bs_value: sp.Float
    critical_values: list[tuple[sp.Expr, sp.Float]]  # (slope, T there) at every root of q, and (oo, T(e_2))
    witness: sp.Expr | None

    @property
    def verdict(self) -> str:
        return "strict" if (not self.critical or self.witness is not None) else "equality"


def _reversed_slope(Ws: list[sp.Matrix]) -> list[sp.Matrix]:
    """The same stack in the basis (e_2, e_1): slope t of the swapped basis is 1 / t of the original."""
    S = sp.Matrix([[0, 1], [1, 0]])
    return [S * W * S for W in Ws]


def decide_on_circle(weights: list[Array] | list[list[list[float]]]) -> CircleDecision | None:
    """Decide E2(U*) = E2(U_BS) or < for real 2 x 2 weights at d = 1 (CircleDecision); None when U_BS is not unique
    or a tie between critical values is too close to call."""
    Ws = [sp.Matrix([[sp.Rational(float(x)) for x in row] for row in np.asarray(W, dtype=float)]) for W in weights]
    if any(W.shape != (2, 2) for W in Ws):
        raise ValueError("the circle decision handles 2 x 2 weights at d = 1")
    G = sum((W * W.T for W in Ws), sp.zeros(2, 2))
    (top, _, vecs), *rest = sorted(G.eigenvects(), key=lambda p: float(p[0]), reverse=True)
    if len(vecs) != 1:
        return None                                                   # U_BS not unique
    if sp.simplify(vecs[0][0]) == 0:                                  # U_BS = e_2: swap the basis
        Ws = _reversed_slope(Ws)
        vecs = [sp.Matrix([vecs[0][1], vecs[0][0]])]
    t = sp.symbols("t", real=True)
    y = sp.Matrix([1, t])
    N = sp.Poly(sp.expand(sum(((y.T * W * y)[0]) ** 2 for W in Ws)), t)
    q = sp.Poly(N.diff(t) * sp.Poly(1 + t ** 2, t) - sp.Poly(4 * t, t) * N, t)
    t_bs = sp.nsimplify(sp.simplify(vecs[0][1] / vecs[0][0]))
    scale = sum(float(sum(x ** 2 for x in W)) for W in Ws)

    def g(s: sp.Expr) -> sp.Float:
        return sp.N(N.as_expr().subs(t, s) / (1 + s ** 2) ** 2, DIGITS)

    if q.is_zero:                                                     # T constant on the circle
        return CircleDecision(t_bs, True, g(t_bs), [], None)
    critical = q.rem(sp.Poly(sp.minimal_polynomial(t_bs, t), t)).is_zero     # exact: m(t_bs) = 0, m irreducible
    value_bs = g(t_bs)
    values: list[tuple[sp.Expr, sp.Float]] = [(r, g(r)) for r in sp.real_roots(q)]
    values.append((sp.oo, sp.N(N.coeff_monomial(t ** 4), DIGITS)))           # T(e_2): the t^4 coefficient of N
    others = [(s, v) for s, v in values if s == sp.oo or abs(sp.N(s - t_bs, DIGITS)) > 1e-30]
    if any(abs(v - value_bs) <= TIE * scale for _, v in others):
        return None                                                   # a tie too close to call
    better = [s for s, v in others if v > value_bs]
    return CircleDecision(t_bs, critical, value_bs, values, better[0] if better else None)
