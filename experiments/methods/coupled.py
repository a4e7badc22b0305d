"""A joint activation objective with a cross-layer term in activation space, solved by the paper's BCA.

Every attention output projection W_l writes into the same residual stream, so output sections U_l (n x d, one
per layer, residual-stream coordinates) can be compared across layers without any change of coordinates; the
input side is left whole and each layer is installed one-sided, W_hat_l = P_l W_l (B = U_l, A = U_l^T W_l). The
objective to MAXIMIZE over U_1..U_L is

    J(U) = sum_l ||U_l^T W_l S_l||_F^2  +  mu c sum_{l=1}^{L-1} ||U_{l+1}^T H^_{l+1} U_l||_F^2,

- S_l S_l^T = Sigma_l (Cholesky); ||U_l^T W_l S_l||^2 = tr(W_l Sigma_l W_l^T) - tr(D_l Sigma_l D_l^T) with
  D_l = W_l - P_l W_l, so the first sum is the per-layer activation error with the sign flipped;
- H_{l+1} = sum_t h_t h_t^T is the residual-stream second moment entering block l+1 (what the next block reads),
  H^ = H / ||H||_2; the cross-layer term rewards consecutive layers for writing into subspaces that are coupled
  through the stream the next block reads;
- c = max_l ||W_l S_l||_2^2 makes mu dimensionless (like lambda / c in the pipeline).

J is exactly a bundle energy (theory.energy.bundle_energy): the stack of coupling maps G_l = sqrt(mu c) H^_{l+1}
between interfaces l and l+1, plus the anchor term with lambda = 1 and (non-orthonormal) anchors K_l = W_l S_l.
So theory.bca.bca_untied maximizes it block by block (each U_l <- top-d eigenspace of
W_l Sigma_l W_l^T + mu c (H^ P_{l-1} H^ + H^ P_{l+1} H^), Ky Fan: no step lowers J), started from V1's sections.
At mu = 0 the blocks decouple and U_l = top-d left singular vectors of W_l S_l: SVD-LLM V1 exactly.
Without residual moments (``options`` lacks "residual"), H^ = I: a plain subspace-agreement coupling.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from experiments.errors import GbdError
from experiments.methods.factors import Compression, LowRankFactors, output_bias
from experiments.methods.registry import builtin_method
from theory.bca import bca_untied
from theory.grassmann import Array, top_left_singular
from theory.stack import Stack
from theory.stopping import COMPRESSION
from theory.whitening import whitening

METHOD = "act-coupled"
DEFAULT_MU = 1.0


def coupling_stack(residual: Sequence[Array], mu: float, c: float) -> Stack:
    """G_l = sqrt(mu c) H_{l+1} / ||H_{l+1}||_2 for l = 1..L-1 (``residual`` = [H_2, ..., H_L])."""
    return Stack.of([np.sqrt(mu * c) * H / np.linalg.norm(H, 2) for H in residual])


def joint_objective(weights: Sequence[Array], sigmas: Sequence[Array], residual: Sequence[Array], mu: float,
                    sections: Sequence[Array]) -> float:
    """J(U) of the module docstring, evaluated directly (no BCA quantities)."""
    S = [whitening(Sig, "cholesky").S for Sig in sigmas]
    c = max(np.linalg.norm(W @ Sl, 2) ** 2 for W, Sl in zip(weights, S))
    own = sum(float(np.sum((U.T @ W @ Sl) ** 2)) for U, W, Sl in zip(sections, weights, S))
    cross = sum(float(np.sum((sections[l + 1].T @ (H / np.linalg.norm(H, 2)) @ sections[l]) ** 2))
                for l, H in enumerate(residual))
    return own + mu * c * cross


@builtin_method(METHOD)
def activation_coupled(weights: list[Array], sigmas: list[Array], biases: list[Array | None], d: int,
                       options: Mapping[str, Any]) -> Compression:
    """Maximize J (module docstring) by BCA; options: "mu" (>= 0, default 1), "residual" ([H_2..H_L]),
    "stopping" (a theory.stopping.StoppingRule, default COMPRESSION)."""
    mu = float(options.get("mu", DEFAULT_MU))
    if not mu >= 0 or not np.isfinite(mu):
        raise GbdError(f"{METHOD}: mu must be finite and >= 0, got {mu}")
    n = weights[0].shape[0]
    if any(W.shape[0] != n for W in weights):
        raise GbdError(f"{METHOD}: every layer must write the same stream width, got {[W.shape[0] for W in weights]}")
    notes: list[str] = []
    residual = options.get("residual")
    if residual is None:
        residual = [np.eye(n)] * (len(weights) - 1)
        notes.append("no residual-stream moments given: H^ = I")
    residual = [np.asarray(H, dtype=np.float64) for H in residual]
    if len(residual) != len(weights) - 1 or any(H.shape != (n, n) for H in residual):
        raise GbdError(f"{METHOD}: need L-1 = {len(weights) - 1} residual moments of shape {(n, n)}")
    K = []
    for l, Sigma in enumerate(sigmas, start=1):
        wh = whitening(Sigma, "cholesky")
        if wh.jitter > 0:
            notes.append(f"layer {l}: {wh.note}")
        K.append(weights[l - 1] @ wh.S)
    init = [top_left_singular(Kl, d) for Kl in K]                # V1's output sections
    c = max(float(np.linalg.norm(Kl, 2)) ** 2 for Kl in K)
    if len(weights) > 1 and mu > 0:
        stack = coupling_stack(residual, mu, c)
        run = bca_untied(stack, d, lam=1.0, anchors=K, init=init, rule=options.get("stopping", COMPRESSION))
        sections, sweeps, history = run.sections, run.sweeps, run.history
        notes.append(f"mu={mu:g} (units of c={c:.4g}); BCA {sweeps} sweeps, J {history[0]:.6g} -> {history[-1]:.6g}"
                     + f"; {run.stop_note}")
    else:
        sections, sweeps, history = init, 0, None
        notes.append("mu = 0 or one layer: V1's sections")
    layers = [LowRankFactors(U.T @ W, U, output_bias(U, b, "project")) for U, W, b in zip(sections, weights, biases)]
    return Compression(METHOD, layers, [d] * len(layers), notes, sections=None, bca_sweeps=sweeps,
                       energy_history=history)
