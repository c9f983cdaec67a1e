"""The statistics every verdict rests on, on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.core.stats import Estimate, mean_interval, paired_ratio, rounds_needed, t_quantile

# Two-sided 95% quantiles from a printed Student t table, and 97.5% one-sided at 2 dof
# (the Bonferroni level of two comparisons).
T_TABLE = [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776),
           (0.975, 9, 2.262), (0.975, 29, 2.045), (0.975, 120, 1.980), (0.9875, 2, 6.205),
           (0.95, 5, 2.015), (0.995, 10, 3.169)]


@pytest.mark.parametrize(("p", "dof", "expected"), T_TABLE)
def test_t_quantile_matches_the_table(p: float, dof: int, expected: float) -> None:
    assert t_quantile(p, dof) == pytest.approx(expected, abs=1e-3)
    assert t_quantile(1 - p, dof) == pytest.approx(-expected, abs=1e-3)


def test_mean_interval_by_hand() -> None:
    # mean 2.5, sd 1.2910, se 0.6455, t(0.975, 3) = 3.1824 -> half-width 2.0543
    e = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert e.value == pytest.approx(2.5)
    assert e.half_width == pytest.approx(2.0543, abs=1e-4)
    assert (e.low, e.high) == (pytest.approx(0.4457, abs=1e-4), pytest.approx(4.5543, abs=1e-4))
    assert e.n == 4 and e.basis == "rounds"
    assert e.relative_half_width == pytest.approx(2.0543 / 2.5, abs=1e-4)


def test_one_observation_has_no_interval_and_nan_is_ignored() -> None:
    e = mean_interval([5.0, float("nan"), None])
    assert e.value == 5.0 and e.low is None and e.high is None and e.n == 1
    assert math.isnan(mean_interval([]).value)
    assert Estimate.single(3.0).describe() == "3"


def test_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    trials = 4000
    for _ in range(trials):
        e = mean_interval(list(rng.normal(10.0, 2.0, size=4)))
        assert e.low is not None and e.high is not None
        hits += e.low <= 10.0 <= e.high
    assert 0.94 <= hits / trials <= 0.96


def test_paired_ratio_cancels_drift_shared_by_both() -> None:
    # the machine slows down round after round; the challenger is always 10% faster
    drift = [100.0, 80.0, 120.0, 60.0]
    ref = drift
    ch = [1.10 * d for d in drift]
    r = paired_ratio(ch, ref)
    assert r.value == pytest.approx(1.10)
    assert r.low == pytest.approx(1.10) and r.high == pytest.approx(1.10)
    # unpaired, the same numbers say nothing: the intervals overlap widely
    a, b = mean_interval(ch), mean_interval(ref)
    assert a.low is not None and b.high is not None and a.low < b.high


def test_paired_ratio_geometric_mean_and_dropped_pairs() -> None:
    r = paired_ratio([2.0, 8.0, None], [1.0, 2.0, 3.0])
    assert r.n == 2
    assert r.value == pytest.approx(math.sqrt(2.0 * 4.0))
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_rounds_needed_grows_with_noise_and_precision() -> None:
    quiet = [100.0, 101.0, 99.0, 100.5]
    loud = [100.0, 120.0, 80.0, 110.0]
    assert rounds_needed(quiet, 0.03) == 4  # already tight: no more than it has
    assert rounds_needed(loud, 0.03) > rounds_needed(loud, 0.10) > 4
    assert rounds_needed([1.0], 0.03) is None


def test_a_bound_near_one_shows_which_side_of_one_it_is_on() -> None:
    from autotune.core.stats import Estimate

    e = Estimate(value=1.31, low=1.0002, high=1.72, n=3, basis="starts")
    assert e.describe(3) == "1.31 [1.0002, 1.72] (3 starts)"
    assert Estimate(value=1.0, low=0.99996, high=1.0, n=3, basis="starts").describe(3) == \
        "1 [0.99996, 1] (3 starts)"
