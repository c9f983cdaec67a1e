"""When a level has been measured enough, and when a candidate is hopeless."""

from __future__ import annotations

import pytest

from autotune.core.stats import Estimate, mean_interval
from autotune.measure.stopping import Measure, PruneRule, hopeless, next_step, time_to_finish

M = Measure(min_rounds=3, max_rounds=20, min_s=6.0, max_s=30.0, target_ci=0.03)


def test_never_stops_before_the_minimums() -> None:
    steady = [100.0, 100.0]
    assert next_step(steady, [2.0, 2.0], M) == "continue"  # 2 rounds < min_rounds
    assert next_step([100.0] * 3, [1.0] * 3, M) == "continue"  # 3 s < min_s


def test_stops_once_the_interval_is_narrow_enough() -> None:
    assert next_step([100.0, 101.0, 99.0], [2.0] * 3, M) == "done"
    assert next_step([100.0, 130.0, 70.0], [2.0] * 3, M) == "continue"


def test_min_rounds_outrank_the_time_cap() -> None:
    assert next_step([100.0, 130.0], [20.0, 20.0], M) == "continue"  # 40 s > max_s, 2 < 3


def test_stops_at_the_caps_whatever_the_interval() -> None:
    noisy = [100.0, 130.0, 70.0] * 4
    assert next_step(noisy, [2.4] * 12, M) == "done"  # the 13th round would end past 30 s
    assert next_step(noisy[:11], [1.0] * 11, M) == "continue"
    capped = Measure(min_rounds=1, max_rounds=4, min_s=0, max_s=100, target_ci=0.001)
    assert next_step(noisy[:4], [1.0] * 4, capped) == "done"


def test_min_s_outranks_the_time_cap() -> None:
    # rounds of 70 s: the next round would end past max_s, but min_s has not been measured
    slow = Measure(min_rounds=1, max_rounds=10, min_s=100, max_s=120, target_ci=0.5)
    assert next_step([100.0], [70.0], slow) == "continue"  # 70 s < min_s, though 140 > 120
    assert next_step([100.0, 100.0], [70.0] * 2, slow) == "done"  # 140 s: min_s and the cap
    two = Measure(min_rounds=2, max_rounds=10, min_s=100, max_s=120, target_ci=0.5)
    assert next_step([100.0, 100.0], [45.0] * 2, two) == "continue"  # 90 s < min_s
    assert next_step([100.0] * 3, [45.0] * 3, two) == "done"
    # only max_rounds stops a level before min_s
    few = Measure(min_rounds=1, max_rounds=1, min_s=100, max_s=120)
    assert next_step([100.0], [70.0], few) == "done"


def test_time_to_finish_counts_the_rounds_min_s_forces() -> None:
    # the rule measures a 2nd round of 70 s whatever the cap says (min_s is 100 s) and
    # stops there (a 3rd would end past max_s): 70 s still to spend, not 120 - 70
    slow = Measure(min_rounds=1, max_rounds=10, min_s=100, max_s=120, target_ci=1e-6)
    assert time_to_finish([100.0], [70.0], slow) == pytest.approx(70.0)
    # min_rounds too: three rounds of 50 s are measured even though max_s is 120
    rounds = Measure(min_rounds=3, max_rounds=10, min_s=0, max_s=120, target_ci=1e-6)
    assert time_to_finish([100.0, 130.0], [50.0] * 2, rounds) == pytest.approx(50.0)


@pytest.mark.parametrize("data", [{"min_rounds": 5, "max_rounds": 2},
                                  {"min_s": 50, "max_s": 10}])
def test_contradictory_rules_are_refused(data: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Measure.model_validate(data)


def test_time_to_finish_is_what_the_rule_would_still_spend() -> None:
    noisy = [100.0, 130.0, 70.0]
    left = time_to_finish(noisy, [2.0] * 3, M)
    assert 0 < left <= 30.0 - 6.0
    assert time_to_finish([100.0, 100.5, 99.5], [2.0] * 3, M) == 0.0


def best(*values: float) -> Estimate:
    return mean_interval(list(values))


def test_hopeless_only_beyond_the_margin() -> None:
    rule = PruneRule("maximize", margin=0.10, min_rounds=3)
    top = best(1000, 1010, 990, 1005)
    assert hopeless([500, 510, 490], top, rule)
    assert not hopeless([880, 900, 890], top, rule)  # below, but within the 10% margin
    assert not hopeless([500, 510], top, rule)  # too few rounds to say
    assert not hopeless([500, 510, 490], Estimate.single(1000), rule)  # best has no interval
    low = PruneRule("minimize", margin=0.10, min_rounds=3)
    assert hopeless([2000, 2050, 1990], best(100, 110, 95), low)
    assert not hopeless([104, 108, 100], best(100, 110, 95), low)
