"""Sequential (error-propagating) compression: each layer fitted to the ORIGINAL model's output of that layer
from the inputs that the already-compressed earlier layers actually deliver.

Objective of layer l (SPEC names; X_l the inputs of W_l in the uncompressed model, X~_l its inputs when layers
1..l-1 are already replaced by their compressed versions, both over the same calibration tokens):

    J_l(W_hat) = ||W_l X_l - W_hat X~_l||_F^2,   rank(W_hat) <= d.

With the cross moment C_l = X_l X~_l^T and the input moment Sigma~_l = X~_l X~_l^T (streamed by hooks while the
original and the compressed model's residual streams advance together, one block at a time:
``sequential_compress``), J_l = tr(W Sigma W^T) - 2 tr(W C W_hat^T) + tr(W_hat Sigma~ W_hat^T). Its unconstrained
minimizer is W_ls = W C Sigma~^{-1} (normal equations), and J_l(W_hat) = J_l(W_ls) + ||(W_hat - W_ls) S~||_F^2
with S~ S~^T = Sigma~, so the rank-d minimizer is the reduced-rank regression

    W_hat = U_d U_d^T W_ls,   U_d = top-d left singular vectors of W_ls S~ = W C S~^{-T}

(Eckart-Young on W_ls S~). Factors: B = U_d, A = U_d^T W_ls; b_hat = P_B b like every other method. When no
earlier layer is compressed, X~ = X, C = Sigma~ = Sigma, W_ls = W and this is SVD-LLM V1 exactly.

Shrinkage toward W (``damping``). W_ls has one free coefficient per input dimension and output row; with few
calibration tokens per input dimension (the MLP down projection reads 1536 dimensions; quick mode calibrates on
4096 tokens) it fits the calibration tokens' noise: on SmolLM2's mlp_out layer 2 the propagated error J falls
from V1's 0.23 to 0.11 of ||W X||^2 in sample but rises from 0.28 to 0.35 on held-out calibration text. The
penalized objective

    J_l(W_hat) + delta ||W_hat - W||_F^2,   delta = damping * mean(diag Sigma~_l),

is the same reduced-rank regression with C -> C + delta I and Sigma~ -> Sigma~ + delta I (expand the square), so
it keeps the closed form. When X~ = X it is V1 on the damped moment Sigma + delta I (W_ls = (W Sigma + delta W)
(Sigma + delta I)^{-1} = W, then Eckart-Young on W (Sigma + delta I)^{1/2}); damping = 0 is the plain objective
above. (GPTQ's dampening adds the same delta I to its Hessian but shrinks toward zero: W_ls would then be
W Sigma (Sigma + delta I)^{-1}, not W, even with nothing compressed before.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from experiments.errors import GbdError
from experiments.methods.factors import Compression, LowRankFactors
from experiments.model.adapters import adapter_for
from experiments.model.hooks import block_with_target_input, first_block_calls
from experiments.model.lowrank import LowRankLinear, swapped
from experiments.model.moments import CrossMoments, InputMoments
from theory.grassmann import Array, top_left_singular
from theory.whitening import whitening


@dataclass
class PropagatedMoments:
    """Per layer l: Sigma_l = X X^T (original inputs), C_l = X X~^T, Sigma~_l = X~ X~^T (propagated inputs)."""

    sigma: Array
    cross: Array
    sigma_tilde: Array


def check_damping(damping: float) -> None:
    """A clear error unless the shrinkage ``damping`` is a finite number >= 0."""
    if not (np.isfinite(damping) and damping >= 0):
        raise GbdError(f"damping must be a finite number >= 0, got {damping}")


def reduced_rank_regression(W: Array, cross: Array, sigma_tilde: Array, d: int,
                            bias: Array | None = None, damping: float = 0.0) -> tuple[LowRankFactors, str | None]:
    """argmin_{rank <= d} ||W X - W_hat X~||_F^2 + delta ||W_hat - W||_F^2 from C = X X~^T and Sigma~ = X~ X~^T,
    delta = damping * mean(diag Sigma~) (module docstring).

    Returns the factors (B = U_d, A = U_d^T W C_delta Sigma~_delta^{-1}, C_delta = C + delta I, Sigma~_delta =
    Sigma~ + delta I) and a note when Sigma~_delta needed a Cholesky jitter.
    """
    if not 1 <= d <= min(W.shape):
        raise GbdError(f"rank d={d} must lie in [1, {min(W.shape)}] for W of shape {W.shape}")
    check_damping(damping)
    delta = damping * float(np.mean(np.diag(sigma_tilde)))
    if delta > 0:
        cross = cross + delta * np.eye(len(cross))
        sigma_tilde = sigma_tilde + delta * np.eye(len(sigma_tilde))
    wh = whitening(sigma_tilde, "cholesky")
    WC = W @ cross
    U = top_left_singular(WC @ wh.S_pinv.T, d)                 # W C S~^{-T}
    A = U.T @ WC @ wh.S_pinv.T @ wh.S_pinv                     # U_d^T W C Sigma~^{-1}
    return LowRankFactors(A, U, bias), (wh.note if wh.jitter > 0 else None)   # the bias kept, as V1 keeps it


def propagated_error(W: Array, W_hat: Array, moments: PropagatedMoments) -> float:
    """J(W_hat) = ||W X - W_hat X~||_F^2 = tr(W Sigma W^T) - 2 tr(W C W_hat^T) + tr(W_hat Sigma~ W_hat^T)."""
    return float(np.einsum("ij,jk,ik->", W, moments.sigma, W) - 2 * np.einsum("ij,jk,ik->", W, moments.cross, W_hat)
                 + np.einsum("ij,jk,ik->", W_hat, moments.sigma_tilde, W_hat))


def sequential_compress(model: nn.Module, names: Sequence[str], weights: Sequence[Array],
                        biases: Sequence[Array | None], input_ids: torch.Tensor, d: int, damping: float = 0.0,
                        progress: bool = False) -> tuple[Compression, list[PropagatedMoments]]:
    """Compress the named layers (at most one per block, in depth order), each by ``reduced_rank_regression`` on
    its propagated moments (shrunk toward W by ``damping``), block by block.

    The first block's calls are captured once per calibration row; then two residual streams advance one block
    at a time: the original model's h and the compressed model's h~ (blocks 1..l-1 with their compressed
    targets). In a target's block, its input X is read from the original stream and X~ from the compressed one
    (the same stream while nothing is compressed yet), giving Sigma = X^T X, C = X^T X~, Sigma~ = X~^T X~ (tokens
    as rows); the fitted module is then installed while h~ goes through the block. Cost: about three forwards
    of the model, whatever the depth. The model is left as it was. Returns the Compression and the moments each
    layer was fitted on.
    """
    if len(names) != len(weights) or len(names) != len(biases):
        raise GbdError(f"got {len(names)} names, {len(weights)} weights, {len(biases)} biases")
    check_damping(damping)
    if input_ids.ndim != 2 or len(input_ids) == 0:
        raise GbdError(f"calibration ids must be a non-empty (n, T) tensor, got shape {tuple(input_ids.shape)}")
    adapter = adapter_for(model)
    at = [adapter.block_index(name) for name in names]
    if any(b <= a for a, b in zip(at, at[1:])):
        raise GbdError(f"sequential compression needs at most one target per block, in depth order; got blocks {at}")
    blocks = adapter.blocks(model)
    calls = first_block_calls(model, input_ids)
    original = [c.hidden for c in calls]
    delivered: list[torch.Tensor] | None = None        # the compressed model's stream; None while it is ``original``

    def advance(k: int, stream: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return [adapter.block_forward(blocks[k], h, c.args, c.kwargs) for h, c in zip(stream, calls)]

    layers: list[LowRankFactors] = []
    moments: list[PropagatedMoments] = []
    notes: list[str] = []
    k = 0                                               # the block both streams enter next
    for l, (name, W, b) in enumerate(tqdm(list(zip(names, weights, biases)), desc="sequential", unit="layer",
                                          disable=not progress), start=1):
        while k < at[l - 1]:                            # blocks without a target
            original, delivered = advance(k, original), None if delivered is None else advance(k, delivered)
            k += 1
        target = model.get_submodule(name)
        sigma, cross, sigma_tilde = InputMoments(), CrossMoments(), InputMoments()
        leaving = []
        for r, call in enumerate(calls):
            X, out = block_with_target_input(model, blocks[k], target, call, original[r])
            Xt = X if delivered is None else block_with_target_input(model, blocks[k], target, call, delivered[r])[0]
            sigma.add_batch(X)
            cross.add_batch(X, Xt)
            sigma_tilde.add_batch(Xt)
            leaving.append(out)
        m = PropagatedMoments(*(s.sum.cpu().numpy() for s in (sigma, cross, sigma_tilde)))
        factors, note = reduced_rank_regression(W, m.cross, m.sigma_tilde, d, b, damping)
        if note:
            notes.append(f"layer {l}: {note}")
        layers.append(factors)
        moments.append(m)
        if l < len(names):                              # the last target's block feeds no later fit
            module = LowRankLinear.from_factors(factors, target.weight.dtype, target.weight.device)
            with swapped(model, {name: module}):
                delivered = advance(k, original if delivered is None else delivered)
            original, k = leaving, k + 1
    notes.append(f"sequential: layer l fitted to W_l X_l from the inputs X~_l of the model with layers 1..l-1 "
                 f"compressed, over {input_ids.shape[0]} x {input_ids.shape[1]} calibration tokens"
                 + (f", shrunk toward W_l with delta = {damping:g} mean(diag Sigma~_l)" if damping else ""))
    return Compression("sequential", layers, [d] * len(layers), notes, bias_rule="keep"), moments
