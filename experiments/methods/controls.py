"""Controls the paper did not run: the unification gap, the activation-aware bundle, the whole of Table 4.

Coordinates at each interface. The output side of W_l (and of the whitened W_l S_l: whitening acts on the input
side only) is the stream W_l writes, in its own coordinates. The input side of W_l S_l is the whitened input
coordinate z = S_l^{-1} x of layer l (S_l S_l^T = Sigma_l, Cholesky). A section U_in of that whitened side is
installed on raw inputs through V = S_l^{-T} U_in (the layer reads U_in^T S_l^{-1} x), and the factor C comes from
the generalized projection C = U_out^T W Sigma V (V^T Sigma V)^{-1} (experiments.compress._bundle). The bundle
couples interface i by using ONE section for the output of W_i and the (whitened) input of W_{i+1}: for W_O
stacks these are different physical spaces (the residual stream written by block i; the concatenated head
outputs read by block i+1, whitened by S_{i+1}), so the coupling identifies coordinates index by index and has
no physical meaning: the question is only whether it helps numerically. Anchors follow the same convention
(theory.anchors on the whitened stack): "original" = the reader's whitened right subspace, "v1-output" = the
writer's left subspace of W_i S_i, i.e. V1's own output section.

Unification gap. The lambda -> infinity untied corner as the paper installs it is (two-sided, unwhitened,
original anchors); V1 is (one-sided, whitened, writer's own left subspace). ``corner_variant`` spans the 2 x 2 x 2
cube sides x whitening x convention: one-sided means U_in = I (W_hat = P_out W, the activation-optimal C for a
full input side), two-sided the generalized projection on (U_out, U_in). The cell (one-sided, whitened,
v1-output) IS V1: U_out = top-d left singular vectors of W S.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from experiments.methods.factors import Compression, LowRankFactors, output_bias
from experiments.methods.registry import compress
from experiments.errors import GbdError
from experiments.methods.ranks import absolute_lambda
from theory.anchors import anchors
from theory.grassmann import Array
from theory.stack import Stack
from theory.whitening import whitening

SIDES = ("two-sided", "one-sided")


def corner_variant(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None], d: int,
                   sides: str, whitened: bool, convention: str = "original") -> Compression:
    """The lambda -> inf untied corner with the chosen sides, whitening and anchor convention (module docstring)."""
    if sides not in SIDES:
        raise GbdError(f"unknown sides {sides!r}; choose one of {list(SIDES)}")
    label = f"anchored corner, {sides}, {'whitened' if whitened else 'unwhitened'}, {convention} anchors"
    if sides == "two-sided":
        c = compress(weights, sigmas, biases, "anchored", d, convention=convention, whitened=whitened)
        c.method = label
        return c
    raw = Stack.of(weights)
    stack = raw.whitened([whitening(S, "cholesky").S for S in sigmas]) if whitened else raw
    try:
        sections = anchors(stack, d, convention)
    except ValueError as e:
        raise GbdError(f"{label}: {e}") from e
    layers = [LowRankFactors(U.T @ W, U, output_bias(U, b, "project"))
              for U, W, b in zip(sections[1:], raw.weights, biases or [None] * raw.L)]
    return Compression(label, layers, [d] * len(layers), [f"{label}: W_hat_l = P_l W_l, P_l from the anchor A_l"])


@dataclass(frozen=True)
class Control:
    """One configuration of a control question: a label, the question it answers, how to compress."""

    question: str
    label: str
    run: Callable[..., Compression]       # (weights, sigmas, biases, d, c, stopping): BCA stops by the mode's rule


def _compress_with(method: str, **kw: Any) -> Callable[..., Compression]:
    """A Control.run calling experiments.compress with the mode's BCA stopping rule (a StoppingRule), as the
    surgery's rows do; ``lam_over_c`` multiplies the lambda unit c."""
    lam_over_c = kw.pop("lam_over_c", None)

    def run(weights, sigmas, biases, d, c, stopping):
        lam = {} if lam_over_c is None else {"lam": absolute_lambda(lam_over_c, c)}
        return compress(weights, sigmas, biases, method, d, **lam, **kw, stopping=stopping)
    return run


def unification_gap() -> list[Control]:
    """The 2 x 2 x 2 cube of the lambda -> inf untied corner (sides x whitening x convention)."""
    return [Control("unification-gap", f"{sides}, {'whitened' if w else 'unwhitened'}, {conv} anchors",
                    lambda W, S, b, d, c, stopping, sides=sides, w=w, conv=conv:   # no BCA at lambda -> inf
                    corner_variant(W, S, b, d, sides, w, conv))
            for conv in ("original", "v1-output") for w in (False, True) for sides in SIDES]


def whitened_corners() -> list[Control]:
    """The activation-aware (whitened, Cholesky) bundle at every corner, installed by the generalized projection."""
    names = {"gbd": "pure bundle (GBD)", "gbd-tied": "tied bundle (GBD-tied)",
             "bs-core-two-sided": "Basis-Sharing-core, two-sided (tied corner)", "anchored": "anchored corner"}
    return [Control("whitened-bundle", f"{label}, {kind}", _compress_with(m, whitened=whitened))
            for m, label in names.items() for whitened, kind in ((False, "unwhitened"), (True, "whitened"))]


def table4(lambdas_over_c: Sequence[float]) -> list[Control]:
    """The paper's Table 4: original anchors + BCA at each lambda; V1-output anchors used directly (no BCA);
    V1-output anchors + BCA at each lambda (lambda in units of c)."""
    if len(lambdas_over_c) == 0:
        raise GbdError("Table 4 needs at least one lambda")
    rows = [Control("table4", f"original anchors, BCA, lambda/c={x:g}",
                    _compress_with("bundle", lam_over_c=x, convention="original")) for x in lambdas_over_c]
    rows.append(Control("table4", "V1-output anchors used directly (no BCA)",
                        _compress_with("anchored", convention="v1-output")))
    rows += [Control("table4", f"V1-output anchors, BCA, lambda/c={x:g}",
                     _compress_with("bundle", lam_over_c=x, convention="v1-output")) for x in lambdas_over_c]
    return rows
