"""The paper's theorems as checks that return what they found (SPEC.md sections 4 and 5).

Each ``check_*`` runs on one weight stack and returns a dataclass; the property tests in
tests/ call them on hypothesis-generated stacks, and the report prints them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from theory.anchors import AnchorConvention, anchors as make_anchors
from theory.bca import BCAResult, basis_sharing_core, bca_tied, bca_untied
from theory.counterexamples import CircleDecision, decide_on_circle
from theory.corollary3 import TAYLOR_ORDER, energy_change, exact_difference, taylor_coefficients, taylor_prediction
from theory.energy import e2, tied_energy
from theory.grassmann import Array, exp, log, random_section, sin_theta_fro, top_eigenspace, top_range
from theory.manopt_solver import trust_regions_tied, trust_regions_untied
from theory.objective import TiedProblem, UntiedProblem, coupling_norms, lambda_unit, spectrum
from theory.stack import Stack
from theory.stopping import DEFAULT, ENDPOINT_MARGIN, TIED, TIGHT, StoppingRule
from theory.theorem2 import bs_blocks, gradient_by_blocks, off_block_norm, t_bs_by_blocks

__all__ = ["coupling_norms", "compare_solvers", "check_theorem1", "check_theorem2", "check_corollary3"]

# --------------------------------------------------------------------------- BCA vs an independent solver


def energy_by_projectors(stack: Stack, sections: Sequence[Array]) -> float:
    """sum_l tr(P_l W_l P_{l-1} W_l^T), P_i = U_i U_i^T: the energy recomputed without theory.energy."""
    P = [U @ U.T for U in sections]
    return float(sum(np.trace(P[l] @ W @ P[l - 1] @ W.T) for l, W in enumerate(stack.weights, start=1)))


@dataclass
class EndPoint:
    """One solver's end point, checked on its own: reported vs recomputed energy, gradient, class."""

    solver: str
    energy: float
    recomputed: float
    rel_grad: float
    kind: str
    stop_reason: str            # BCA's StopReason, or pymanopt's own stopping reason for trust regions
    rule: StoppingRule = DEFAULT

    @property
    def ok(self) -> bool:
        """Energy reported correctly (1e-10 relative) and a critical point: relative gradient <= ENDPOINT_MARGIN *
        rule.gtol (theory.stopping: trust regions stops by its own absolute gradient norm)."""
        return (abs(self.energy - self.recomputed) <= 1e-10 * max(1.0, abs(self.recomputed))
                and self.rel_grad <= ENDPOINT_MARGIN * self.rule.gtol)


@dataclass
class SolverComparison:
    """Energies of BCA, of pymanopt trust regions and of BCA from random restarts, and each end point."""

    bca: float
    trust_regions: float
    restarts: list[float]
    bca_sweeps: int
    endpoints: list[EndPoint] = field(default_factory=list)
    bca_run: BCAResult | None = None

    @property
    def best(self) -> float:
        return max([self.bca, self.trust_regions, *self.restarts])

    @property
    def relative_gap(self) -> float:
        """(best - BCA) / best: 0 when BCA reached the best maximum any solver found."""
        return (self.best - self.bca) / max(abs(self.best), 1e-300)

    @property
    def failures(self) -> list[str]:
        """Solvers whose own end point fails its check (EndPoint.ok)."""
        return [p.solver for p in self.endpoints if not p.ok]


