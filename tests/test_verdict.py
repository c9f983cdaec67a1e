"""The decision rule of the confirmation round, on figures whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.verdict import ArmFigures, decide


def arm(name: str, role: str, *values: float | None) -> ArmFigures:
    return ArmFigures(name, role, tuple(values))  # type: ignore[arg-type]


def test_a_clear_winner_beats_the_defaults() -> None:
    v = decide([arm("base", "baseline", 100, 90, 110, 95),
                arm("t3", "finalist", 120, 109, 131, 116)], "maximize")
    assert v.winner == "t3" and v.reference == "base"
    (c,) = v.comparisons
    assert c.beats and c.ratio.low is not None and c.ratio.low > 1
    assert "beats base beyond noise" in v.summary


def test_within_noise_keeps_the_reference() -> None:
    v = decide([arm("base", "baseline", 100, 90, 110, 95),
                arm("t3", "finalist", 104, 88, 112, 99)], "maximize")
    assert v.winner == "base"
    assert not v.comparisons[0].beats
    assert "nothing beat vLLM's defaults beyond noise" in v.summary


def test_the_incumbent_is_the_reference_and_the_defaults_can_unseat_it() -> None:
    figures = [arm("base", "baseline", 100, 101, 99, 100),
               arm("profile", "incumbent", 80, 81, 79, 80),
               arm("t1", "finalist", 81, 80, 80, 79)]
    v = decide(figures, "maximize")
    assert v.reference == "profile"
    assert v.winner == "base"
    assert {c.challenger for c in v.comparisons} == {"base", "t1"}


def test_minimize_wants_a_ratio_below_one() -> None:
    v = decide([arm("base", "baseline", 500, 520, 480),
                arm("t1", "finalist", 300, 310, 290)], "minimize")
    assert v.winner == "t1"


def test_an_arm_that_failed_a_round_cannot_win() -> None:
    v = decide([arm("base", "baseline", 100, 100, 100),
                arm("t1", "finalist", 200, None, 200)], "maximize")
    assert v.winner == "base"
    assert v.comparisons == []


def test_bonferroni_widens_each_interval_with_more_challengers() -> None:
    one = decide([arm("b", "baseline", 100, 90, 110), arm("x", "finalist", 110, 100, 118)],
                 "maximize")
    three = decide([arm("b", "baseline", 100, 90, 110), arm("x", "finalist", 110, 100, 118),
                    arm("y", "finalist", 90, 80, 100), arm("z", "finalist", 95, 85, 104)],
                   "maximize")
    # the reported 95% interval, and 1 - 0.05/3 for each of three challengers
    assert abs(one.level - 0.95) < 1e-12 and abs(three.level - (1 - 0.05 / 3)) < 1e-12
    w1 = one.comparisons[0].decision_interval
    w3 = next(c for c in three.comparisons if c.challenger == "x").decision_interval
    assert w1.low is not None and w3.low is not None and w3.low < w1.low


def test_min_gain_demands_more_than_beyond_noise() -> None:
    figs = [arm("b", "baseline", 100, 100, 100, 100), arm("x", "finalist", 103, 104, 103, 104)]
    assert decide(figs, "maximize").winner == "x"
    assert decide(figs, "maximize", min_gain=0.05).winner == "b"


def test_no_reference_picks_the_best_arm_that_served_and_says_so() -> None:
    v = decide([arm("b", "baseline", None, None), arm("x", "finalist", 10, 11),
                arm("y", "finalist", 12, 13)], "maximize")
    assert v.winner == "y" and "no gain can be stated" in v.summary


@pytest.mark.parametrize("challengers", [1, 2])
def test_false_wins_on_identical_settings_stay_at_five_percent(challengers: int) -> None:
    # A/A (and A/A/A): every arm draws from the same distribution, with drift shared by the
    # round; the rule's nominal family-wise rate is 2.5% (one-sided, Bonferroni), the
    # target 5%
    rng = np.random.default_rng(7)
    wins = 0
    n = 4000
    for _ in range(n):
        drift = rng.normal(0, 0.15, size=4)
        arms = [arm("a", "baseline", *(1000 * np.exp(drift + rng.normal(0, 0.05, size=4))))]
        arms += [arm(f"c{i}", "finalist", *(1000 * np.exp(drift + rng.normal(0, 0.05,
                                                                             size=4))))
                 for i in range(challengers)]
        wins += decide(arms, "maximize").winner != "a"
    assert wins / n <= 0.025 + 3 * (0.025 * 0.975 / n) ** 0.5
