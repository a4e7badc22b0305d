"""experiments.compress: exactness at full rank, optimality of V1 and of the generalized projection,
the sandwich energy identity, V2's allocation, Basis Sharing's parity, and clear errors on bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.compress import METHODS, compress, errors, generalized_projection, shared_rank, v2_allocation
from experiments.errors import GbdError
from theory.bca import basis_sharing_core
from theory.energy import activation_error, two_sided_error
from theory.grassmann import projector, random_section
from theory.stack import Stack
from theory.whitening import whitening

BUNDLE = ("bundle", "gbd", "gbd-tied", "bs-core", "bs-core-two-sided", "anchored")


def group(seed: int, D: int = 6, L: int = 3, tokens: int = 30, bias: bool = True):
    """L random D x D weights, Sigma_l = X_l X_l^T from `tokens` correlated samples, optional biases."""
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((D, D)) for _ in range(L)]
    mix = [rng.standard_normal((D, D)) for _ in range(L)]
    Ss = []
    for M in mix:
        X = M @ rng.standard_normal((D, tokens))
        Ss.append(X @ X.T)
    bs = [rng.standard_normal(D) for _ in range(L)] if bias else None
    return Ws, Ss, bs


def configurations():
    """(method, keyword options) covering every method, installation and whitening choice."""
    for method in METHODS:
        if method in BUNDLE:
            for installation in ("projection", "sandwich"):
                for whitened in (False, True):
                    yield method, {"installation": installation, "whitened": whitened}
            yield method, {"whitened": True, "whitening": "sqrt"}
        elif method == "v2":
            yield method, {"allocation": "uniform"}
        else:
            yield method, {}


@pytest.mark.parametrize("method,kw", list(configurations()))
def test_full_rank_reproduces_weights_and_biases(method, kw):
    Ws, Ss, bs = group(0)
    c = compress(Ws, Ss, bs, method, 6, **kw)
    for W, f, b in zip(Ws, c.layers, bs):
        assert np.allclose(f.W_hat, W, atol=1e-9)
        assert np.allclose(f.bias, b, atol=1e-9)


def test_full_rank_v2_loss_allocation_is_refused_zero_loss():
    Ws, Ss, bs = group(0)
    with pytest.raises(GbdError, match=r"relative truncation losses in \(0, 1\]"):
        compress(Ws, Ss, bs, "v2", 6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), D=st.integers(3, 6), d_frac=st.floats(0.1, 0.9))
def test_v1_has_the_lowest_activation_error_of_all_rank_d_methods(seed, D, d_frac):
    """V1 is the activation-optimal rank-d truncation of each layer (Eckart-Young on W S), so every method
    whose layers have rank <= d does no better, per layer. (Basis Sharing, whose per-layer rank k > d by
    parameter parity, and V2's heterogeneous allocation are not rank-d per layer and may beat it.)"""
    Ws, Ss, _ = group(seed, D=D, tokens=3 * D, bias=False)
    d = max(1, min(D - 1, round(d_frac * D)))
    v1 = errors(Ws, Ss, compress(Ws, Ss, None, "v1", d))["per_layer"]
    scale = [activation_error(W, 0 * W, S) for W, S in zip(Ws, Ss)]
    others = [("v2", {"allocation": "uniform"})] + [(m, kw) for m, kw in configurations() if m in BUNDLE[1:]]
    for method, kw in others:
        e = errors(Ws, Ss, compress(Ws, Ss, None, method, d, **kw))["per_layer"]
        for a, b, s in zip(v1, e, scale):
            assert a["activation_error"] <= b["activation_error"] + 1e-9 * s, (method, kw)


def test_v2_uniform_equals_v1_for_nonsingular_sigma():
    """Any two whitening factors differ by a rotation (S_chol = S_sqrt Q), so W S has the same left
    singular vectors: V2-uniform's W_hat = Trunc_d(W S) S^{-1} = U_d U_d^T W is V1's, exactly."""
    Ws, Ss, bs = group(1)
    v1 = compress(Ws, Ss, bs, "v1", 3)
    v2 = compress(Ws, Ss, bs, "v2", 3, allocation="uniform")
    for a, b in zip(v1.W_hats, v2.W_hats):
        assert np.allclose(a, b, atol=1e-9)


def test_v2_uniform_beats_jittered_v1_on_singular_sigma():
    """Singular Sigma: V2 reaches the Eckart-Young floor of W S (pseudo-inverse on the support) and
    annihilates null(Sigma); V1 whitens Sigma + jitter I, keeps W on null(Sigma), and is no better."""
    Ws, Ss, bs = group(2, tokens=4)  # rank-4 second moments in dimension 6
    d = 2
    v1 = compress(Ws, Ss, bs, "v1", d)
    v2 = compress(Ws, Ss, bs, "v2", d, allocation="uniform")
    assert any("jitter" in n for n in v1.notes) and any("support" in n for n in v2.notes)
    for W, S, a, b in zip(Ws, Ss, v1.W_hats, v2.W_hats):
        w = whitening(S, "sqrt")
        floor = np.sum(np.linalg.svd(W @ w.S, compute_uv=False)[d:] ** 2)
        assert activation_error(W, b, S) == pytest.approx(floor, rel=1e-9)
        assert activation_error(W, a, S) >= floor * (1 - 1e-9)
        null = np.linalg.eigh(S)[1][:, :2]
        assert np.allclose(b @ null, 0, atol=1e-8) and not np.allclose(a @ null, 0, atol=1e-3)


@pytest.mark.parametrize("whitened", [False, True])
def test_generalized_projection_minimizes_activation_error_over_C(whitened):
    """For fixed U_out and input basis V (V = U_in, or (S^+)^T U_in on the whitened stack) the C of
    generalized_projection minimizes tr(E Sigma E^T), E = W - U_out C V^T: every perturbation raises it."""
    Ws, Ss, _ = group(3, bias=False)
    rng = np.random.default_rng(3)
    W, S = Ws[0], Ss[0]
    U_out, U_in = random_section(6, 2, rng), random_section(6, 2, rng)
    V = whitening(S).S_pinv.T @ U_in if whitened else U_in
    C, note = generalized_projection(W, S, U_out, V)
    assert note is None
    best = activation_error(W, U_out @ C @ V.T, S)
    for _ in range(20):
        Cp = C + 1e-3 * rng.standard_normal(C.shape)
        assert activation_error(W, U_out @ Cp @ V.T, S) > best


def test_whitened_projection_equals_whitened_sandwich():
    """With S S^T = Sigma exactly: Sigma V = S U_in and V^T Sigma V = I, so C = U_out^T W S U_in."""
    Ws, Ss, bs = group(4)
    for method in ("gbd", "anchored"):
        p = compress(Ws, Ss, bs, method, 3, whitened=True, installation="projection")
        s = compress(Ws, Ss, bs, method, 3, whitened=True, installation="sandwich")
        for a, b in zip(p.W_hats, s.W_hats):
            assert np.allclose(a, b, atol=1e-9)


def test_projection_beats_sandwich_in_activation_error_on_raw_sections():
    Ws, Ss, bs = group(5)
    p = errors(Ws, Ss, compress(Ws, Ss, bs, "gbd", 2, installation="projection"))
    s = errors(Ws, Ss, compress(Ws, Ss, bs, "gbd", 2, installation="sandwich"))
    for a, b in zip(p["per_layer"], s["per_layer"]):
        assert a["activation_error"] <= b["activation_error"] * (1 + 1e-12)


@pytest.mark.parametrize("method", ["gbd", "gbd-tied", "anchored", "bs-core-two-sided"])
def test_sandwich_frobenius_error_is_the_energy_formula(method):
    """||W - P_out W P_in||^2 = ||W||^2 - ||U_out^T W U_in||^2, and the sum is theory's two-sided error."""
    Ws, Ss, bs = group(6)
    c = compress(Ws, Ss, bs, method, 2, installation="sandwich")
    U = c.sections
    for l, (W, Wh) in enumerate(zip(Ws, c.W_hats), start=1):
        assert np.sum((W - Wh) ** 2) == pytest.approx(np.sum(W**2) - np.sum((U[l].T @ W @ U[l - 1]) ** 2))
    total = errors(Ws, Ss, c)["frobenius_fraction"] * sum(np.sum(W**2) for W in Ws)
    assert total == pytest.approx(two_sided_error(Stack.of(Ws), U))


def test_bs_core_sandwich_is_P_W_P_with_U_BS():
    Ws, Ss, bs = group(7)
    P = projector(basis_sharing_core(Stack.of(Ws), 2))
    c = compress(Ws, Ss, bs, "bs-core-two-sided", 2, installation="sandwich")
    for W, b, f in zip(Ws, bs, c.layers):
        assert np.allclose(f.W_hat, P @ W @ P, atol=1e-10)
        assert np.allclose(f.bias, P @ b, atol=1e-10)


def test_bca_ascends_from_the_initial_sections():
    Ws, Ss, bs = group(8)
    with_bca = compress(Ws, Ss, bs, "gbd", 2, installation="sandwich")
    without = compress(Ws, Ss, bs, "gbd", 2, installation="sandwich", bca=False)
    assert without.bca_sweeps is None and with_bca.bca_sweeps >= 1
    assert np.all(np.diff(with_bca.energy_history) >= -1e-9)
    e_with, e_without = (errors(Ws, Ss, c)["frobenius_fraction"] for c in (with_bca, without))
    assert e_with <= e_without + 1e-12


@settings(max_examples=30, deadline=None)
@given(fractions=st.lists(st.floats(1e-6, 0.999), min_size=1, max_size=8), D=st.integers(4, 64),
       d_frac=st.floats(0.0, 0.5))
def test_v2_allocation_sums_to_group_rank_and_orders_by_loss(fractions, D, d_frac):
    """For R >= 0 (d <= D / 2 on D x D) the ranks sum to |G| d and grow with the relative loss (up to rounding)."""
    d = max(1, int(d_frac * D))
    ranks = v2_allocation(fractions, [(D, D)] * len(fractions), d)
    assert sum(ranks) == len(fractions) * d and all(1 <= r <= D for r in ranks)
    order = np.argsort(fractions, kind="stable")
    assert all(ranks[i] <= ranks[j] + 1 for i, j in zip(order[:-1], order[1:]))


def test_v2_allocation_refuses_a_negative_removal_ratio_and_undefined_fractions():
    """At d = 6 of 8 x 8, R = 1 - 6 * 16 / 64 < 0 and the rule would rank [0.5, 0.2] the wrong way round; a
    fraction 0 (a lossless layer: log(1/0) = inf), above 1, or all equal to 1 (sum of weights 0) has no rank."""
    with pytest.raises(GbdError, match="R=-0.5 < 0"):
        v2_allocation([0.5, 0.2], [(8, 8)] * 2, 6)
    for bad in ([0.0, 0.5], [1.5, 0.5], [1.0, 1.0]):
        with pytest.raises(GbdError, match="relative truncation losses"):
            v2_allocation(bad, [(8, 8)] * 2, 2)


def test_v2_allocation_is_uniform_for_equal_losses_and_named_in_notes():
    assert v2_allocation([0.3] * 4, [(32, 32)] * 4, 8) == [8] * 4
    Ws, Ss, bs = group(9)
    c = compress(Ws, Ss, bs, "v2", 2)
    assert sum(c.ranks) == 6 and any("our scale-free reading of SVD-LLM V2" in n for n in c.notes)


@pytest.mark.parametrize("scale", [1e3, 1e-3])
def test_v2_ranks_do_not_change_when_every_sigma_is_scaled(scale):
    """Our allocation reads each loss as a fraction of tr(W Sigma W^T); Sigma -> c Sigma scales both alike. The
    ranks here are heterogeneous (so the test can fail) and equal at every scale; log L_i would move them."""
    Ws, Ss, bs = group(12, D=12, L=4, tokens=40)
    Ws = [W * s for W, s in zip(Ws, (0.3, 1.0, 3.0, 10.0))]
    Ss = [S * s for S, s in zip(Ss, (1.0, 1e-2, 1e2, 1.0))]
    base = compress(Ws, Ss, bs, "v2", 3).ranks
    assert len(set(base)) > 1
    assert compress(Ws, [scale * S for S in Ss], bs, "v2", 3).ranks == base


def test_basis_sharing_shares_A_and_keeps_parameter_parity():
    Ws, Ss, bs = group(10, D=12, L=3)
    d = 3
    c = compress(Ws, Ss, bs, "basis-sharing", d)
    k = shared_rank(d, 12, [12, 12])
    assert k == 2 * d * 24 // 36 and c.ranks == [k, k, d]  # the last group has one layer: k = d
    assert c.layers[0].A is c.layers[1].A and c.shared == [[0, 1]]
    uniform = compress(Ws, Ss, bs, "v1", d)
    assert c.n_params <= uniform.n_params


def test_bad_input_is_refused_clearly():
    Ws, Ss, bs = group(11)
    with pytest.raises(GbdError, match="rank"):
        compress(Ws, Ss, bs, "v1", 7)
    with pytest.raises(GbdError, match="rank"):
        compress(Ws, Ss, bs, "gbd", 0)
    bad = [W.copy() for W in Ws]
    bad[1][0, 0] = np.nan
    with pytest.raises(GbdError, match="NaN"):
        compress(bad, Ss, bs, "v1", 2)
    bad_S = [S.copy() for S in Ss]
    bad_S[0][1, 1] = np.inf
    with pytest.raises(GbdError, match="NaN or infinite"):
        compress(Ws, bad_S, bs, "v1", 2)
    with pytest.raises(GbdError, match="got 3 weights, 2"):
        compress(Ws, Ss[:2], bs, "v1", 2)
    with pytest.raises(GbdError, match="Sigma_1 has shape"):
        compress(Ws, [np.eye(5)] + Ss[1:], bs, "v1", 2)
    with pytest.raises(GbdError, match="b_2"):
        compress(Ws, Ss, [bs[0], np.ones(5), bs[2]], "v1", 2)
    with pytest.raises(GbdError, match="unknown method"):
        compress(Ws, Ss, bs, "svd-llm-v3", 2)
    with pytest.raises(GbdError, match="unknown installation"):
        compress(Ws, Ss, bs, "gbd", 2, installation="glue")
    with pytest.raises(GbdError, match="chain"):
        compress([np.ones((4, 6)), np.ones((4, 6))], [np.eye(6)] * 2, None, "gbd", 2)
    lossless = [np.zeros_like(Ws[0])] + Ws[1:]       # a zero layer loses nothing: fraction 0, log(1/0) = inf
    with pytest.raises(GbdError, match="relative truncation losses"):
        compress(lossless, Ss, None, "v2", 2)


def test_bs_core_is_tied_output_per_layer_input_and_differs_from_the_two_sided_corner():
    """Section 7.1: sandwich W_hat_l = P_BS W_l P_{V_l}, U_BS the top-d left singular subspace of [W_1 ... W_L]
    (theory's basis_sharing_core), V_l the top-d right singular subspace of W_l; d (n_in + n_out) + n_out
    parameters per layer; not the two-sided P_BS W_l P_BS."""
    Ws, Ss, bs = group(13, D=8, L=3)
    d = 3
    P = projector(basis_sharing_core(Stack.of(Ws), d))
    c = compress(Ws, Ss, bs, "bs-core", d, installation="sandwich")
    two_sided = compress(Ws, Ss, bs, "bs-core-two-sided", d, installation="sandwich")
    for W, f, g in zip(Ws, c.layers, two_sided.layers):
        V = np.linalg.svd(W)[2][:d].T
        assert np.allclose(f.W_hat, P @ W @ V @ V.T, atol=1e-10)
        assert not np.allclose(f.W_hat, g.W_hat, atol=1e-3)
    assert c.n_params == len(Ws) * (d * (8 + 8) + 8)
    projected = compress(Ws, Ss, bs, "bs-core", d)                 # generalized projection: same output section
    for f in projected.layers:
        assert np.allclose(P @ f.W_hat, f.W_hat, atol=1e-10)
    assert errors(Ws, Ss, projected)["activation_error"] <= errors(Ws, Ss, c)["activation_error"] * (1 + 1e-12)


@pytest.mark.parametrize("method,rule", [("v1", "keep"), ("v2", "keep"), ("basis-sharing", "keep"), ("gbd", "project"),
                                         ("gbd-tied", "project"), ("bs-core", "project"),
                                         ("bs-core-two-sided", "project"), ("anchored", "project")])
def test_bias_rule_by_method_family_and_the_option_overrides_it(method, rule):
    Ws, Ss, bs = group(14)
    for mode, expected in (("method-default", rule), ("keep", "keep"), ("project", "project")):
        c = compress(Ws, Ss, bs, method, 2, bias_mode=mode, allocation="uniform")
        assert c.bias_rule == expected
        for f, b in zip(c.layers, bs):
            Q = np.linalg.qr(f.B)[0]
            assert np.allclose(f.bias, b if expected == "keep" else Q @ (Q.T @ b), atol=1e-12)
    with pytest.raises(GbdError, match="unknown bias mode"):
        compress(Ws, Ss, bs, method, 2, bias_mode="drop")


def test_every_built_in_method_resolves_after_importing_experiments_compress_alone():
    """The registry imports a built-in method's module on first use (lm-eval's lazy model table): in a fresh
    interpreter, after ``import experiments.compress`` only, every listed name resolves, and ``mlp-chain`` runs."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import numpy as np
from experiments.compress import compress, get_method, method_names
assert "experiments.methods.other_weights" not in sys.modules and "mlp-chain" in method_names()
rng = np.random.default_rng(0)
Ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.standard_normal((4, 6))]
X, H = rng.standard_normal((4, 40)), rng.standard_normal((6, 40))
c = compress(Ws, [X @ X.T, X @ X.T, H @ H.T], None, "mlp-chain", 2)
assert len(c.layers) == 3
for name in method_names():
    assert callable(get_method(name))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