def compare_solvers(stack: Stack, d: int, tied: bool, restarts: int = 5, seed: int = 0,
                    rule: StoppingRule | None = None) -> SolverComparison:
    """BCA from its default start vs trust regions (random start) vs BCA from ``restarts`` random starts, every BCA
    run stopped by ``rule`` (default: theory.stopping.TIED tied, DEFAULT untied).

    Every end point is checked on its own by the same rule: its energy recomputed by ``energy_by_projectors``, its
    relative Riemannian gradient and its class (local maximum / saddle / not critical, theory.objective).
    """
    rule = rule or (TIED if tied else DEFAULT)
    rng = np.random.default_rng(seed)
    n = stack.dims[0]
    if tied:
        problem = TiedProblem(stack)
        runs = [bca_tied(stack, d, rule=rule)]
        tr = trust_regions_tied(stack, d, init=random_section(n, d, rng))
        runs += [bca_tied(stack, d, init=random_section(n, d, rng), rule=rule) for _ in range(restarts)]
        points = [(r.sections[0], r.energy, r.stop_reason) for r in runs] + [tr]
        endpoints = [EndPoint(name, value, energy_by_projectors(stack, [U] * (stack.L + 1)),
                              problem.relative_grad(U), problem.classify(U, rule), reason, rule)
                     for name, (U, value, reason) in zip(_names(restarts), points)]
    else:
        problem = UntiedProblem(stack)
        runs = [bca_untied(stack, d, rule=rule)]
        tr = trust_regions_untied(stack, d, init=[random_section(m, d, rng) for m in stack.dims])
        runs += [bca_untied(stack, d, init=[random_section(m, d, rng) for m in stack.dims], rule=rule)
                 for _ in range(restarts)]
        points = [(r.sections, r.energy, r.stop_reason) for r in runs] + [tr]
        endpoints = [EndPoint(name, value, energy_by_projectors(stack, S), problem.relative_grad(S),
                              problem.classify(S, rule), reason, rule)
                     for name, (S, value, reason) in zip(_names(restarts), points)]
    return SolverComparison(runs[0].energy, tr.value, [r.energy for r in runs[1:]], runs[0].sweeps, endpoints,
                            runs[0])


def _names(restarts: int) -> list[str]:
    return ["bca"] + [f"bca restart {k}" for k in range(1, restarts + 1)] + ["trust-regions"]


# --------------------------------------------------------------------------- Theorem 1

SLOPE_WINDOWS: tuple[tuple[float, float], ...] = ((0.01, 0.1), (0.1, 1.0), (1.0, 10.0), (10.0, 1e4))


@dataclass
class Theorem1Result:
    """Projector distance ||P_U(lambda) - P_A||_F against lambda, with the Davis-Kahan bounds.

    For every interface i at a BCA fixed point, U_i spans the top-d eigenspace of
    M_i = lambda A_i A_i^T + C_i with C_i PSD, so lambda_d(M_i) >= lambda (Weyl) and, for EVERY lambda > 0,
        ||sin Theta(U_i, A_i)||_F <= ||(I - A_i A_i^T) C_i U_i||_F / lambda_d(M_i)     (a posteriori)
                                  <= sqrt(d) (||W_i||_2^2 + ||W_{i+1}||_2^2) / lambda  (a priori),
    and ||P_U - P_A||_F^2 = 2 sum_i ||sin Theta_i||_F^2. Tightness: distance / bound per lambda (the
    a-posteriori ratio tends to 1 as lambda grows). The local log-log slope depends on the lambda window
    (in units of c = theory.objective.lambda_unit): ``window_slopes``.
    """

    lambdas: list[float]
    distance: list[float]
    bound_posterior: list[float]
    bound_prior: list[float]
    slope: float
    fit_from: float
    unit: float = 1.0
    window_slopes: dict[str, float] = field(default_factory=dict)

    @property
    def posterior_holds(self) -> bool:
        return all(x <= b * (1 + 1e-9) + 1e-12 for x, b in zip(self.distance, self.bound_posterior))

    @property
    def prior_holds(self) -> bool:
        return all(x <= p * (1 + 1e-9) + 1e-12 for x, p in zip(self.distance, self.bound_prior))

    @property
    def bound_holds(self) -> bool:
        """distance <= a posteriori <= a priori at every lambda."""
        return self.posterior_holds and all(
            b <= p * (1 + 1e-9) + 1e-12 for b, p in zip(self.bound_posterior, self.bound_prior))

    @property
    def prior_ratio(self) -> list[float]:
        return [x / p if p > 0 else 0.0 for x, p in zip(self.distance, self.bound_prior)]

    @property
    def posterior_ratio(self) -> list[float]:
        return [x / b if b > 0 else 0.0 for x, b in zip(self.distance, self.bound_posterior)]


