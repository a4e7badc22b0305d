"""The ledger: the paper's checkable statements, as data, and the only place their numbers are written.

It holds the checkable statements of the paper that this project and the outside audit of 2026-12 found. Left
out: the compute time and seeds of Appendix C (nothing to check) and the attenuation of the Table 1 tied gap
with scale (it needs two model sizes, like frob-attenuation). So it is not "every checkable statement".

Each claim names the paper's section (SPEC.md summarizes the paper; the ids are ours), the statement, the
paper's value (or ``LOST`` where the text we have lost it), the quantity this project measures for it, the
rule that judges it (``experiments.audit.verdicts.RULES``) and that rule's numbers (``tolerance``: the
paper's values and the margins). The report prints each rule by filling its template with these numbers,
so the printed rule and the decision read the same data.

``kind`` says what sort of evidence a verdict can be (``KINDS``): a ``measurement`` on a model (the paper's
is ``paper_model``; on another model it can only *transfer*; with ``only_paper_model`` the paper's numbers
are that model's own and elsewhere it stays "not measured"), ``mathematics`` (model-independent: holds or a
counterexample), ``by construction`` (the definitions make it true; ``reason`` says why; never evidence),
``own result`` (an identity or bound this project derived, not the paper's) or a ``fact`` about the paper's
materials.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

LOST = "lost in the text we have"
PAPER_MODEL = "pythia-1.4b"
KINDS = ("measurement", "mathematics", "by construction", "own result", "fact")


@dataclass(frozen=True)
class Claim:
    """One checkable statement, what kind of evidence it can be, and how it is judged."""

    id: str
    section: str
    statement: str
    paper_value: str
    quantity: str
    judge: str
    tolerance: Mapping[str, float] = field(default_factory=dict)
    kind: str = "measurement"
    reason: str = ""                    # why it holds by construction, whose result it is, or the fact's source
    paper_model: str | None = PAPER_MODEL   # the model the paper measured (None: model-independent)
    only_paper_model: bool = False      # the paper's numbers are this model's own: elsewhere "not measured"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind {self.kind!r} is not one of {KINDS}")


MATH = {"kind": "mathematics", "paper_model": None}


CLAIMS: tuple[Claim, ...] = (
    Claim("bca-monotone", "Method: block-coordinate ascent", "no BCA sweep lowers the bundle energy E",
          "monotone", "largest relative energy drop between sweeps over the seeded stacks (untied and tied), with "
          "this project's safeguarded tied step", "bca_monotone", {"drop": 1e-12}, **MATH),
    Claim("bca-monotone-plain", "Method: block-coordinate ascent (Algorithm 1 as written)", "no sweep of the "
          "paper's plain tied step lowers the tied energy", "monotone", "runs of the plain tied step (top-d "
          "eigenspace of the tied operator, no safeguard) that cycle, over the seeded square stacks",
          "bca_monotone_plain", **MATH),
    Claim("bca-cost", "Method: block-coordinate ascent", "a sweep costs O(L n^2 d), comparable to per-layer SVD",
          "comparable", "seconds per BCA sweep (lambda = 0, untied, the phase cell's time / its sweeps) over the "
          "seconds of the per-layer SVD of the same real stack", "bca_cost", {"factor": 10.0}),
    Claim("bca-cost-exponent", "Section 3.3 (cost)", "a BCA sweep costs O(n^2 d) per layer", "n^2 d",
          "log-log slope of the seconds per sweep against n, from sweeps timed at three or more sizes",
          "cost_exponent", {"low": 1.5, "high": 2.5}),
    Claim("bca-sweeps", "Method: block-coordinate ascent", "BCA converges typically within a few sweeps", "a few",
          "cells of the phase diagram on the real weights that stopped (converged, or stalled on flat energy) "
          "within a few sweeps; sweep-limit stops count against", "bca_sweeps", {"few": 10, "most": 0.5}),
    Claim("thm1-bound", "Theorem 1", "the Davis-Kahan bound on ||sin Theta(U_i, A_i)||_F holds", "holds",
          "stacks where the a posteriori (and a priori) bound held, of all seeded stacks", "thm1_bound",
          kind="own result", paper_model=None, reason="the paper states the rate only; both bounds and their "
          "constants were derived by this project"),
    Claim("thm1-rate", "Theorem 1", "||P_U(lambda) - P_A||_F decays like 1/lambda; fitted log-log slope",
          "about -1", "fitted log-log slopes over the seeded stacks", "thm1_rate", {"low": -1.1, "high": -0.9},
          **MATH),
    Claim("fig1-slope-real", "Figure 1", "Theorem 1's 1/lambda decay on the model's real attn_out stack",
          "about -1", "log-log slope of ||P_U(lambda) - P_A||_F over lambda >= 10 c on the real stack",
          "real_slope", {"low": -1.1, "high": -0.9}),
    Claim("thm1-exact-at-large-lambda", "Theorem 1 / phase diagram",
          "at large lambda the anchored solution recovers its anchors essentially exactly on real weights", LOST,
          "smallest lambda / c of the grid whose untied Frobenius fraction is within the tolerance of the "
          "lambda = inf corner", "large_lambda_limit", {"relative": 0.01, "tied": 0, "min_lambda": 10.0},
          kind="by construction", reason="the energy is continuous in lambda and its lambda -> inf maximizer is "
          "the anchors: any stack approaches its corner"),
    Claim("thm2", "Theorem 2", "tied bundle strictly beats Basis-Sharing-core on E2 when all W_l are square and "
          "one is non-symmetric", "strict", "an exact (sympy) counterexample search over the seeded stacks",
          "thm2", **MATH),
    Claim("thm2-sharp", "Theorem 2 (what holds instead)", "equality iff no ascent direction at U_BS: every B_l = 0 "
          "gives equality, a nonzero Riemannian gradient gives strictness", "-", "each part of the sharp "
          "statement, exactly (sympy) and on the seeded stacks", "thm2_sharp", kind="own result",
          paper_model=None, reason="this project's replacement for Theorem 2, not the paper's statement"),
    Claim("cor3", "Corollary 3", "closed-form second-order principal-angle expansion of E2(U_BS) - E2(U*) matches "
          "direct evaluation", "to fp precision", "relative error of the expansion at U_BS (t = 1)", "cor3",
          {"relative": 1e-8}, **MATH),
    Claim("cor3-exact", "Corollary 3", "an exact principal-angle identity for E2(U_BS) - E2(U*) (what the "
          "corollary could have meant)", "to fp precision", "largest relative error of the exact form over the "
          "stacks it was evaluated on", "cor3_exact", {"relative": 1e-8}, kind="own result", paper_model=None,
          reason="the exact form is this project's identity, not the paper's"),
    Claim("corner-svd", "Framework: corners", "the lambda -> inf untied corner is SVD-LLM", "identity",
          "PPL(anchored corner) / PPL(SVD-LLM V1), paired over windows, with the original and with the V1-output "
          "anchors (as deployed: V1 is one-sided and whitened, the corner two-sided and raw)", "corner_svd",
          {"band": 1.05}),
    Claim("corner-bs", "Framework: corners", "the lambda -> inf tied corner is Basis-Sharing-core", "identity",
          "smallest lambda / c whose tied Frobenius fraction is within the tolerance of the tied lambda = inf "
          "corner (U_BS)", "large_lambda_limit", {"relative": 0.01, "tied": 1, "min_lambda": 10.0},
          kind="by construction", reason="the tied anchor is U_BS itself, so the tied lambda -> inf maximizer is "
          "U_BS"),
    Claim("phase-optimum", "Phase diagram", "the pure-bundle corner (lambda = 0, untied) is the Frobenius optimum of "
          "the phase diagram", "optimum", "the phase cell with the smallest two-sided Frobenius fraction",
          "phase_optimum", {"relative": 1e-9}, kind="by construction", reason="lambda = 0 untied maximizes the "
          "coupling alone with no constraint; every other cell adds a penalty or ties the sections"),
    Claim("lambda0-anchors", "Section 7.3 (lambda = 0 with corrected anchors)", "at lambda = 0 the anchor "
          "convention does not matter", "-", "relative difference of the untied lambda = 0 Frobenius fractions "
          "of the two anchor conventions", "lambda0_anchors", {"relative": 1e-3}, kind="by construction",
          reason="at lambda = 0 the anchors enter only as BCA's starting point"),
    Claim("frob-70m", "Frobenius table", "pure bundle (lambda=0, untied) reduces the two-sided Frobenius error vs "
          "SVD-LLM, Pythia-70M W_O, d/D=0.25", "46.4 %", "g = 1 - F(lambda=0) / F(lambda=inf), untied phase "
          "corners (raw weights)", "frobenius_gain", {"paper": 0.464, "points": 0.05}, paper_model="pythia-70m",
          only_paper_model=True),
    Claim("frob-1.4b", "Frobenius table", "same, Pythia-1.4B", "37.2 %", "as frob-70m", "frobenius_gain",
          {"paper": 0.372, "points": 0.05}, only_paper_model=True),
    Claim("frob-attenuation", "Frobenius table", "the Frobenius gain shrinks with scale (70M -> 1.4B)",
          "46.4 % -> 37.2 %", "the gain g on two model sizes", "frobenius_attenuation"),
    Claim("frob-baseline", "Frobenius table", "the 46.4 % / 37.2 % gain is a gain over SVD-LLM, i.e. over the "
          "per-layer low-rank baseline", "over SVD-LLM", "two-sided Frobenius fraction of the pure bundle beside "
          "per-layer rank-d SVD (Eckart-Young) and the two-sided lambda -> inf corner the gain is measured "
          "against", "frobenius_baseline"),
    Claim("tied-dominance-real", "Theorem 2 on real weights", "GBD-tied beats Basis-Sharing-core on real weights",
          "strict", "two-sided Frobenius fraction of the tied lambda = 0 vs the tied lambda = inf phase cell",
          "tied_dominance", kind="by construction", reason="the tied bundle's ascent starts at U_BS and never "
          "lowers the energy"),
    Claim("tie-gap-size", "Table 1", "the size of the GBD-tied vs Basis-Sharing-core gap", LOST, "relative "
          "two-sided Frobenius gap 1 - F(tied, 0) / F(tied, inf) and PPL(GBD-tied) / PPL(BS-core), paired",
          "tie_gap"),
    Claim("ppl-gbd", "Perplexity table", "WikiText-2 PPL, Pythia-1.4B, W_O at d/D=0.25: pure bundle vs SVD-LLM V1",
          "159.14 vs 50.17", "PPL(GBD) / PPL(V1), paired over windows", "ppl_gbd",
          {"v1": 50.17, "gbd": 159.14, "relative": 0.15}, only_paper_model=True),
    Claim("hs-drop", "HellaSwag table", "HellaSwag accuracy, same setting (V1 -> pure bundle), read as acc",
          "43.5 % -> 30.3 %", "acc(GBD) - acc(V1), paired over items, exact McNemar", "hs_drop",
          {"v1": 0.435, "gbd": 0.303, "points": 0.03, "small_drop": 0.03, "norm": 0}, only_paper_model=True),
    Claim("hs-drop-norm", "HellaSwag table", "the same drop read as acc_norm (the intro says 'normalized "
          "accuracy')", "43.5 % -> 30.3 %", "acc_norm(GBD) - acc_norm(V1), paired over items, exact McNemar",
          "hs_drop", {"v1": 0.435, "gbd": 0.303, "points": 0.03, "small_drop": 0.03, "norm": 1},
          only_paper_model=True),
    Claim("ranking-reversal", "Discussion", "the PPL ranking of the methods is the reverse of their Frobenius "
          "ranking", "reverse", "the paper's pairing: the Frobenius table's corners (pure bundle vs the lambda -> "
          "inf corner standing for SVD-LLM) against their PPL (GBD vs V1), paired", "ranking_reversal_pair"),
    Claim("ranking-reversal-all", "Discussion", "the same over every main-table method", "reverse",
          "Spearman rho(installed Frobenius, PPL) over the main table's methods, exact permutation p-value",
          "ranking_reversal", {"rho": -0.8, "alpha": 0.05}),
    Claim("activation-tracks-ranking", "Discussion", "activation error ranks the methods exactly as PPL does "
          "(while naming V2 lowest in activation error and second in PPL)", "exactly",
          "the paper's own pattern: V2 lowest activation error of the main table yet significantly worse PPL "
          "than V1; every discordant pair with its paired PPL-ratio interval", "activation_ranking"),
    Claim("activation-ratio", "Discussion", "the activation-error ratio GBD / V1 matches the PPL ratio", LOST,
          "act(GBD) / act(V1) beside PPL(GBD) / PPL(V1) and its paired interval at every d/D of the ratio sweep",
          "activation_ratio", {"factor": 2.0}),
    Claim("lambda-flat", "Table 3 (lambda sweep)", "PPL is flat over small lambda and catastrophic at large lambda",
          LOST, "PPL(smallest lambda of the sweep) / PPL(lambda = 0) and PPL(largest lambda) / PPL(V1), paired; "
          "'small' means moving the two-sided Frobenius fraction by at most the tolerance", "lambda_flat",
          {"flat": 1.25, "catastrophic": 10.0, "small": 0.05}),
    Claim("no-sweet-spot", "Section 7.3", "no interior lambda beats both corners (no sweet spot)", "none",
          "PPL(interior) / PPL(better of the lambda = 0 and lambda = inf corners) for each 0 < lambda < inf, "
          "paired", "no_sweet_spot"),
    Claim("best-config", "Section 7.3", "the best configuration is the corrected (V1-output) anchors without BCA",
          "anchors alone", "the bundle-family configuration with the lowest PPL, and its paired ratio to the "
          "corrected anchors alone", "best_config"),
    Claim("anchor-fix-small", "Table 4 (anchor convention)", "V1-output anchors help a little; the gap to V1 "
          "remains", LOST, "PPL(V1-output anchors) / PPL(original anchors) at each lambda where both were run "
          "(else the two-sided Frobenius ratio from the phase diagram, lambda = 0 included), and "
          "PPL(V1-output anchors) / PPL(V1), paired", "anchor_fix", {"little": 0.5}),
    Claim("bca-hurts-fixed-anchors", "Table 4 (anchor convention)", "BCA from corrected (V1-output) anchors is "
          "worse than the anchors alone", LOST, "PPL(bundle, V1-output anchors) / PPL(V1-output anchors, no BCA), "
          "paired", "bca_hurts"),
    Claim("projection-beats-sandwich", "Table 5 (surgery formula)", "the generalized projection beats the "
          "orthogonal sandwich", LOST, "PPL(GBD, sandwich) / PPL(GBD, projection), paired", "projection"),
    Claim("interior", "Table 3 (lambda sweep)", "every interior configuration tested is worse than V1 in PPL",
          "by 2.8x to 23x", "PPL(interior) / PPL(V1) for each 0 < lambda < inf, paired", "interior",
          {"low": 2.8, "high": 23.0}),
    Claim("per-layer-worse", "Section 7.4", "the bundle is strictly worse than V1 per layer", "every layer",
          "per-layer activation error of GBD vs V1", "per_layer"),
    Claim("mechanism", "Discussion", "activation error tracks PPL (high Spearman); Frobenius error does not, and "
          "is negative in the interior", "qualitative", "Spearman rho(activation, PPL) over all compressed "
          "configurations and rho(Frobenius, PPL) over the interior (bootstrap intervals), and rho(two-sided "
          "Frobenius, PPL) over the paper's own lambda sweep (0, the interior, inf) with its exact permutation "
          "p-value", "mechanism", {"rho": 0.6, "alpha": 0.05}),
    Claim("tie-bs", "Discussion", "Basis-Sharing-core collapses to near-random language modeling", "qualitative",
          "PPL(BS-core) against a unigram model's PPL on the same windows, and its HellaSwag accuracy against "
          "chance (1/4, exact binomial interval)", "tie_bs", {"chance": 0.25}),
    Claim("tied-both-poor", "Section 8.1", "both tied methods (GBD-tied, Basis-Sharing-core) perform poorly",
          "poorly", "PPL(GBD-tied) / PPL(V1) and PPL(BS-core) / PPL(V1), paired, beside the reference Basis "
          "Sharing's", "tied_poor", {"poor": 2.0}),
    Claim("code-public", "Appendix C", "the code and caches are public", "public", "the paper's repository",
          "fact_false", kind="fact", paper_model=None,
          reason="the paper's repository holds a LICENSE only (SPEC.md, first lines)"),
    Claim("gpu-determinism", "Appendix C", "GPU non-determinism does not change PPL", "no change",
          "largest per-token NLL difference between runs of the same windows on two devices", "device_check",
          {"nll": 1e-4}),
)

def claim(claim_id: str) -> Claim:
    """The claim with this id."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}")
