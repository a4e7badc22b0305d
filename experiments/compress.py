"""Compress a group of same-kind layers W_1..W_L (n_out x n_in, depth order) to low-rank factors B A.

The public module of the README's examples: it re-exports the registry's entry point and the types it returns.
Inputs per layer: the weight W_l, the input second moment Sigma_l = sum_t x_t x_t^T (n_in x n_in) and the bias b_l
(or None); every method returns ``LowRankFactors`` with W_hat = B A (B: n_out x d, A: d x n_in).

Where each method lives (experiments.methods): ``svd_llm`` (v1, v2), ``bundle`` (bundle, gbd, gbd-tied,
bs-core-two-sided, anchored, bs-core), ``basis_sharing`` (basis-sharing), ``other_weights`` (mlp-chain,
qkv-shared), ``coupled`` (act-coupled); ``registry`` (METHODS, register_method, compress), ``ranks`` (every rank
rule), ``metrics`` (error fractions), ``factors`` (the types).
"""
from experiments.methods.basis_sharing import shared_basis
from experiments.methods.bundle import solve_memo
from experiments.methods.factors import (BIAS_MODES, Compression, LowRankFactors, Request, generalized_projection,
                                         output_bias, section_factors, with_bias)
from experiments.methods.metrics import error_fraction, errors, frobenius_error_fraction
from experiments.methods.ranks import V2_RULE, AllocationError, shared_rank, v2_allocation
from experiments.methods.registry import METHODS, bias_rule, compress, get_method, method_names, register_method

__all__ = ["AllocationError", "LowRankFactors", "Compression", "Request", "METHODS", "register_method", "compress",
           "get_method", "method_names", "errors", "error_fraction", "frobenius_error_fraction",
           "generalized_projection", "section_factors", "shared_basis", "solve_memo", "v2_allocation", "shared_rank",
           "output_bias", "bias_rule", "with_bias", "V2_RULE", "BIAS_MODES"]
