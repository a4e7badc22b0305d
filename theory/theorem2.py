"""Theorem 2, sharpened: what decides E2(U*) < E2(U_BS), in the blocks of W_l at U_BS (SPEC.md section 5).

Write W_l in the orthonormal basis (U, U_perp), U = U_BS the top-d left singular subspace of [W_1..W_L]:
    [U, U_perp]^T W_l [U, U_perp] = [[A_l, B_l], [C_l, D_l]],
    A_l = U^T W_l U,  B_l = U^T W_l U_perp,  C_l = U_perp^T W_l U,  D_l = U_perp^T W_l U_perp.
1. T(U_BS) = sum_{k<=d} sigma_k^2 - sum_l ||B_l||_F^2.
   Proof: T(U) = sum_l ||A_l||^2, and U^T W_l W_l^T U = A_l A_l^T + B_l B_l^T, whose trace summed over l is
   tr(U^T G U) = sum_{k<=d} sigma_k^2 (G = sum_l W_l W_l^T, U its top-d eigenspace).
2. Hence the certificate T(U_BS) = sum_{k<=d} sigma_k^2 (the global upper bound of T, see
   theory.counterexamples) holds iff every B_l = 0, i.e. U^T W_l U_perp = 0, i.e. W_l^T span(U) is inside
   span(U): span(U_BS) is invariant under every W_l^T (equivalently span(U_perp) under every W_l). Nothing
   is needed of W_l span(U) (C_l may be anything). It certifies equality E2(U*) = E2(U_BS).
3. The Riemannian gradient of T at U_BS is
       (I - P) 2 M(P) U = 2 U_perp sum_l (C_l A_l^T + B_l^T A_l) = 2 U_perp sum_l (B_l^T A_l - D_l B_l^T),
   the last step by U_perp^T G U = sum_l (C_l A_l^T + D_l B_l^T) = 0 (U is an eigenspace of G).
   B = 0 gives a zero gradient; a nonzero gradient certifies strictness (U_BS is not even critical).
4. Between them (B != 0, gradient 0) local information cannot decide: U_BS may be the global maximum of T
   (equality) or a strict local maximum that is not global (strict); theory.counterexamples keeps exact
   examples of both, decided by a certified global maximum, and decides any real 2 x 2 stack at d = 1 so
   (``decide_on_circle``: every critical point of T on Gr(2, 1), exactly; used by theorems.check_theorem2).
   "Gradient 0" is the stopping rule's test (theory.stopping): relative gradient <= gtol.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.grassmann import Array
from theory.objective import spectrum
from theory.stack import Stack


@dataclass(frozen=True)
class Blocks:
    """U = U_BS, its complement U_perp and the blocks A_l, B_l, C_l, D_l of every W_l (module docstring)."""

    U: Array
    U_perp: Array
    A: list[Array]
    B: list[Array]
    C: list[Array]
    D: list[Array]


def bs_blocks(stack: Stack, d: int) -> Blocks:
    """The blocks of every W_l in the basis (U_BS, U_BS-perp), both from one full SVD of [W_1..W_L]."""
    if not stack.square:
        raise ValueError("Theorem 2 concerns square stacks (all W_l n x n)")
    stack.check_rank(d)
    basis = np.linalg.svd(np.hstack(stack.weights), full_matrices=True)[0]
    U, U_perp = basis[:, :d], basis[:, d:]
    return Blocks(U, U_perp, [U.T @ W @ U for W in stack.weights], [U.T @ W @ U_perp for W in stack.weights],
                  [U_perp.T @ W @ U for W in stack.weights], [U_perp.T @ W @ U_perp for W in stack.weights])


def t_bs_by_blocks(stack: Stack, d: int) -> float:
    """sum_{k<=d} sigma_k^2 - sum_l ||B_l||_F^2 (statement 1)."""
    return float(np.sum(spectrum(stack)[:d] ** 2)) - float(sum(np.sum(B ** 2) for B in bs_blocks(stack, d).B))


def gradient_by_blocks(stack: Stack, d: int) -> Array:
    """2 U_perp sum_l (B_l^T A_l - D_l B_l^T): the Riemannian gradient of T at U_BS (statement 3)."""
    b = bs_blocks(stack, d)
    return 2.0 * b.U_perp @ sum(B.T @ A - D @ B.T for A, B, D in zip(b.A, b.B, b.D))


def off_block_norm(stack: Stack, d: int) -> float:
    """sqrt(sum_l ||B_l||_F^2): zero iff span(U_BS) is invariant under every W_l^T (statement 2)."""
    return float(np.sqrt(sum(np.sum(B ** 2) for B in bs_blocks(stack, d).B)))
