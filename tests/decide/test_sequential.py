"""The sequential rule's levels: exact for the looks' joint distribution, spent as declared."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import t as student_t

from autotune.decide.power import detectable, rounds_to_detect
from autotune.decide.sequential import Rule, spent, t_levels, tail_levels


@pytest.mark.parametrize(("first", "last", "total"), [(3, 3, 0.025), (3, 12, 0.025),
                                                      (3, 20, 0.2), (2, 6, 0.05)])
def test_the_looks_together_spend_exactly_the_declared_rate(first: int, last: int,
                                                           total: float) -> None:
    levels = tail_levels(first, last, total)
    assert len(levels) == last - first + 1
    # normal scores of i.i.d. rounds, looked at after every round: how often any look rejects
    rng = np.random.default_rng(3)
    sums = np.cumsum(rng.standard_normal((200_000, last)), axis=1)
    hit = np.zeros(len(sums), dtype=bool)
    for n, p in zip(range(first, last + 1), levels, strict=True):
        hit |= sums[:, n - 1] / math.sqrt(n) > NormalDist().inv_cdf(1 - p)
    assert hit.mean() == pytest.approx(total, rel=0.05)
    # each look alone is stricter than the whole rate (a Bonferroni split would be stricter
    # still: the exact boundary gives back what the looks' overlap allows)
    if last > first:
        assert all(p < total for p in levels)
        assert sum(levels) > total


def test_a_single_look_is_the_familiar_interval() -> None:
    rule = Rule(max_rounds=5, min_rounds=5)
    assert rule.win_tail(5) == pytest.approx(0.025)
    assert rule.win_tail(5, comparisons=2) == pytest.approx(0.0125)
    assert rule.win_tail(3) == rule.win_tail(5)  # before the first look: the first's level


def test_spending_is_monotone_and_reaches_the_total() -> None:
    xs = [spent(t / 10, 0.025) for t in range(11)]
    assert xs[0] == 0 and xs[-1] == pytest.approx(0.025)
    assert all(a < b for a, b in itertools.pairwise(xs))


def test_what_a_look_could_have_seen_shrinks_with_rounds_and_noise() -> None:
    a, b = detectable(0.13, 5, 0.025), detectable(0.13, 20, 0.025)
    assert a is not None and b is not None and a > b > 1
    assert detectable(0.05, 5, 0.025) < a  # type: ignore[operator]
    assert detectable(0.13, 1, 0.025) is None
    # the rounds to find +10% at 9% start-to-start noise (paired: x sqrt 2), 80% power
    n = rounds_to_detect(0.13, 0.10, 0.025)
    assert 14 <= n <= 18
    assert rounds_to_detect(0.13, 0.20, 0.025) < n


def test_the_comparisons_share_the_rate_over_all_looks() -> None:
    # each of k comparisons is spent alpha / k over the looks: together at most alpha
    rule = Rule(max_rounds=6, min_rounds=3)
    for k in (2, 3, 6):
        levels = [rule.win_tail(n, k) for n in range(3, 7)]
        assert levels == list(t_levels(3, 6, 0.025 / k))
        assert rule.win_tail(3, k) == pytest.approx(levels[0])
        hit = _t_crossings(3, 6, levels, seed=k)
        assert hit <= 0.025 / k * 1.1


def _t_crossings(first: int, last: int, levels: list[float], seed: int,
                 paths: int = 200_000) -> float:
    """How often the t statistic of normal rounds (no true gain) crosses a look's boundary,
    on paths drawn apart from those the boundaries were found on."""
    rng = np.random.default_rng(1000 + seed)
    x = rng.standard_normal((paths, last))
    hit = np.zeros(paths, dtype=bool)
    for n, p in zip(range(first, last + 1), levels, strict=True):
        xs = x[:, :n]
        t = xs.mean(axis=1) / (xs.std(axis=1, ddof=1) / math.sqrt(n))
        hit |= t > student_t.isf(p, n - 1)
    return float(hit.mean())


@pytest.mark.parametrize(("first", "last", "total"), [(3, 6, 0.025), (3, 12, 0.025 / 3),
                                                      (2, 5, 0.025), (3, 36, 0.025 / 2)])
def test_the_t_statistics_spend_the_declared_rate_where_normal_boundaries_overspend(
        first: int, last: int, total: float) -> None:
    # the normal boundaries' tails applied to t statistics of 2-5 degrees of freedom spend
    # more than declared; the t statistics' own boundaries spend it
    normal = _t_crossings(first, last, list(tail_levels(first, last, total)), seed=last)
    exact = _t_crossings(first, last, list(t_levels(first, last, total)), seed=last)
    assert exact == pytest.approx(total, rel=0.12)
    assert normal > total * 1.08