def loglog_slope(xs: Sequence[float], ys: Sequence[float], lo: float, hi: float, floor: float = 1e-13) -> float:
    """Least-squares slope of log y against log x over lo <= x <= hi and y > floor (nan with < 2 points)."""
    x, y = np.asarray(xs), np.asarray(ys)
    keep = (x >= lo * (1 - 1e-12)) & (x <= hi * (1 + 1e-12)) & (y > floor)
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0]) if keep.sum() >= 2 else float("nan")


def check_theorem1(stack: Stack, d: int, lambdas: Sequence[float] | None = None,
                   convention: AnchorConvention = "original") -> Theorem1Result:
    """Solve at each lambda (warm-started along the path from the anchors) and measure the bounds.

    Default grid: lambda / c = 10^-2 .. 10^4, three per decade. The log-log slope is fitted on
    lambda >= 10 c, where the expansion in 1/lambda holds; ``window_slopes`` fits each of SLOPE_WINDOWS.
    """
    A = make_anchors(stack, d, convention)
    c = coupling_norms(stack)
    cmax = lambda_unit(stack)
    lambdas = sorted(lambdas if lambdas is not None else list(cmax * np.logspace(-2, 4, 19)), reverse=True)
    init = A
    dist, post, prior = [], [], []
    coupling = UntiedProblem(stack)
    for lam in lambdas:
        sections = bca_untied(stack, d, lam=lam, anchors=A, init=init, rule=TIGHT).sections
        init = sections
        sin2, bnd2 = 0.0, 0.0
        for i in range(stack.L + 1):
            # the exact fixed-point section given its neighbours, and its coupling C_i = F F^T
            F = coupling.factor(sections, i)
            M_factor = np.hstack([F, np.sqrt(lam) * A[i]])
            U = top_range(M_factor, d)
            lam_d = float(np.linalg.eigvalsh(U.T @ (M_factor @ (M_factor.T @ U)))[0])
            sin2 += sin_theta_fro(U, A[i]) ** 2
            bnd2 += (np.linalg.norm((F @ (F.T @ U)) - A[i] @ (A[i].T @ (F @ (F.T @ U)))) / lam_d) ** 2
        dist.append(float(np.sqrt(2 * sin2)))
        post.append(float(np.sqrt(2 * bnd2)))
        prior.append(float(np.sqrt(2 * d * sum(ci ** 2 for ci in c)) / lam))
    order = np.argsort(lambdas)
    lam_arr, dist_arr = np.array(lambdas)[order], np.array(dist)[order]
    windows = {f"{lo:g}-{hi:g}": loglog_slope(lam_arr / cmax, dist_arr, lo, hi) for lo, hi in SLOPE_WINDOWS}
    return Theorem1Result(list(lam_arr), list(dist_arr), list(np.array(post)[order]), list(np.array(prior)[order]),
                          loglog_slope(lam_arr, dist_arr, 10 * cmax, np.inf), 10 * cmax, cmax, windows)


def generic_perturbation_slope(n: int, d: int, seed: int, lambdas: Sequence[float] = tuple(np.logspace(1, 4, 7))
                               ) -> float:
    """Log-log slope of ||P_U - P_A||_F, U = top-d eigenspace of lambda A A^T + E, for a random PSD E
    (||E||_2 = 1) unrelated to any stack: any smooth perturbation gives 1/lambda (slope -1), so the slope
    confirms Theorem 1's rate, not its constants."""
    rng = np.random.default_rng(seed)
    A = random_section(n, d, rng)
    G = rng.standard_normal((n, n))
    E = G @ G.T / np.linalg.norm(G @ G.T, 2)
    dist = []
    for lam in lambdas:
        U = top_eigenspace(lam * A @ A.T + E, d)
        dist.append(float(np.linalg.norm(U @ U.T - A @ A.T)))
    return loglog_slope(lambdas, dist, min(lambdas), max(lambdas))


