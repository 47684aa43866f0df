"""scripts/sensitivity.py's flat region (issue 23, item 10) on hand-made numbers: the values within one
point of each pair's best on every pair, the longest consecutive run of them, its middle (odd and even
counts), a pair that breaks flatness, and where a shipped value sits. Fast: no training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sens():
    spec = importlib.util.spec_from_file_location("sensitivity", ROOT / "scripts/sensitivity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def test_flat_values_are_within_one_point_of_the_best_on_every_pair(sens):
    means = {"3v5": dict(zip(GRID, (0.900, 0.945, 0.950, 0.955, 0.948, 0.930))),
             "4v9": dict(zip(GRID, (0.920, 0.970, 0.978, 0.980, 0.975, 0.960)))}
    # 3v5's best 0.955: 0.945 (exactly 1 point), 0.950, 0.955, 0.948 flat; 4v9's best 0.980: 0.970 .. 0.975 flat
    assert sens.flat_values(means, GRID) == [0.02, 0.05, 0.1, 0.2]
    assert sens.flat_region(means, GRID) == [0.02, 0.05, 0.1, 0.2]
    sf = sens.shortfall(means, GRID)
    assert sf[0.1] == pytest.approx(0.0)
    assert sf[0.01] == pytest.approx(0.060)  # 4v9: 0.980 - 0.920
    assert sf[0.5] == pytest.approx(0.025)   # 3v5: 0.955 - 0.930
    # even count: of 0.05 and 0.1 the one with the higher mean over pairs (0.1: 0.9675 > 0.964)
    assert sens.middle(sens.flat_region(means, GRID), means) == 0.1
    assert sens.middle([0.02, 0.05, 0.1, 0.2]) == 0.05  # no means: the smaller


def test_a_pair_that_breaks_flatness(sens):
    means = {"3v5": dict(zip(GRID, (0.95, 0.95, 0.95, 0.95, 0.95, 0.95))),
             "4v9": dict(zip(GRID, (0.95, 0.95, 0.95, 0.95, 0.95, 0.95)))}
    assert sens.flat_region(means, GRID) == list(GRID)
    assert sens.middle(list(GRID), means) == 0.05  # even count, tied means: the smaller central value
    # a third pair where 0.02 and 0.2 fall 2 points short of its best: the region splits
    means["5v8"] = dict(zip(GRID, (0.96, 0.94, 0.96, 0.96, 0.94, 0.96)))
    assert sens.flat_values(means, GRID) == [0.01, 0.05, 0.1, 0.5]
    assert sens.flat_region(means, GRID) == [0.05, 0.1]  # the longest consecutive run
    # a pair on which no value is within a point of its best on the others: nothing is flat
    means["7v9"] = dict(zip(GRID, (0.90, 0.99, 0.90, 0.90, 0.90, 0.90)))
    assert sens.flat_values(means, GRID) == []
    assert sens.flat_region(means, GRID) == []
    assert sens.middle([]) is None


def test_middle_of_an_odd_count_and_where_a_value_sits(sens):
    region = [0.02, 0.05, 0.1]
    assert sens.middle(region) == 0.05
    assert sens.middle([0.2]) == 0.2
    assert sens.where(0.05, region, GRID) == "inside, in the middle"
    assert sens.where(0.02, region, GRID) == "inside, at its lower edge"
    assert sens.where(0.5, region, GRID) == "outside, 2 grid steps above it"
    assert sens.where(0.01, region, GRID) == "outside, 1 grid step below it"
    assert sens.where(0.1, [], GRID) == "no flat region to sit in"


def test_equal_length_runs_go_to_the_more_accurate(sens):
    means = {"a": dict(zip(GRID, (0.95, 0.95, 0.90, 0.96, 0.96, 0.90)))}
    # flat: 0.01, 0.02 (0.95 >= 0.96 - 0.01) and 0.1, 0.2; the second run has the higher mean
    assert sens.flat_region(means, GRID) == [0.1, 0.2]


def test_a_region_of_one_value(sens):
    means = {"a": dict(zip(GRID, (0.90, 0.95, 0.97, 0.95, 0.90, 0.80))),
             "b": dict(zip(GRID, (0.90, 0.98, 0.97, 0.93, 0.90, 0.80)))}
    assert sens.flat_region(means, GRID) == [0.05]
    assert sens.middle([0.05], means) == 0.05
    assert sens.where(0.05, [0.05], GRID) == "inside: the region's only value"
    assert sens.flat_region(means, GRID, tol=0.03) == [0.02, 0.05]  # b: 0.95 at 0.02 is within 3 of 0.98
    assert sens.shortfall(means, GRID)[0.02] == pytest.approx(0.02)
