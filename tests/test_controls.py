"""The controls (unification-gap cube, whitened corners, Table 4) and the activation-coupled joint objective."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.compress import compress
from experiments.errors import GbdError
from experiments.methods.controls import corner_variant
from experiments.methods.coupled import joint_objective
from experiments.runs.beyond import table4, unification_gap, whitened_corners
from experiments.runs.rows import compression_of
from theory.grassmann import projector, top_left_singular
from theory.stopping import COMPRESSION, StoppingRule
from theory.whitening import whitening


def group(seed: int, D: int = 6, L: int = 3, tokens: int = 30):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((D, D)) for _ in range(L)]
    Ss = []
    for _ in range(L):
        X = rng.standard_normal((D, D)) @ rng.standard_normal((D, tokens))
        Ss.append(X @ X.T)
    return Ws, Ss, [rng.standard_normal(D) for _ in range(L)]


CONTROLS = (unification_gap("attn_out", 0.25) + whitened_corners("attn_out", 0.25)
            + table4([0.1, 1.0], "attn_out", 0.25))


def run(config, Ws, Ss, bs, d, c, stopping):
    """The runner's compression of a control configuration on a bare stack (the context's and mode's fields it
    reads: weights, second moments, biases, lambda unit c; the stopping rule)."""
    return compression_of(SimpleNamespace(weights=Ws, sigmas=Ss, biases=bs, c=c), config, d,
                          SimpleNamespace(stopping=stopping))


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"{c.table}: {c.label}")
def test_every_control_at_full_rank_reproduces_the_weights(control):
    Ws, Ss, bs = group(0)
    c = run(control, Ws, Ss, bs, 6, 10.0, COMPRESSION)
    for W, f, b in zip(Ws, c.layers, bs):
        assert np.allclose(f.W_hat, W, atol=1e-8) and np.allclose(f.bias, b, atol=1e-8)


@pytest.mark.parametrize("control", [c for c in CONTROLS if c.table != "unification-gap" and (
    "BCA," in c.label or c.label.startswith(("pure bundle", "tied bundle")))], ids=lambda c: c.label)
def test_every_control_solved_by_bca_stops_by_the_modes_rule(control):
    """A control's BCA obeys the sweep limit it is given (the mode's, as the surgery's rows do), not the solver's
    default of hundreds of sweeps: with a limit of 2 sweeps and an unreachable tolerance it stops at 2."""
    Ws, Ss, bs = group(1, D=12)
    c = run(control, Ws, Ss, bs, 3, 10.0, StoppingRule(gtol=0.0, stall_tol=0.0, max_sweeps=2))
    assert c.bca_sweeps is not None and c.bca_sweeps <= 2


@pytest.mark.parametrize("seed", range(3))
def test_the_v1_cell_of_the_cube_is_v1(seed):
    Ws, Ss, bs = group(seed)
    cell = corner_variant(Ws, Ss, bs, 2, "one-sided", True, "v1-output")
    for a, b in zip(cell.W_hats, compress(Ws, Ss, bs, "v1", 2).W_hats):
        assert np.allclose(a, b, atol=1e-9)


def test_one_sided_original_corner_projects_onto_the_readers_subspace():
    """Unwhitened, original anchors: the output section of W_l is the top-d right subspace of W_{l+1}."""
    Ws, Ss, bs = group(1)
    cell = corner_variant(Ws, Ss, None, 2, "one-sided", False, "original")
    A1 = top_left_singular(Ws[1].T, 2)
    assert np.allclose(cell.W_hats[0], projector(A1) @ Ws[0], atol=1e-9)


def test_unknown_sides_are_refused():
    Ws, Ss, bs = group(0)
    with pytest.raises(GbdError, match="unknown sides"):
        corner_variant(Ws, Ss, bs, 2, "three-sided", True)


@given(seed=st.integers(0, 1000), d=st.integers(1, 5))
def test_joint_objective_at_mu_zero_is_v1(seed, d):
    Ws, Ss, bs = group(seed)
    a = compress(Ws, Ss, bs, "act-coupled", d, options={"mu": 0.0})
    for x, y in zip(a.W_hats, compress(Ws, Ss, bs, "v1", d).W_hats):
        assert np.allclose(x, y, atol=1e-8)


@given(seed=st.integers(0, 1000), d=st.integers(1, 5), mu=st.floats(0.01, 10.0))
def test_joint_bca_is_monotone_and_its_energy_is_the_objective(seed, d, mu):
    Ws, Ss, bs = group(seed)
    rng = np.random.default_rng(seed)
    H = [(lambda Y: Y @ Y.T)(rng.standard_normal((6, 12))) for _ in range(2)]
    a = compress(Ws, Ss, bs, "act-coupled", d, options={"mu": mu, "residual": H})
    hist = np.array(a.energy_history)
    assert np.all(np.diff(hist) >= -1e-9 * hist[-1])
    sections = [top_left_singular(f.B, d) for f in a.layers]
    assert joint_objective(Ws, Ss, H, mu, sections) == pytest.approx(hist[-1], rel=1e-8)
    v1 = [top_left_singular(W @ whitening(S).S, d) for W, S in zip(Ws, Ss)]
    assert joint_objective(Ws, Ss, H, mu, v1) == pytest.approx(hist[0], rel=1e-8)


def test_joint_objective_refuses_bad_options():
    Ws, Ss, bs = group(0)
    with pytest.raises(GbdError, match="mu must be"):
        compress(Ws, Ss, bs, "act-coupled", 2, options={"mu": -1.0})
    with pytest.raises(GbdError, match="residual moments"):
        compress(Ws, Ss, bs, "act-coupled", 2, options={"residual": [np.eye(6)]})
