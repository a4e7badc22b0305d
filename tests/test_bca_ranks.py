"""BCA with one rank per interface (d_0, ..., d_L) on rectangular stacks: monotone, stops at critical points,
reduces to the one-rank solver when the ranks agree, recovers the anchors at large lambda, and each block step
attains the block optimum computed independently (sum of the top d_i eigenvalues of the explicit M_i)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.theory_checks import untied_energy_by_traces, untied_fd_gradient_norms
from theory.anchors import anchors
from theory.bca import STOP_REASONS, bca_untied, untied_sweep
from theory.grassmann import random_section, sin_theta_fro
from theory.objective import lambda_unit
from theory.stack import Stack
from theory.stopping import StoppingRule
from theory.strategies import make_stack


@st.composite
def ranked_stacks(draw: st.DrawFn, max_n: int = 6, max_L: int = 4) -> tuple[Stack, tuple[int, ...]]:
    """A random rectangular stack and a rank 1 <= d_i <= n_i per interface (mixed ranks)."""
    L = draw(st.integers(1, max_L))
    dims = draw(st.lists(st.integers(1, max_n), min_size=L + 1, max_size=L + 1))
    ranks = tuple(draw(st.integers(1, n)) for n in dims)
    return make_stack("rectangular", dims, draw(st.integers(0, 2**32 - 1))), ranks


def _nondecreasing(history: list[float]) -> bool:
    h = np.asarray(history)
    return bool(np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))))


def _explicit_block_operator(stack: Stack, sections: list[np.ndarray], i: int, lam: float,
                             A: list[np.ndarray]) -> np.ndarray:
    """M_i = W_{i+1}^T P_{i+1} W_{i+1} + W_i P_{i-1} W_i^T + lambda A_i A_i^T, formed from projectors."""
    Ws, n = stack.weights, stack.dims[i]
    M = lam * A[i] @ A[i].T if lam else np.zeros((n, n))
    if i < stack.L:
        M = M + Ws[i].T @ sections[i + 1] @ sections[i + 1].T @ Ws[i]
    if i > 0:
        M = M + Ws[i - 1] @ sections[i - 1] @ sections[i - 1].T @ Ws[i - 1].T
    return M


@given(ranked_stacks(), st.sampled_from([0.0, 0.3, 3.0]))
def test_per_interface_bca_never_lowers_the_energy_and_keeps_each_interface_rank(stack_ranks, lam):
    stack, ranks = stack_ranks
    A = anchors(stack, ranks)
    assert [a.shape for a in A] == list(zip(stack.dims, ranks))
    run = bca_untied(stack, ranks, lam=lam, anchors=A if lam else None, rule=StoppingRule(max_sweeps=200))
    assert _nondecreasing(run.history)
    assert run.stop_reason in STOP_REASONS
    assert [U.shape for U in run.sections] == list(zip(stack.dims, ranks))
    assert run.energy == pytest.approx(untied_energy_by_traces(stack.weights, run.sections, lam, A), rel=1e-10)


@given(ranked_stacks(max_n=5, max_L=3))
def test_converged_per_interface_bca_is_critical_by_finite_differences(stack_ranks):
    stack, ranks = stack_ranks
    run = bca_untied(stack, ranks, rule=StoppingRule(stall_tol=1e-6, max_sweeps=3000))
    if run.converged:
        assert max(untied_fd_gradient_norms(stack.weights, run.sections)) <= 1e-4 * stack.total_energy()
    else:
        assert run.stop_reason in ("stalled", "max_sweeps") and not run.rule.critical(run.rel_grad)


@given(ranked_stacks(), st.data())
def test_one_rank_everywhere_is_the_old_solver(stack_ranks, data):
    stack, _ = stack_ranks
    d = data.draw(st.integers(1, min(stack.dims)))
    one, spelled = (bca_untied(stack, r, rule=StoppingRule(max_sweeps=50)) for r in (d, (d,) * (stack.L + 1)))
    assert one.history == spelled.history
    assert all(np.array_equal(U, V) for U, V in zip(one.sections, spelled.sections))


@given(ranked_stacks(), st.sampled_from(["original", "v1-output"]))
def test_large_lambda_recovers_the_per_interface_anchors(stack_ranks, convention):
    stack, ranks = stack_ranks
    A = anchors(stack, ranks, convention)
    lam = 1e8 * max(lambda_unit(stack), 1e-300)
    run = bca_untied(stack, ranks, lam=lam, anchors=A, init=A, rule=StoppingRule(max_sweeps=50))
    for U, Ai in zip(run.sections, A):
        assert sin_theta_fro(U, Ai) <= 1e-5


@given(ranked_stacks(), st.sampled_from([0.0, 1.0]), st.data())
def test_the_block_step_attains_the_block_optimum_and_no_random_section_beats_it(stack_ranks, lam, data):
    stack, ranks = stack_ranks
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    A = anchors(stack, ranks)
    start = [random_section(n, d, rng) for n, d in zip(stack.dims, ranks)]
    i = data.draw(st.integers(0, stack.L))
    swept = untied_sweep(stack, start, ranks, lam, A if lam else None)
    before = swept[:i] + start[i:]                       # the point at which block i was updated
    M = _explicit_block_operator(stack, before, i, lam, A)
    optimum = float(np.sum(np.linalg.eigvalsh(M)[::-1][:ranks[i]]))
    U = swept[i]
    assert U.shape == (stack.dims[i], ranks[i])
    assert float(np.trace(U.T @ M @ U)) == pytest.approx(optimum, rel=1e-9, abs=1e-9 * max(1.0, optimum))
    for _ in range(20):
        V = random_section(stack.dims[i], ranks[i], rng)
        assert float(np.trace(V.T @ M @ V)) <= optimum * (1 + 1e-9) + 1e-9


def test_ranks_are_validated_per_interface():
    stack = make_stack("rectangular", [4, 2, 5], seed=0)
    assert stack.ranks(2) == (2, 2, 2)
    assert stack.ranks((4, 1, 5)) == (4, 1, 5)
    with pytest.raises(ValueError, match="d=3 must satisfy"):
        stack.ranks((1, 3, 1))                          # interface 1 is 2 wide
    with pytest.raises(ValueError, match="L\\+1 = 3 interface ranks"):
        stack.ranks((1, 1))
