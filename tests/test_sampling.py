"""experiments.sampling: one seeded draw of windows and items per run, random unless --sample first."""
from __future__ import annotations

import pytest

from experiments.errors import GbdError
from experiments.sampling import Sample


def test_a_random_draw_is_deterministic_given_the_seed_differs_across_seeds_and_is_not_the_first_k():
    draw = Sample("random", 3).draw(148, 30, "windows")
    assert draw == Sample("random", 3).draw(148, 30, "windows")
    assert draw != Sample("random", 4).draw(148, 30, "windows")
    assert draw != tuple(range(30)) and max(draw) >= 30
    assert len(set(draw)) == 30 and list(draw) == sorted(draw) and 0 <= min(draw) and max(draw) < 148


def test_windows_and_items_are_independent_streams_and_a_smaller_sample_is_a_subset_of_a_larger_one():
    sample = Sample("random", 3)
    assert sample.draw(148, 30, "windows") != sample.draw(148, 30, "items")
    assert set(sample.draw(148, 20, "windows")) <= set(sample.draw(148, 30, "windows"))


def test_first_k_is_an_explicit_option_and_all_is_every_unit():
    assert Sample("first", 3).draw(148, 6, "windows") == tuple(range(6))
    assert Sample("random", 3).draw(10, None, "items") == Sample("random", 3).draw(10, 12, "items") == tuple(range(10))
    assert "first 6 of 148" in Sample("first", 3).describe(6, 148, "windows")
    assert "at random" in Sample("random", 3).describe(30, 148, "windows")


def test_bad_designs_and_sizes_are_one_clear_error():
    with pytest.raises(GbdError, match="--sample"):
        Sample("stratified", 0)
    with pytest.raises(GbdError, match="at least one"):
        Sample("random", 0).draw(148, 0, "windows")
