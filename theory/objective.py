"""The bundle objectives as problems (cost, gradient, Hessian), written once (pymanopt's Problem, SPEC.md 1).

Untied sections U_0..U_L on Gr(n_0, d) x ... x Gr(n_L, d):
    E(U) = sum_l ||U_l^T W_l U_{l-1}||_F^2 + lambda sum_i ||U_i^T A_i||_F^2,
    grad_{U_i} E = 2 M_i U_i,   M_i = F_i F_i^T,
    F_i(U) = [W_{i+1}^T U_{i+1}, W_i U_{i-1}, sqrt(lambda) A_i]       (absent terms dropped at i = 0, L),
    D(grad_i)[H] = 2 M_i H_i + 2 (F_i(H) F_i(U)^T + F_i(U) F_i(H)^T) U_i   (F_i(H): the coupling columns only).
Tied section U (square stacks), P = U U^T:
    f(U) = T(U) + lambda ||U^T A||_F^2,  T(U) = sum_l ||U^T W_l U||_F^2,
    grad f = 2 (M(P) + lambda A A^T) U,  M(P) = sum_l W_l P W_l^T + W_l^T P W_l = G(U) G(U)^T,
    G(U) = [W_1 U, ..., W_L U, W_1^T U, ..., W_L^T U],
    D(grad)[H] = 2 (M(P) + lambda A A^T) H + 2 (G(H) G(U)^T + G(U) G(H)^T) U.
On the Grassmannian (pymanopt's conventions) the Riemannian gradient is (I - P) grad and the Riemannian
Hessian is Hess f(U)[H] = (I - P) D(grad)[H] - H U^T grad. The *relative* Riemannian gradient
||(I - P) grad|| / ||grad|| (0 for a zero gradient) is the scale-free stopping quantity of the solvers.

The lambda unit c = max_i (||W_i||_2^2 + ||W_{i+1}||_2^2) (``lambda_unit``) bounds every coupling
||C_i||_2, so lambda / c means the same on every model (Theorem 1, the phase diagram).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from theory.energy import bundle_energy, tied_energy
from theory.grassmann import Array, projection
from theory.stack import Stack
from theory.stopping import DEFAULT, StoppingRule

EndpointClass = Literal["local maximum", "saddle", "not critical"]
HESSIAN_TOL = 1e-8      # a Hessian eigenvalue above HESSIAN_TOL * sum_l ||W_l||_F^2 is an ascent direction
ENDPOINT_CLASSES: tuple[str, ...] = ("local maximum", "saddle", "not critical")


def spectrum(stack: Stack) -> Array:
    """Singular values sigma_1 >= sigma_2 >= ... of the stacked matrix [W_1, ..., W_L] (square stacks)."""
    return np.linalg.svd(np.hstack(stack.weights), compute_uv=False)


def spectral_norms_squared(stack: Stack) -> list[float]:
    """||W_l||_2^2 for l = 1..L."""
    return [float(np.linalg.norm(W, 2) ** 2) for W in stack.weights]


def coupling_norms(stack: Stack) -> list[float]:
    """c_i = ||W_i||_2^2 + ||W_{i+1}||_2^2 >= ||C_i||_2 (terms absent at the ends dropped), i = 0..L."""
    s = spectral_norms_squared(stack)
    return [(s[i - 1] if i > 0 else 0.0) + (s[i] if i < stack.L else 0.0) for i in range(stack.L + 1)]


def lambda_unit(stack: Stack) -> float:
    """c = max_i c_i: the unit of lambda (module docstring)."""
    return max(coupling_norms(stack))


def _relative(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _tangent_basis(U: Array) -> list[Array]:
    """Orthonormal basis E_jk = u_perp_j e_k^T of the horizontal space {H : U^T H = 0}."""
    n, d = U.shape
    U_perp = np.linalg.qr(np.hstack([U, np.eye(n)]))[0][:, d:n]   # QR keeps span(U) in the first d columns
    out = []
    for j in range(n - d):
        for k in range(d):
            E = np.zeros((n, d))
            E[:, k] = U_perp[:, j]
            out.append(E)
    return out


def classify(rel_grad: float, hessian_eigs: Array, rule: StoppingRule, htol: float) -> EndpointClass:
    """Not critical when the relative gradient exceeds rule.gtol (``StoppingRule.critical``, the test BCA stops by);
    else a saddle when the Riemannian Hessian on the
    tangent space has an eigenvalue > htol (an ascent direction: a minimum counts here too), else a local
    maximum (every eigenvalue <= htol: negative definite, or semidefinite with flat directions that a
    rank-deficient stack has; the second-order condition of a maximum holds)."""
    if not rule.critical(rel_grad):
        return "not critical"
    return "local maximum" if (hessian_eigs.size == 0 or hessian_eigs.max() <= htol) else "saddle"


@dataclass(frozen=True)
class TiedProblem:
    """f(U) = T(U) + lambda ||U^T A||^2 on Gr(n, d) (module docstring)."""

    stack: Stack
    lam: float = 0.0
    anchor: Array | None = None

    def __post_init__(self) -> None:
        if not self.stack.square:
            raise ValueError(f"tied sections need square weights of one size, got widths {self.stack.dims}")
        if not np.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be finite and >= 0, got {self.lam}")
        if self.lam > 0 and self.anchor is None:
            raise ValueError("lambda > 0 needs an anchor")

    def factor(self, U: Array, with_anchor: bool = True) -> Array:
        """[G(U), sqrt(lambda) A] with M(P) + lambda A A^T = factor factor^T.

        Built through its transpose: the blocks U^T W_l^T, U^T W_l, sqrt(lambda) A^T are written in place as row
        blocks of one C-ordered buffer (no per-product temporaries, no copy of the n x 2Ld result), which is
        returned transposed; F F^T is then one symmetric rank-k product of that buffer.
        """
        Ws, d = self.stack.weights, U.shape[1]
        anchored = bool(with_anchor and self.lam)
        rows = np.empty((2 * len(Ws) * d + (self.anchor.shape[1] if anchored else 0), U.shape[0]))
        for l, W in enumerate(Ws):
            np.matmul(U.T, W.T, out=rows[l * d:(l + 1) * d])                             # (W_l U)^T
            np.matmul(U.T, W, out=rows[(len(Ws) + l) * d:(len(Ws) + l + 1) * d])         # (W_l^T U)^T
        if anchored:
            rows[2 * len(Ws) * d:] = np.sqrt(self.lam) * self.anchor.T
        return rows.T

    def cost(self, U: Array) -> float:
        val = tied_energy(self.stack, U)
        return val + self.lam * float(np.sum((U.T @ self.anchor) ** 2)) if self.lam else val

    def egrad(self, U: Array) -> Array:
        F = self.factor(U)
        return 2.0 * F @ (F.T @ U)

    def ehess(self, U: Array, H: Array) -> Array:
        F, G_H, G_U = self.factor(U), self.factor(H, False), self.factor(U, False)
        return 2.0 * (F @ (F.T @ H) + G_H @ (G_U.T @ U) + G_U @ (G_H.T @ U))

    def rgrad(self, U: Array) -> Array:
        return projection(U, self.egrad(U))

    def relative_grad(self, U: Array) -> float:
        """||(I - P) grad f|| / ||grad f||."""
        g = self.egrad(U)
        return _relative(float(np.linalg.norm(projection(U, g))), float(np.linalg.norm(g)))

    def rhess(self, U: Array, H: Array) -> Array:
        """Riemannian Hessian Hess f(U)[H] = (I - P) D(grad)[H] - H U^T grad."""
        return projection(U, self.ehess(U, H)) - H @ (U.T @ self.egrad(U))

    def hessian_eigenvalues(self, U: Array) -> Array:
        """Eigenvalues of the Riemannian Hessian on the horizontal space, ascending."""
        basis = _tangent_basis(U)
        images = [self.rhess(U, E) for E in basis]
        Hm = np.array([[float(np.sum(Ea * Hb)) for Hb in images] for Ea in basis])
        return np.linalg.eigvalsh(0.5 * (Hm + Hm.T)) if basis else np.zeros(0)

    def classify(self, U: Array, rule: StoppingRule = DEFAULT,
                 htol: float = HESSIAN_TOL) -> EndpointClass:
        """``classify`` by ``rule`` (criticality) with htol relative to sum_l ||W_l||_F^2."""
        return classify(self.relative_grad(U), self.hessian_eigenvalues(U), rule,
                        htol * max(self.stack.total_energy(), 1e-300))


@dataclass(frozen=True)
class UntiedProblem:
    """E(U_0..U_L) on the product of Grassmannians (module docstring)."""

    stack: Stack
    lam: float = 0.0
    anchors: Sequence[Array] | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be finite and >= 0, got {self.lam}")
        if self.lam > 0 and self.anchors is None:
            raise ValueError("lambda > 0 needs anchors")

    def factor(self, sections: Sequence[Array], i: int, with_anchor: bool = True) -> Array:
        """F_i with M_i = F_i F_i^T; without the anchor column: the coupling C_i = F_i F_i^T alone."""
        Ws, cols = self.stack.weights, []
        if i < self.stack.L:
            cols.append(Ws[i].T @ sections[i + 1])      # W_{i+1}^T U_{i+1}
        if i > 0:
            cols.append(Ws[i - 1] @ sections[i - 1])    # W_i U_{i-1}
        if with_anchor and self.lam:
            cols.append(np.sqrt(self.lam) * self.anchors[i])
        return np.hstack(cols)

    def cost(self, sections: Sequence[Array]) -> float:
        return bundle_energy(self.stack, sections, self.lam, self.anchors)

    def egrad(self, sections: Sequence[Array]) -> list[Array]:
        out = []
        for i, U in enumerate(sections):
            F = self.factor(sections, i)
            out.append(2.0 * F @ (F.T @ U))
        return out

    def ehess(self, sections: Sequence[Array], tangents: Sequence[Array]) -> list[Array]:
        out = []
        for i, (U, H) in enumerate(zip(sections, tangents)):
            F, C_H, C_U = self.factor(sections, i), self.factor(tangents, i, False), self.factor(sections, i, False)
            out.append(2.0 * (F @ (F.T @ H) + C_H @ (C_U.T @ U) + C_U @ (C_H.T @ U)))
        return out

    def rgrad(self, sections: Sequence[Array]) -> list[Array]:
        return [projection(U, g) for U, g in zip(sections, self.egrad(sections))]

    def relative_grad(self, sections: Sequence[Array]) -> float:
        """sqrt(sum_i ||(I - P_i) grad_i||^2) / sqrt(sum_i ||grad_i||^2)."""
        g = self.egrad(sections)
        num = sum(float(np.sum(projection(U, gi) ** 2)) for U, gi in zip(sections, g))
        den = sum(float(np.sum(gi ** 2)) for gi in g)
        return _relative(float(np.sqrt(num)), float(np.sqrt(den)))

    def rhess(self, sections: Sequence[Array], tangents: Sequence[Array]) -> list[Array]:
        """Hess E(U)[H]_i = (I - P_i) D(grad_i)[H] - H_i U_i^T grad_i."""
        return [projection(U, h) - H @ (U.T @ g) for U, H, h, g in
                zip(sections, tangents, self.ehess(sections, tangents), self.egrad(sections))]

    def hessian_eigenvalues(self, sections: Sequence[Array]) -> Array:
        """Eigenvalues of the Riemannian Hessian on the product of horizontal spaces, ascending."""
        basis = []
        for i, U in enumerate(sections):
            for E in _tangent_basis(U):
                basis.append([E if j == i else np.zeros_like(V) for j, V in enumerate(sections)])
        images = [self.rhess(sections, H) for H in basis]
        Hm = np.array([[sum(float(np.sum(a * b)) for a, b in zip(Ha, Hb)) for Hb in images] for Ha in basis])
        return np.linalg.eigvalsh(0.5 * (Hm + Hm.T)) if basis else np.zeros(0)

    def classify(self, sections: Sequence[Array], rule: StoppingRule = DEFAULT,
                 htol: float = HESSIAN_TOL) -> EndpointClass:
        """``classify`` by ``rule`` (criticality) with htol relative to sum_l ||W_l||_F^2."""
        return classify(self.relative_grad(sections), self.hessian_eigenvalues(sections), rule,
                        htol * max(self.stack.total_energy(), 1e-300))
