"""The one registry of compression methods and its entry point ``compress``.

``METHODS`` maps a name to a function of a validated ``Request``. The built-in names of methods defined in modules
that themselves use the registry (``mlp-chain``, ``qkv-shared``: ``other_weights``; ``act-coupled``: ``coupled``)
are resolved on first use, as lm-evaluation-harness's model table imports an implementation when its name is
asked for: ``compress(W, S, None, "mlp-chain", 2)`` works after ``import experiments.compress`` alone.
``register_method`` adds a user's function. ``method_names`` lists every name, loaded or not.

Bias (``bias_rule``): V1, V2 and the reference Basis Sharing keep the layer's bias b unchanged, as their authors'
code does; every other method installs b_hat = P_out b (SPEC section 2), P_out the orthogonal projector onto
range(B). ``compress(..., bias_mode="keep" | "project")`` imposes either rule on any method.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from experiments.errors import GbdError
from experiments.methods.basis_sharing import basis_sharing
from experiments.methods.bundle import bs_core, bundle, corner
from experiments.methods.factors import (ALLOCATIONS, BIAS_MODES, INSTALLATIONS, WHITENINGS, Compression,
                                         LowRankFactors, Request, with_bias)
from experiments.methods.svd_llm import v1, v2
from theory.anchors import CONVENTIONS
from theory.grassmann import Array
from theory.stopping import COMPRESSION, StoppingRule

BIAS_KEEPING = ("v1", "v2", "basis-sharing")   # the built-in methods whose authors' code leaves the bias as it is


def bias_rule(method: str, bias_mode: str) -> str | None:
    """The bias rule of ``method``: ``bias_mode`` itself ("keep" or "project"), or for "method-default" the
    method's default (``BIAS_DEFAULTS``): "keep" for V1, V2 and the reference Basis Sharing (their authors' code
    leaves the bias unchanged), "project" (b_hat = P_out b, the paper's rule for its bundle) for the other built-in
    methods, and for a registered method the rule it was registered with, or None: the bias it returns."""
    _check_option("bias mode", bias_mode, BIAS_MODES)
    if bias_mode != "method-default":
        return bias_mode
    return BIAS_DEFAULTS.get(method)


METHODS: dict[str, Callable[[Request], Compression]] = {
    "v1": v1,
    "v2": v2,
    "bundle": bundle,
    "gbd": corner(0.0, False),
    "gbd-tied": corner(0.0, True),
    "bs-core": bs_core,
    "bs-core-two-sided": corner(np.inf, True),
    "anchored": corner(np.inf, False),
    "basis-sharing": basis_sharing,
}


BIAS_DEFAULTS: dict[str, str] = {m: "keep" if m in BIAS_KEEPING else "project" for m in METHODS}
# Built-in methods whose modules use this registry themselves: imported when their name is first asked for.
LAZY: dict[str, str] = {"mlp-chain": "experiments.methods.other_weights",
                        "qkv-shared": "experiments.methods.other_weights",
                        "act-coupled": "experiments.methods.coupled"}


def method_names() -> list[str]:
    """Every method name: the loaded ones, the built-in ones not imported yet, the user's."""
    return sorted(set(METHODS) | set(LAZY))


def get_method(name: str) -> Callable[[Request], Compression]:
    """The method called ``name``, importing a built-in one's module on first use; one clear error listing the
    known names otherwise."""
    if name not in METHODS and name in LAZY:
        importlib.import_module(LAZY[name])
    if name not in METHODS:
        raise GbdError(f"unknown method {name!r}; choose one of {method_names()}")
    return METHODS[name]


UserMethod = Callable[[list[Array], list[Array], list["Array | None"], int, Mapping[str, Any]],
                      "Compression | Sequence[LowRankFactors]"]


def register_method(name: str, *, overwrite: bool = False, bias: str | None = None
                    ) -> Callable[[UserMethod], UserMethod]:
    """Decorator adding ``fn(weights, sigmas, biases, d, options)`` to ``METHODS``, the one registry of methods.

    ``fn`` gets the validated float64 W_l (n_out x n_in), Sigma_l = sum x x^T, b_l (or None), the rank d and the
    ``options`` mapping given to ``compress``; it returns a Compression or one LowRankFactors per layer (W_hat_l
    = B_l A_l). The built-in methods live in the same dict, so ``compress``, ``gbd-audit surgery --method NAME``
    and the report treat a registered method exactly like ``v1``. Re-registering a name needs ``overwrite``.
    ``bias`` ("keep" or "project") makes that the method's default bias rule, applied by ``compress`` over the
    biases it returns; None (default) keeps the biases it returns unless ``compress`` is given a ``bias_mode``.
    """
    if bias is not None:
        _check_option("bias rule", bias, BIAS_MODES[1:])
    if not isinstance(name, str) or not name.strip():
        raise GbdError(f"a method name must be a non-empty string, got {name!r}")

    def decorate(fn: UserMethod) -> UserMethod:
        if (name in METHODS or name in LAZY) and not overwrite:
            raise GbdError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
        LAZY.pop(name, None)               # the user's replaces a built-in not imported yet
        _install(name, fn, bias)
        return fn
    return decorate


def builtin_method(name: str, *, bias: str | None = None) -> Callable[[UserMethod], UserMethod]:
    """``register_method`` for a built-in method of ``LAZY``, run when its module is imported: it leaves a user's
    replacement of the name in place."""
    def decorate(fn: UserMethod) -> UserMethod:
        if name not in METHODS:
            _install(name, fn, bias)
        return fn
    return decorate


def _install(name: str, fn: UserMethod, bias: str | None) -> None:
    """``fn`` in ``METHODS`` under ``name`` (results checked by ``_as_compression``), ``bias`` its default rule."""
    @functools.wraps(fn)
    def run(req: Request) -> Compression:
        return _as_compression(name, fn(req.weights, req.sigmas, req.biases, req.d, dict(req.options)), req.weights)
    METHODS[name] = run
    BIAS_DEFAULTS.pop(name, None)
    if bias is not None:
        BIAS_DEFAULTS[name] = bias


def _as_compression(name: str, out: object, weights: Sequence[Array]) -> Compression:
    """A registered method's result as a Compression, after checking one factor pair per layer of the right shape."""
    layers = out.layers if isinstance(out, Compression) else list(out) if isinstance(out, (list, tuple)) else None
    if layers is None or len(layers) != len(weights) or not all(isinstance(f, LowRankFactors) for f in layers):
        raise GbdError(f"method {name!r} must return a Compression or {len(weights)} LowRankFactors, got {type(out)}")
    for l, (f, W) in enumerate(zip(layers, weights), start=1):
        if f.A.ndim != 2 or f.B.shape != (W.shape[0], f.A.shape[0]) or f.A.shape[1] != W.shape[1]:
            raise GbdError(f"method {name!r}, layer {l}: factors B {f.B.shape} A {f.A.shape} do not give W {W.shape}")
    if isinstance(out, Compression):
        return out
    return Compression(name, layers, [f.rank for f in layers], [f"registered method {name!r}"])


def _as_matrix(x: object, what: str) -> Array:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise GbdError(f"{what} must be 2-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GbdError(f"{what} contains NaN or infinite entries")
    return a


def _validate(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None] | None,
              d: int) -> tuple[list[Array], list[Array], list[Array | None]]:
    """float64 copies; equal list lengths; Sigma_l n_in x n_in symmetric, finite; b_l (n_out,); 1 <= d <= min dim."""
    if len(weights) == 0:
        raise GbdError("need at least one weight matrix")
    biases = [None] * len(weights) if biases is None else list(biases)
    if not len(weights) == len(sigmas) == len(biases):
        raise GbdError(f"got {len(weights)} weights, {len(sigmas)} second moments, {len(biases)} biases")
    Ws, Ss, bs = [], [], []
    for l, (W, Sigma, b) in enumerate(zip(weights, sigmas, biases), start=1):
        W = _as_matrix(W, f"W_{l}")
        Sigma = _as_matrix(Sigma, f"Sigma_{l}")
        if Sigma.shape != (W.shape[1], W.shape[1]):
            raise GbdError(f"Sigma_{l} has shape {Sigma.shape}, W_{l} reads {W.shape[1]} inputs")
        if np.abs(Sigma - Sigma.T).max() > 1e-8 * max(np.abs(Sigma).max(), 1e-300):
            raise GbdError(f"Sigma_{l} is not symmetric")
        if b is not None:
            b = np.asarray(b, dtype=np.float64)
            if b.shape != (W.shape[0],) or not np.all(np.isfinite(b)):
                raise GbdError(f"b_{l} must be a finite vector of length {W.shape[0]}, got shape {b.shape}")
        if not isinstance(d, (int, np.integer)) or not 1 <= d <= min(W.shape):
            raise GbdError(f"rank d={d} must be an integer in [1, {min(W.shape)}] for W_{l} of shape {W.shape}")
        Ws.append(W)
        Ss.append(0.5 * (Sigma + Sigma.T))
        bs.append(b)
    return Ws, Ss, bs


def _check_option(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise GbdError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


def compress(weights: Sequence[Array], sigmas: Sequence[Array], biases: Sequence[Array | None] | None,
             method: str, d: int, *, lam: float = 0.0, tied: bool = False, convention: str = "original",
             installation: str = "projection", whitened: bool = False, bca: bool = True, group_size: int = 2,
             allocation: str = "loss", bias_mode: str = "method-default", whitening: str = "cholesky",
             stopping: StoppingRule = COMPRESSION, options: Mapping[str, Any] | None = None) -> Compression:
    """Compress layers W_l (n_out x n_in, depth order) with inputs Sigma_l = sum x x^T to rank d.

    ``lam``, ``tied``, ``convention``, ``installation``, ``whitened``, ``bca``, ``whitening`` (the factor used
    when ``whitened``) apply to the bundle family (named corners fix lam and tied themselves);
    ``allocation`` ("loss" or "uniform") to ``v2``; ``group_size`` to ``basis-sharing``; ``bias_mode``
    ("method-default": ``bias_rule``; "project": b_hat = P_out b onto range(B); "keep": b_hat = b) to all,
    registered methods included (``with_bias``); ``stopping`` stops BCA (theory.stopping.StoppingRule:
    relative gradient, relative energy change per sweep, sweep limit); ``options`` go to a
    ``register_method`` method.
    """
    run = get_method(method)
    _check_option("installation", installation, INSTALLATIONS)
    _check_option("anchor convention", convention, CONVENTIONS)
    _check_option("allocation", allocation, ALLOCATIONS)
    rule = bias_rule(method, bias_mode)
    _check_option("whitening", whitening, WHITENINGS)
    if not (lam >= 0):
        raise GbdError(f"lambda must be >= 0 (np.inf allowed), got {lam}")
    if not isinstance(stopping, StoppingRule):
        raise GbdError(f"stopping must be a theory.stopping.StoppingRule, got {type(stopping).__name__}")
    if not isinstance(group_size, int) or group_size < 1:
        raise GbdError(f"group_size must be a positive integer, got {group_size}")
    Ws, Ss, bs = _validate(weights, sigmas, biases, d)
    req = Request(method, Ws, Ss, bs, int(d), float(lam), bool(tied), convention, installation, bool(whitened),
                  bool(bca), group_size, allocation, whitening, stopping,
                  dict(options or {}))
    return with_bias(run(req), bs, rule)

