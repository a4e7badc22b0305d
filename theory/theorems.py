"""The paper's theorems as checks that return what they found (SPEC.md sections 4 and 5).

Each ``check_*`` runs on one weight stack and returns a dataclass; the property tests in
tests/ call them on hypothesis-generated stacks, and the report prints them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from theory.anchors import AnchorConvention, anchors as make_anchors
from theory.bca import basis_sharing_core, bca_tied, bca_untied, untied_factor
from theory.energy import e2, tied_energy, tied_operator
from theory.grassmann import Array, exp, log, projection, random_section, sin_theta_fro, top_range
from theory.manopt_solver import trust_regions_tied, trust_regions_untied
from theory.stack import Stack

# --------------------------------------------------------------------------- BCA vs an independent solver


@dataclass
class SolverComparison:
    """Best energy of BCA, of pymanopt trust regions, and of BCA from random restarts."""

    bca: float
    trust_regions: float
    restarts: list[float]
    bca_sweeps: int

    @property
    def best(self) -> float:
        return max([self.bca, self.trust_regions, *self.restarts])

    @property
    def relative_gap(self) -> float:
        """(best - BCA) / best: 0 when BCA reached the best maximum any solver found."""
        return (self.best - self.bca) / max(abs(self.best), 1e-300)


def compare_solvers(stack: Stack, d: int, tied: bool, restarts: int = 5, seed: int = 0) -> SolverComparison:
    """BCA from its default start vs trust regions (random start) vs BCA from ``restarts`` random starts."""
    rng = np.random.default_rng(seed)
    if tied:
        run = bca_tied(stack, d)
        _, tr = trust_regions_tied(stack, d, init=random_section(stack.dims[0], d, rng))
        rs = [bca_tied(stack, d, init=random_section(stack.dims[0], d, rng)).energy for _ in range(restarts)]
    else:
        run = bca_untied(stack, d)
        _, tr = trust_regions_untied(stack, d, init=[random_section(n, d, rng) for n in stack.dims])
        rs = [bca_untied(stack, d, init=[random_section(n, d, rng) for n in stack.dims]).energy
              for _ in range(restarts)]
    return SolverComparison(run.energy, tr, rs, run.sweeps)


# --------------------------------------------------------------------------- Theorem 1


@dataclass
class Theorem1Result:
    """Projector distance ||P_U(lambda) - P_A||_F against lambda, with the Davis-Kahan bounds.

    For every interface i at a BCA fixed point, U_i spans the top-d eigenspace of
    M_i = lambda A_i A_i^T + C_i with C_i PSD, so lambda_d(M_i) >= lambda (Weyl) and
        ||sin Theta(U_i, A_i)||_F <= ||(I - A_i A_i^T) C_i U_i||_F / lambda_d(M_i)     (a posteriori)
                                  <= sqrt(d) (||W_i||_2^2 + ||W_{i+1}||_2^2) / lambda  (a priori),
    and ||P_U - P_A||_F^2 = 2 sum_i ||sin Theta_i||_F^2.
    """

    lambdas: list[float]
    distance: list[float]
    bound_posterior: list[float]
    bound_prior: list[float]
    slope: float
    fit_from: float

    @property
    def bound_holds(self) -> bool:
        return all(x <= b * (1 + 1e-9) + 1e-12 for x, b in zip(self.distance, self.bound_posterior)) and all(
            b <= p * (1 + 1e-9) + 1e-12 for b, p in zip(self.bound_posterior, self.bound_prior))


def coupling_norms(stack: Stack) -> list[float]:
    """c_i = ||W_i||_2^2 + ||W_{i+1}||_2^2 >= ||C_i||_2 (terms absent at the ends dropped)."""
    s = [float(np.linalg.norm(W, 2) ** 2) for W in stack.weights]
    return [(s[i - 1] if i > 0 else 0.0) + (s[i] if i < stack.L else 0.0) for i in range(stack.L + 1)]


def check_theorem1(stack: Stack, d: int, lambdas: Sequence[float] | None = None,
                   convention: AnchorConvention = "original") -> Theorem1Result:
    """Solve at each lambda (warm-started along the path from the anchors) and measure the bounds.

    The log-log slope is fitted on the lambdas >= 10 max_i c_i, where the expansion in 1/lambda holds.
    """
    A = make_anchors(stack, d, convention)
    c = coupling_norms(stack)
    cmax = max(c)
    lambdas = sorted(lambdas if lambdas is not None else list(cmax * np.logspace(-1, 4, 16)), reverse=True)
    init = A
    dist, post, prior = [], [], []
    for lam in lambdas:
        sections = bca_untied(stack, d, lam=lam, anchors=A, init=init, tol=1e-15, max_sweeps=2000).sections
        init = sections
        sin2, bnd2 = 0.0, 0.0
        for i in range(stack.L + 1):
            # the exact fixed-point section given its neighbours, and its coupling C_i = F F^T
            F = untied_factor(stack, sections, i, 0.0, None)
            M_factor = np.hstack([F, np.sqrt(lam) * A[i]])
            U = top_range(M_factor, d)
            lam_d = float(np.linalg.eigvalsh(U.T @ (M_factor @ (M_factor.T @ U)))[0])
            sin2 += sin_theta_fro(U, A[i]) ** 2
            bnd2 += (np.linalg.norm(projection(A[i], F @ (F.T @ U))) / lam_d) ** 2
        dist.append(float(np.sqrt(2 * sin2)))
        post.append(float(np.sqrt(2 * bnd2)))
        prior.append(float(np.sqrt(2 * d * sum(ci ** 2 for ci in c)) / lam))
    lam_arr, dist_arr = np.array(lambdas), np.array(dist)
    fit = (lam_arr >= 10 * cmax) & (dist_arr > 1e-13)
    slope = float(np.polyfit(np.log(lam_arr[fit]), np.log(dist_arr[fit]), 1)[0]) if fit.sum() >= 2 else float("nan")
    order = np.argsort(lam_arr)
    return Theorem1Result(list(lam_arr[order]), list(dist_arr[order]), list(np.array(post)[order]),
                          list(np.array(prior)[order]), slope, 10 * cmax)


# --------------------------------------------------------------------------- Theorem 2


@dataclass
class Theorem2Result:
    """Tied bundle optimum U* against Basis-Sharing-core U_BS on E2 (square stacks).

    Facts used: T(U) <= ||U^T [W_1..W_L]||_F^2 <= sum_{k<=d} sigma_k([W_1..W_L])^2 =: bound for every U,
    so T(U_BS) == bound certifies U_BS as a global maximizer (then E2(U*) = E2(U_BS)). A nonzero
    Riemannian gradient of T at U_BS certifies the opposite (E2(U*) < E2(U_BS) strictly).
    """

    hypothesis_holds: bool      # the paper's condition: all square and some W_l non-symmetric
    e2_bs: float
    e2_star: float
    grad_at_bs: float
    bs_certified_max: bool      # T(U_BS) reaches the upper bound
    spectral_gap: float         # sigma_d - sigma_{d+1} of [W_1..W_L]: U_BS unique when > 0
    scale: float

    @property
    def gap(self) -> float:
        """E2(U_BS) - E2(U*) >= 0."""
        return self.e2_bs - self.e2_star

    @property
    def strict(self) -> bool:
        return self.gap > 1e-9 * self.scale or self.grad_at_bs > 1e-7 * self.scale

    @property
    def counterexample(self) -> bool:
        """The paper's hypothesis holds but the inequality is not strict (certified)."""
        return self.hypothesis_holds and self.bs_certified_max and self.spectral_gap > 1e-9 * self.scale

    @property
    def real_condition_agrees(self) -> bool:
        """Our condition: strict  <=>  U_BS is not a global maximizer of T (certified either way here)."""
        return self.strict != self.bs_certified_max


