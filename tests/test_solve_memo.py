"""experiments.compress.solve_memo: an identical problem is solved once, any change of input is solved anew, and
the answer is theory.corners.solve's."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from experiments.compress import compress, solve_memo
from experiments.runs.bench import random_problem
from theory.corners import solve
from theory.stopping import StoppingRule

FORTY = StoppingRule(stall_tol=1e-9, max_sweeps=40)


def test_identical_inputs_share_one_solve_and_changes_do_not():
    stack, _ = random_problem(L=3, n=20, d=4, seed=7)
    rule = StoppingRule(stall_tol=1e-10, max_sweeps=50)
    args = (stack, 4, 0.5, False, "original", rule)
    first = solve_memo(*args)
    assert solve_memo(*args) is first
    reference = solve(stack, 4, 0.5, False, "original", rule=rule)
    assert all(np.array_equal(a, b) for a, b in zip(first.sections, reference.sections))
    bumped = stack.weights[0].copy()
    bumped[0, 0] = np.nextafter(bumped[0, 0], np.inf)  # one ulp of one weight
    changed = [(type(stack).of([bumped, *stack.weights[1:]]), *args[1:]), (stack, 3, *args[2:]),
               (stack, 4, 0.6, *args[3:]), (stack, 4, 0.5, True, *args[4:]), (stack, 4, 0.5, False, "v1-output",
                                                                             *args[5:]),
               *((*args[:5], replace(rule, **{field: value})) for field, value in
                 (("stall_tol", 1e-9), ("max_sweeps", 51), ("gtol", 1e-7)))]
    assert all(solve_memo(*c) is not first for c in changed)


def test_gbd_and_its_sandwich_variant_share_the_solve():
    stack, _ = random_problem(L=3, n=16, d=4, seed=8)
    rng = np.random.default_rng(9)
    sigmas = [(lambda X: X @ X.T)(rng.standard_normal((16, 40))) for _ in range(3)]
    projection = compress(stack.weights, sigmas, None, "gbd", 4, installation="projection", stopping=FORTY)
    sandwich = compress(stack.weights, sigmas, None, "gbd", 4, installation="sandwich", stopping=FORTY)
    assert sandwich.sections is projection.sections
    assert not np.allclose(sandwich.W_hats[0], projection.W_hats[0])  # only the installation differs
