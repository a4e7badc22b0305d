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

from typing import Sequence

from experiments.errors import GbdError
from experiments.methods.factors import Compression, LowRankFactors, output_bias
from experiments.methods.registry import compress
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