# --------------------------------------------------------------------------- Theorem 2


@dataclass
class Theorem2Result:
    """Tied bundle optimum U* against Basis-Sharing-core U_BS on E2 (square stacks), with the sharp facts.

    T(U) <= ||U^T [W_1..W_L]||_F^2 <= sum_{k<=d} sigma_k^2 =: bound for every U, and (theory.theorem2)
    T(U_BS) = bound - sum_l ||B_l||^2, so all B_l = 0 certifies equality E2(U*) = E2(U_BS); a nonzero
    Riemannian gradient 2 U_perp sum_l (B_l^T A_l - D_l B_l^T) at U_BS certifies strictness. Otherwise
    (critical, B != 0) only a global maximum decides: certified for 2 x 2 stacks at d = 1 by every critical point
    of T on the circle (theory.counterexamples.decide_on_circle, exact; ``case`` "global"), else "undecided".

    "Nonzero gradient" is the one criticality test of theory.stopping: U_BS is not critical when its relative
    Riemannian gradient exceeds rule.gtol, the test ``TiedProblem.classify`` and BCA's "gradient" stop use, so
    the three agree on every stack, whatever the scales of its blocks.
    """

    hypothesis_holds: bool      # the paper's condition: all square and some W_l non-symmetric
    e2_bs: float
    e2_star: float
    grad_at_bs: float           # ||Riemannian gradient of T at U_BS|| (theory.objective)
    rel_grad_at_bs: float       # ||(I - P) grad T|| / ||grad T|| at U_BS: the criticality quantity
    bs_certified_max: bool      # T(U_BS) reaches the upper bound
    spectral_gap: float         # sigma_d - sigma_{d+1} of [W_1..W_L]: U_BS unique when > 0
    scale: float
    off_block: float = 0.0      # sqrt(sum_l ||B_l||^2)
    identity_error: float = 0.0     # |T(U_BS) - (bound - sum ||B_l||^2)| / scale
    gradient_error: float = 0.0     # ||grad (objective) - grad (blocks)|| / scale
    ascent_gain: float = 0.0        # T(Exp_{U_BS}(h g / ||g||)) - T(U_BS) (``ascent_step``; 0 when U_BS is critical)
    bs_class: str = ""              # local maximum / saddle / not critical, by ``rule``
    rule: StoppingRule = TIED
    exact: CircleDecision | None = None     # the certified global maximum where U_BS is critical and B != 0 (n = 2)

    @property
    def gap(self) -> float:
        """E2(U_BS) - E2(U*), U* the best tied end point any solver found (min with U_BS itself)."""
        return self.e2_bs - self.e2_star

    @property
    def critical(self) -> bool:
        """U_BS is critical by the rule (StoppingRule.critical of its relative gradient)."""
        return self.rule.critical(self.rel_grad_at_bs)

    @property
    def strict(self) -> bool:
        return (self.gap > 1e-9 * self.scale or not self.critical
                or (self.exact is not None and self.exact.verdict == "strict"))

    @property
    def case(self) -> str:
        """"gradient" (U_BS not critical), "certified" (B = 0), "global" (critical, B != 0, decided by a certified
        global maximum: ``exact``) or "undecided"."""
        if not self.critical:
            return "gradient"
        if self.off_block <= 1e-7 * np.sqrt(self.scale):
            return "certified"
        return "global" if self.exact is not None else "undecided"

    @property
    def counterexample(self) -> bool:
        """The paper's hypothesis holds but the inequality is not strict (certified)."""
        return self.hypothesis_holds and self.bs_certified_max and self.spectral_gap > 1e-9 * self.scale

    @property
    def real_condition_agrees(self) -> bool:
        """Certified either way: B = 0 gives equality, a nonzero gradient gives strict, the global maximum its verdict
        (else not counted)."""
        if self.case == "global":
            return self.strict == (self.exact.verdict == "strict")
        return {"certified": not self.strict, "gradient": self.strict}.get(self.case, False)