def check_theorem2(stack: Stack, d: int, restarts: int = 3, seed: int = 0) -> Theorem2Result:
    """Compare E2 at U_BS with the best tied optimum found by BCA, trust regions and restarts."""
    if not stack.square:
        raise ValueError("Theorem 2 concerns square stacks (all W_l n x n)")
    U_bs = basis_sharing_core(stack, d)
    s = np.linalg.svd(np.hstack(stack.weights), compute_uv=False)
    bound = float(np.sum(s[:d] ** 2))
    scale = max(stack.total_energy(), 1e-300)
    rng = np.random.default_rng(seed)
    n = stack.dims[0]
    starts = [U_bs] + [random_section(n, d, rng) for _ in range(restarts)]
    best = max(tied_energy(stack, bca_tied(stack, d, init=U0).sections[0]) for U0 in starts)
    best = max(best, trust_regions_tied(stack, d, init=U_bs)[1])
    nonsym = any(np.abs(W - W.T).max() > 0 for W in stack.weights)
    grad = float(np.linalg.norm(projection(U_bs, tied_operator(stack, U_bs @ U_bs.T) @ U_bs)))
    t_bs = tied_energy(stack, U_bs)
    return Theorem2Result(
        hypothesis_holds=nonsym, e2_bs=e2(stack, U_bs), e2_star=min(e2(stack, U_bs), stack.total_energy() - best),
        grad_at_bs=grad, bs_certified_max=t_bs >= bound - 1e-10 * scale,
        spectral_gap=float(s[d - 1] - (s[d] if d < len(s) else 0.0)), scale=scale)


