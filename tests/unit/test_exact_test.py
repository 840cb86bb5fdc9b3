"""The exact Mann–Whitney test of compare (report/exact_test.py): p-values on known
inputs, and the same p as counting every arrangement by brute force."""

from __future__ import annotations

import itertools
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.report.exact_test import mann_whitney_p


@pytest.mark.parametrize("a,b,p", [
    ([1, 2, 3], [4, 5, 6], 0.1),               # fully apart: 2 of C(6,3) = 20
    ([4, 5, 6], [1, 2, 3], 0.1),               # two-sided: the order does not matter
    ([1, 2], [3, 4], 1 / 3),                   # 2 vs 2 apart: chance one time in three
    ([1, 2, 3, 4], [5, 6, 7, 8], 2 / 70),
    ([1, 2, 3], [4, 5, 6, 7], 2 / 35),
    ([1, 2, 4], [3, 5, 6], 0.2),               # rank sum 7: sums 6, 7, 14, 15 -> 4/20
    ([1, 3, 5], [2, 4, 6], 0.7),               # rank sum 9: 14 of 20 are that far or farther
    ([5, 5, 5], [5, 5, 5], 1.0),               # all tied
    ([1], [2], 1.0),
    ([], [1, 2], 1.0),
    ([1, 1, 2], [2, 3, 3], 0.2),               # ties: mid-ranks 1.5 1.5 3.5 | 3.5 5.5 5.5
])
def test_known_p_values(a, b, p):
    assert mann_whitney_p(a, b) == pytest.approx(p)


def _brute_force(a: list[float], b: list[float]) -> float:
    pooled = sorted([*a, *b])
    rank = {v: (pooled.index(v) + 1 + len(pooled) - pooled[::-1].index(v)) / 2 for v in pooled}
    ranks = [rank[v] for v in [*a, *b]]
    n, total = len(a), sum(ranks)
    expected = n * total / len(ranks)
    observed = abs(sum(ranks[:n]) - expected)
    hits = sum(1 for pick in itertools.combinations(ranks, n)
               if abs(sum(pick) - expected) >= observed - 1e-9)
    return hits / comb(len(ranks), n)


values = st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_matches_brute_force(a, b):
    assert mann_whitney_p(a, b) == pytest.approx(_brute_force(a, b))


def test_thirty_runs_a_side_is_fast():
    a = [float(i) for i in range(30)]
    b = [float(i) + 10.5 for i in range(30)]
    p = mann_whitney_p(a, b)
    assert 0 < p < 0.001