def ascent_step(stack: Stack, g: Array) -> float:
    """h = ||g|| / K, K = 12 sum_l ||W_l||_2^2: along the unit geodesic direction g / ||g||, phi(t) = T(Exp(t g/||g||))
    has phi'(0) = ||g|| and |phi''| <= K (each of the three terms of Hess T[H, H], theory.theorems.tied_hessian_form,
    is <= 4 sum_l ||W_l||_2^2 for ||H||_F = 1), so phi(h) - phi(0) >= ||g||^2 / (2 K) > 0."""
    return float(np.linalg.norm(g)) / (12.0 * float(sum(np.linalg.norm(W, 2) ** 2 for W in stack.weights)))


def check_theorem2(stack: Stack, d: int, restarts: int = 3, seed: int = 0, rule: StoppingRule = TIED
                   ) -> Theorem2Result:
    """Compare E2 at U_BS with the best tied optimum found by BCA (stopped by ``rule``), trust regions and restarts;
    U_BS is critical or not by the same rule."""
    blocks = bs_blocks(stack, d)
    U_bs = blocks.U
    s = spectrum(stack)
    bound = float(np.sum(s[:d] ** 2))
    scale = max(stack.total_energy(), 1e-300)
    rng = np.random.default_rng(seed)
    n = stack.dims[0]
    starts = [U_bs] + [random_section(n, d, rng) for _ in range(restarts)]
    best = max(tied_energy(stack, bca_tied(stack, d, init=U0, rule=rule).sections[0]) for U0 in starts)
    best = max(best, trust_regions_tied(stack, d, init=U_bs).value)
    nonsym = any(np.abs(W - W.T).max() > 0 for W in stack.weights)
    problem = TiedProblem(stack)
    g = problem.rgrad(U_bs)
    g_norm, rel_grad = float(np.linalg.norm(g)), problem.relative_grad(U_bs)
    t_bs = tied_energy(stack, U_bs)
    gain = 0.0 if rule.critical(rel_grad) else energy_change(stack, U_bs, ascent_step(stack, g) * g / g_norm)
    off_block = off_block_norm(stack, d)
    undecided = rule.critical(rel_grad) and off_block > 1e-7 * np.sqrt(scale)
    exact = decide_on_circle(stack.weights) if undecided and (n, d) == (2, 1) else None
    return Theorem2Result(
        hypothesis_holds=nonsym, e2_bs=e2(stack, U_bs), e2_star=min(e2(stack, U_bs), stack.total_energy() - best),
        grad_at_bs=g_norm, rel_grad_at_bs=rel_grad, bs_certified_max=t_bs >= bound - 1e-10 * scale,
        spectral_gap=float(s[d - 1] - (s[d] if d < len(s) else 0.0)), scale=scale,
        off_block=off_block, identity_error=abs(t_bs - t_bs_by_blocks(stack, d)) / scale,
        gradient_error=float(np.linalg.norm(g - gradient_by_blocks(stack, d))) / scale, ascent_gain=gain,
        bs_class=problem.classify(U_bs, rule), rule=rule, exact=exact)


# --------------------------------------------------------------------------- Corollary 3


def tied_hessian_form(stack: Stack, U: Array, H: Array) -> float:
    """Riemannian Hessian quadratic form of T at U on the horizontal tangent vector H (U^T H = 0):

        Hess T(U)[H, H] = <H, (I - P) D(grad T)(U)[H] - H U^T grad T(U)>   (theory.objective.TiedProblem)
                        = 2 <H, M(P) H> + 2 <H, M(H U^T + U H^T) U> - 2 tr(H^T H U^T M(P) U),

    M(P) = sum_l W_l P W_l^T + W_l^T P W_l. With H = Q diag(theta) V^T it depends on the angles
    and on the principal vectors through M(P), as SPEC.md section 5 says.
    """
    return float(np.sum(H * TiedProblem(stack).rhess(U, H)))