# --------------------------------------------------------------------------- Corollary 3


def tied_hessian_form(stack: Stack, U: Array, H: Array) -> float:
    """Riemannian Hessian quadratic form of T at U on the horizontal tangent vector H (U^T H = 0):

        Hess T(U)[H, H] = 2 <H, M(P) H> + 2 <H, M(H U^T + U H^T) U> - 2 tr(H^T H U^T M(P) U),

    M(P) = sum_l W_l P W_l^T + W_l^T P W_l. With H = Q diag(theta) V^T (principal vectors Q in the
    complement, U V in span U, theta the principal angles to the target) it depends on the angles
    and on the principal vectors through M(P), as SPEC.md section 5 says.
    """
    M = tied_operator(stack, U @ U.T)
    dM = tied_operator(stack, H @ U.T + U @ H.T)
    return float(2 * np.sum(H * (M @ H)) + 2 * np.sum(H * (dM @ U)) - 2 * np.trace(H.T @ H @ (U.T @ M @ U)))


def corollary3_prediction(stack: Stack, U_star: Array, U_bs: Array, t: float = 1.0) -> float:
    """Second-order prediction of E2(gamma(t)) - E2(U*), gamma(t) = Exp_{U*}(t Log_{U*}(U_BS)):

        E2(gamma(t)) - E2(U*) ~= -(t^2 / 2) Hess T(U*)[H, H],   H = Log_{U*}(U_BS),

    valid because U* is a critical point of T; at t = 1 it predicts E2(U_BS) - E2(U*).
    """
    return -0.5 * t * t * tied_hessian_form(stack, U_star, log(U_star, U_bs))


@dataclass
class Corollary3Result:
    """Direct and predicted E2 differences along the geodesic from U* to U_BS."""

    ts: list[float]
    direct: list[float]
    predicted: list[float]
    angles: list[float]         # principal angles between U* and U_BS
    grad_at_star: float

    @property
    def relative_errors(self) -> list[float]:
        return [abs(a - b) / max(abs(a), 1e-300) for a, b in zip(self.direct, self.predicted)]


def tied_optimum(stack: Stack, d: int) -> Array:
    """U*: tied BCA from U_BS, polished by trust regions to a tight critical point."""
    U = bca_tied(stack, d).sections[0]
    U_tr, val = trust_regions_tied(stack, d, init=U)
    return U_tr if val >= tied_energy(stack, U) else U


def check_corollary3(stack: Stack, d: int, ts: Sequence[float] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125),
                     U_star: Array | None = None) -> Corollary3Result:
    """Measure E2(gamma(t)) - E2(U*) directly and by the second-order formula for each t."""
    U_bs = basis_sharing_core(stack, d)
    U_star = tied_optimum(stack, d) if U_star is None else U_star
    H = log(U_star, U_bs)
    e_star = e2(stack, U_star)
    direct = [e2(stack, exp(U_star, t * H)) - e_star for t in ts]
    predicted = [corollary3_prediction(stack, U_star, U_bs, t) for t in ts]
    angles = list(np.linalg.svd(H, compute_uv=False))
    grad = float(np.linalg.norm(projection(U_star, tied_operator(stack, U_star @ U_star.T) @ U_star)))
    return Corollary3Result(list(ts), direct, predicted, angles, grad)
