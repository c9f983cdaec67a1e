"""The decision rule of the confirmation round, on figures whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.core.stats import paired_ratio
from autotune.decide.sequential import Rule
from autotune.decide.verdict import ArmFigures, decide
from autotune.decide.verdict_goals import decide_pareto


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


# -- the edges of the decision ---------------------------------------------------------------

def test_a_ratio_whose_rounds_all_favour_the_challenger_keeps_its_lower_bound() -> None:
    # the interval is a t interval on log ratios: it must not be cut at a ratio of 1
    r = paired_ratio([1.01, 2.0, 1.02], [1, 1, 1])
    assert r.low is not None and r.high is not None
    assert r.low == pytest.approx(0.48, abs=0.01) and r.high == pytest.approx(3.37, abs=0.02)
    v = decide([arm("base", "baseline", 1, 1, 1), arm("x", "finalist", 1.01, 2.0, 1.02)],
               "maximize")
    assert v.winner == "base"


def test_a_secondary_goal_must_show_its_loss_on_an_uncut_interval() -> None:
    base = ArmFigures("base", "baseline", (100, 100, 100),
                      goal_values=((200, 200, 200), (100, 100, 100)))
    snappy = ArmFigures("t1", "finalist", (50, 51, 49),
                        goal_values=((100, 102, 98), (101, 160, 102)))
    v = decide_pareto([base, snappy], [("p95_ttft_ms", "minimize"),
                                       ("output_throughput", "maximize")])
    (c,) = v.comparisons
    assert c.better_on == ["p95_ttft_ms"] and c.unproven_on == ["output_throughput"]
    assert v.winner == "base"


def test_the_incumbent_keeps_its_seat_when_it_misses_a_round() -> None:
    figures = [arm("vLLM defaults", "baseline", 100, 101, 99, 100),
               arm("current profile", "incumbent", 150, None, 151, 149),
               arm("trial 1", "finalist", 110, 111, 109, 110)]
    v = decide(figures, "maximize", replace_gain=0.05)
    assert v.reference == "current profile" and v.winner == "current profile"
    assert v.broken is None and "failed 1 of 4 rounds" in v.summary
    # a finalist that serves like the defaults does not hand the seat to the defaults
    figures[2] = arm("trial 1", "finalist", 100, 100, 100, 100)
    v = decide(figures, "maximize", replace_gain=0.05)
    assert v.winner == "current profile"
    # one that beats it by replace_gain on the rounds both served replaces it
    figures[2] = arm("trial 1", "finalist", 200, 200, 201, 199)
    v = decide(figures, "maximize", replace_gain=0.05)
    assert v.winner == "trial 1" and v.reference == "current profile"
    (c,) = [c for c in v.comparisons if c.challenger == "trial 1"]
    assert c.ratio.n == 3


def test_an_incumbent_that_failed_most_rounds_is_declared_broken() -> None:
    figures = [arm("vLLM defaults", "baseline", 100, 101, 99, 100),
               arm("current profile", "incumbent", None, None, 151, None),
               arm("trial 1", "finalist", 100, 100, 100, 100)]
    v = decide(figures, "maximize", replace_gain=0.05)
    assert v.reference == "vLLM defaults" and v.winner == "vLLM defaults"
    assert v.broken == "the current profile failed 3 of 4 rounds (failed): declared broken"
    assert v.summary.startswith(v.broken)


def test_a_round_that_served_nothing_is_a_failed_round() -> None:
    v = decide([arm("base", "baseline", 5, 5, 5, 5), arm("x", "finalist", 0, 0, 10, 10)],
               "maximize")
    assert v.winner == "base" and v.comparisons == []


def test_a_discrete_objective_wins_only_on_its_bracket() -> None:
    base = ArmFigures("base", "baseline", (7, 7), highs=(8, 8))
    more = ArmFigures("x", "finalist", (8, 8), highs=(9, 9))
    assert decide([base, more], "maximize").winner == "base"
    clear = ArmFigures("x", "finalist", (12, 12, 12), highs=(13, 13, 13))
    base3 = ArmFigures("base", "baseline", (7, 7, 7), highs=(8, 8, 8))
    assert decide([base3, clear], "maximize").winner == "x"


def test_the_stated_gain_is_adjusted_for_the_choice_among_finalists() -> None:
    base = arm("b", "baseline", 100, 90, 110, 95, 105)
    figs = [base, arm("x", "finalist", 140, 122, 160, 130, 150),
            arm("y", "finalist", 101, 91, 112, 94, 104),
            arm("z", "finalist", 99, 88, 111, 96, 103)]
    v = decide(figs, "maximize")
    assert v.winner == "x"
    (c,) = [c for c in v.comparisons if c.challenger == "x"]
    assert c.decision_interval.low is not None and c.ratio.low is not None
    assert c.decision_interval.low < c.ratio.low  # wider than the lone 95% interval
    assert f"x{c.decision_interval.describe(3)}" in v.summary


def test_a_kept_verdict_states_what_it_could_have_seen() -> None:
    v = decide([arm("b", "baseline", 100, 90, 110, 95), arm("x", "finalist", 101, 92, 108, 96)],
               "maximize")
    assert v.winner == "b" and v.detectable is not None and v.detectable > 1
    assert f"a gain of +{v.detectable - 1:.0%} or more would have been found with 80% " \
           "probability at the noise measured in this run" in v.summary


def test_sequential_looks_keep_false_wins_under_the_rate() -> None:
    # A/A: one challenger looked at after every round from 3 to 15; the drift of a round is
    # shared, each start adds its own noise
    rng = np.random.default_rng(11)
    rule = Rule(max_rounds=15, min_rounds=3, detect=0.05)
    wins, n = 0, 3000
    for _ in range(n):
        drift = rng.normal(0, 0.15, size=15)
        a = 1000 * np.exp(drift + rng.normal(0, 0.08, size=15))
        b = 1000 * np.exp(drift + rng.normal(0, 0.08, size=15))
        for k in range(3, 16):
            v = decide([arm("a", "baseline", *a[:k]), arm("b", "finalist", *b[:k])],
                       "maximize", rule=rule)
            if v.settled:
                wins += v.winner == "b"
                break
    assert wins / n <= 0.025 + 3 * (0.025 * 0.975 / n) ** 0.5


def test_the_same_speed_with_a_third_of_the_memory_wins_on_memory_and_says_both() -> None:
    goals = [("output_throughput", "maximize"), ("peak_memory_bytes", "minimize")]
    tput = (100.0, 104.0, 97.0, 101.0, 99.0, 102.0)
    base = ArmFigures("vLLM defaults", "baseline", tput,
                      goal_values=(tput, (6e9, 6.01e9, 5.99e9, 6e9, 6.02e9, 6e9)))
    same = tuple(t * f for t, f in zip(tput, (1.01, 0.99, 1.02, 1.0, 1.01, 0.99), strict=True))
    lean = ArmFigures("trial 4", "finalist", same,
                      goal_values=(same, (2.2e9, 2.19e9, 2.2e9, 2.21e9, 2.2e9, 2.2e9)))
    v = decide_pareto([base, lean], goals, max_loss=0.10)
    assert v.winner == "trial 4"
    (c,) = v.comparisons
    assert c.better_on == ["peak_memory_bytes"] and c.unproven_on == []
    assert "on peak_memory_bytes x0.366" in v.summary
    assert "loses at most 10% on output_throughput (x1" in v.summary
    # the same, measured too noisily to show its throughput lost at most 10%: not yet a win,
    # and not settled: the rounds go on
    noisy = ArmFigures("trial 5", "finalist", (70.0, 140.0, 60.0),
                       goal_values=((70.0, 140.0, 60.0), (2.2e9, 2.2e9, 2.2e9)))
    base3 = ArmFigures("vLLM defaults", "baseline", tput[:3],
                       goal_values=(tput[:3], (6e9, 6e9, 6e9)))
    v = decide_pareto([base3, noisy], goals, max_loss=0.10,
                      rule=Rule(max_rounds=10, min_rounds=3, stop_below=0.0))
    assert v.winner == "vLLM defaults" and not v.settled
    assert v.comparisons[0].unproven_on == ["output_throughput"]