def corollary3_prediction(stack: Stack, U_star: Array, U_bs: Array, t: float = 1.0) -> float:
    """Second-order prediction of E2(gamma(t)) - E2(U*), gamma(t) = Exp_{U*}(t Log_{U*}(U_BS)):

        E2(gamma(t)) - E2(U*) ~= -(t^2 / 2) Hess T(U*)[H, H],   H = Log_{U*}(U_BS),

    valid because U* is a critical point of T; at t = 1 it predicts E2(U_BS) - E2(U*).
    """
    return -0.5 * t * t * tied_hessian_form(stack, U_star, log(U_star, U_bs))


@dataclass
class Corollary3Result:
    """Direct, second-order, exact and Taylor (orders 3, 4) E2 differences along the geodesic U* -> U_BS."""

    ts: list[float]
    direct: list[float]
    predicted: list[float]
    angles: list[float]         # principal angles between U* and U_BS
    grad_at_star: float
    exact: list[float] = field(default_factory=list)        # theory.corollary3.exact_difference
    taylor: dict[int, list[float]] = field(default_factory=dict)    # order -> prediction per t
    phi: list[float] = field(default_factory=list)          # Taylor coefficients phi_0..phi_4 of T(gamma(t))

    @staticmethod
    def _relative(direct: Sequence[float], other: Sequence[float]) -> list[float]:
        return [abs(a - b) / max(abs(a), 1e-300) for a, b in zip(direct, other)]

    @property
    def relative_errors(self) -> list[float]:
        """Of the paper's second-order form."""
        return self._relative(self.direct, self.predicted)

    @property
    def exact_relative_errors(self) -> list[float]:
        return self._relative(self.direct, self.exact)

    def taylor_relative_errors(self, order: int) -> list[float]:
        return self._relative(self.direct, self.taylor[order])

    def error_order(self, order: int, t_lo: float, t_hi: float, scale: float) -> float:
        """Fitted log-log slope of the relative error of the expansion to ``order`` (2, 3, 4) against t in
        [t_lo, t_hi], over the points whose error exceeds the rounding of the direct difference
        (1e4 eps scale / |direct|, scale = sum_l ||W_l||^2)."""
        errs = self.relative_errors if order == 2 else self.taylor_relative_errors(order)
        keep = [(t, e) for t, e, x in zip(self.ts, errs, self.direct)
                if e > 1e4 * np.finfo(float).eps * scale / max(abs(x), 1e-300)]
        return loglog_slope([t for t, _ in keep], [e for _, e in keep], t_lo, t_hi, floor=0.0)


def tied_optimum(stack: Stack, d: int) -> Array:
    """U*: tied BCA from U_BS, polished by trust regions to a tight critical point."""
    U = bca_tied(stack, d).sections[0]
    tr = trust_regions_tied(stack, d, init=U)
    return tr.point if tr.value >= tied_energy(stack, U) else U


def check_corollary3(stack: Stack, d: int, ts: Sequence[float] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125),
                     U_star: Array | None = None) -> Corollary3Result:
    """Measure E2(gamma(t)) - E2(U*) directly, by the second-order form, exactly and to orders 3 and 4."""
    U_bs = basis_sharing_core(stack, d)
    U_star = tied_optimum(stack, d) if U_star is None else U_star
    H = log(U_star, U_bs)
    e_star = e2(stack, U_star)
    direct = [e2(stack, exp(U_star, t * H)) - e_star for t in ts]
    predicted = [corollary3_prediction(stack, U_star, U_bs, t) for t in ts]
    exact = [exact_difference(stack, U_star, U_bs, t) for t in ts]
    phi = taylor_coefficients(stack, U_star, U_bs)
    taylor = {k: [taylor_prediction(phi, t, k) for t in ts] for k in range(2, TAYLOR_ORDER + 1)}
    angles = list(np.linalg.svd(H, compute_uv=False))
    grad = float(np.linalg.norm(TiedProblem(stack).rgrad(U_star)))
    return Corollary3Result(list(ts), direct, predicted, angles, grad, exact, taylor, phi)
