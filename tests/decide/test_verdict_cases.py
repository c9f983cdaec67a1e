"""Where two goals, failures and several winners meet: the verdict's edges, on known figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.decide.power import POWER, detectable_gain, power_at, rounds_to_detect
from autotune.decide.sequential import Rule
from autotune.decide.verdict import ArmFigures, decide
from autotune.decide.verdict_goals import decide_pareto

GOALS = [("output_throughput", "maximize"), ("peak_memory_bytes", "minimize")]
WOBBLE = (1.0, 1.02, 0.98, 1.01, 0.99, 1.0)


def two(name: str, role: str, tput: float, mem: float, rounds: int = 6, changes: int = 0,
        tput_wobble: tuple[float, ...] = WOBBLE) -> ArmFigures:
    t = tuple(tput * w for w in tput_wobble[:rounds])
    m = tuple(mem * w for w in WOBBLE[::-1][:rounds])
    return ArmFigures(name, role, t, goal_values=(t, m), changes=changes)  # type: ignore[arg-type]


# -- the best winner ----------------------------------------------------------------------

def test_a_finalist_better_on_both_goals_wins_over_defaults_better_on_memory_alone() -> None:
    # the current profile is the reference; vLLM's defaults beat it on memory alone, the
    # finalist twice over on throughput and on memory too: list order (defaults first) used
    # to decide
    arms = [two("vLLM defaults", "baseline", 100, 4e9),
            two("current profile", "incumbent", 100, 6e9, changes=2),
            two("trial 7", "finalist", 200, 3e9, changes=3)]
    v = decide_pareto(arms, GOALS, max_loss=0.10, replace_gain=0.05)
    assert v.reference == "current profile"
    assert {c.challenger for c in v.comparisons if c.beats} == {"vLLM defaults", "trial 7"}
    assert v.winner == "trial 7"
    assert "vLLM defaults beaten beyond noise by another of them" in v.choice
    assert v.choice in v.summary


def test_winners_that_cannot_be_told_apart_go_to_the_fewest_changes() -> None:
    # two finalists with the same figures, both beating vLLM's defaults: the one that changes
    # one setting wins over the one that changes four, whichever comes first
    for order in (1, -1):
        arms = [two("vLLM defaults", "baseline", 100, 6e9),
                *[two("trial 3", "finalist", 150, 6e9, changes=4),
                  two("trial 5", "finalist", 150, 6e9, changes=1)][::order]]
        v = decide_pareto(arms, GOALS, max_loss=0.10)
        assert v.winner == "trial 5", v.summary
        assert "cannot be told apart on output_throughput" in v.choice
    # against the current profile, vLLM's defaults that serve like a finalist win (no change)
    arms = [two("current profile", "incumbent", 100, 6e9, changes=2),
            two("trial 3", "finalist", 150, 6e9, changes=2),
            two("vLLM defaults", "baseline", 150, 6e9)]
    assert decide_pareto(arms, GOALS, max_loss=0.10).winner == "vLLM defaults"


def test_one_goal_picks_the_best_winner_beyond_noise_not_the_first() -> None:
    arms = [ArmFigures("vLLM defaults", "baseline", (100, 101, 99, 100)),
            ArmFigures("trial 1", "finalist", (130, 131, 129, 130), changes=1),
            ArmFigures("trial 2", "finalist", (200, 202, 198, 200), changes=3)]
    v = decide(arms, "maximize")
    assert v.winner == "trial 2" and "trial 2 is the best of the rest" in v.choice


# -- failures alike -------------------------------------------------------------------------

def test_a_reference_that_broke_its_slo_in_some_rounds_is_replaced_by_one_that_never_did() -> None:
    # the current profile broke its SLO in 2 of 4 rounds (still seated: it served half); the
    # finalist, of about its speed, met it in all 4: the profile's failed rounds count
    # against it as a finalist's would
    arms = [ArmFigures("vLLM defaults", "baseline", (50, 51, 49, 50)),
            ArmFigures("current profile", "incumbent", (100, None, 101, None),
                       failure="broke a constraint", changes=2),
            ArmFigures("trial 4", "finalist", (99, 100, 102, 98), changes=2)]
    v = decide(arms, "maximize", replace_gain=0.05)
    assert v.reference == "current profile" and v.winner == "trial 4"
    (c,) = [c for c in v.comparisons if c.challenger == "trial 4"]
    assert c.beats and c.on_failures and c.reference_failed == 2
    assert "current profile failed or broke a constraint in 2 of 4 rounds that trial 4 " \
           "served" in v.summary
    # vLLM's defaults, half as fast, are worse beyond noise: they do not win on failures
    (d,) = [c for c in v.comparisons if c.challenger == "vLLM defaults"]
    assert not d.beats


def test_failures_count_round_by_round_for_either_side() -> None:
    base = ArmFigures("vLLM defaults", "baseline", (100, None, 100, 100, 100))
    # it failed only where the reference failed too: that round tells nothing between them
    both = ArmFigures("trial 1", "finalist", (300, None, 301, 299, 300))
    v = decide([base, both], "maximize")
    (c,) = v.comparisons
    assert v.winner == "trial 1" and c.both_failed == 1 and not c.on_failures
    # it failed a round the reference served: it cannot win, however fast
    alone = ArmFigures("trial 2", "finalist", (300, 300, None, 300, 300))
    assert decide([base, alone], "maximize").winner == "vLLM defaults"
    # it served a round the reference failed, and is slower beyond noise: no win
    slow = ArmFigures("trial 3", "finalist", (50, 51, 49, 50, 50))
    v = decide([base, slow], "maximize")
    assert v.winner == "vLLM defaults" and not v.comparisons[0].beats


def test_a_winner_that_fails_a_later_round_the_reference_served_cannot_be_kept() -> None:
    # trial 1 wins at the first look and is measured on while trial 2 is still open; it then
    # fails round 5 where vLLM's defaults served: its win does not stand
    rule = Rule(max_rounds=6, min_rounds=3, detect=0.10)
    base = ArmFigures("vLLM defaults", "baseline", (100, 101, 99, 100, 100, 100))
    fast = ArmFigures("trial 1", "finalist", (300, 303, 297, 300, None, 300),
                      failure="oom_under_load")
    open_ = ArmFigures("trial 2", "finalist", (100, 106, 95, 103, 98, 101))
    first = decide([ArmFigures(a.name, a.role, a.values[:3]) for a in (base, fast, open_)],
                   "maximize", rule=rule)
    assert {c.challenger: c.beats for c in first.comparisons}["trial 1"]
    frozen = {c.challenger: c for c in first.comparisons if c.settled or c.stopped}
    v = decide([base, fast, open_], "maximize", rule=rule, frozen=frozen)
    assert v.winner == "vLLM defaults" and v.out == ["trial 1"], v.summary
    # served in every round, the same win stands
    kept = ArmFigures("trial 1", "finalist", (300, 303, 297, 300, 299, 300))
    assert decide([base, kept, open_], "maximize", rule=rule, frozen=frozen).winner == "trial 1"


def test_capacity_brackets_alike_are_not_worse_and_the_references_failure_counts() -> None:
    # the same bracket in every round both served; vLLM's defaults broke the SLO in round 2
    base = ArmFigures("vLLM defaults", "baseline", (8, None, 8, 8), highs=(9, None, 9, 9))
    same = ArmFigures("trial 1", "finalist", (8, 8, 8, 8), highs=(9, 9, 9, 9))
    v = decide([base, same], "maximize")
    (c,) = v.comparisons
    assert c.reference_failed == 1 and c.on_failures and c.beats and v.winner == "trial 1"


def test_a_reference_failure_wins_nothing_until_two_rounds_were_served_by_both() -> None:
    # one round both served: "not worse beyond noise" cannot be shown, half as fast or not
    base = ArmFigures("vLLM defaults", "baseline", (100, None))
    half = ArmFigures("trial 1", "finalist", (50, 50))
    v = decide([base, half], "maximize")
    assert v.winner == "vLLM defaults" and not v.comparisons[0].beats


def test_an_open_challenger_a_winner_outranks_on_the_primary_goal_is_stopped() -> None:
    # the README's run on an AVX2 machine: float32 2-3x vLLM's defaults at the first look,
    # a smaller KV cache alike in speed with a third of the memory, still open on memory.
    # Were it to win later, the choice among winners would still take float32 (better beyond
    # noise on the primary goal): it cannot change the outcome, and is measured no further
    rule = Rule(max_rounds=6, min_rounds=3, detect=0.10)

    def arm(name: str, role: str, tput: tuple[float, ...], mem: float) -> ArmFigures:
        m = tuple(mem * (1 + 0.0003 * i) for i in range(len(tput)))
        return ArmFigures(name, role, tput, goal_values=(tput, m))  # type: ignore[arg-type]

    base = arm("vLLM defaults", "baseline", (281, 302, 309), 7.96e9)
    fast = arm("trial 1", "finalist", (726, 916, 1055), 7.97e9)
    small = arm("trial 2", "finalist", (269, 300, 311), 2.81e9)
    v = decide_pareto([base, fast, small], GOALS, max_loss=0.10, rule=rule)
    assert v.winner == "trial 1" and v.settled and v.stopped == ["trial 2"], v.summary
    (c,) = [c for c in v.comparisons if c.challenger == "trial 2"]
    assert c.outranked_by == "trial 1" and not c.beats and c.look == 3
    assert ("trial 2 stopped after 3 rounds: trial 1 is better beyond noise on the primary "
            "goal, so it cannot change the outcome") in v.summary
    # a winner it could tie with on the primary goal leaves it open
    close = arm("trial 3", "finalist", (700, 930, 1040), 2.81e9)
    v = decide_pareto([base, fast, close], GOALS, max_loss=0.10, rule=rule)
    assert all(c.outranked_by is None for c in v.comparisons)


# -- true statements ------------------------------------------------------------------------

def test_the_power_sentence_with_two_goals_covers_the_goal_that_must_hold() -> None:
    # +50% throughput, measured steadily, but memory so noisy that a loss of at most 10%
    # cannot be shown: throughput alone would claim a small detectable gain
    noisy_mem = (2.0, 0.6, 1.7, 0.5)
    base = ArmFigures("vLLM defaults", "baseline", (100, 101, 99, 100),
                      goal_values=((100, 101, 99, 100), (4e9, 4e9, 4e9, 4e9)))
    fast = ArmFigures("trial 2", "finalist", (150, 151, 149, 150),
                      goal_values=((150, 151, 149, 150), tuple(4e9 * x for x in noisy_mem)))
    v = decide_pareto([base, fast], GOALS, max_loss=0.10, rule=Rule(max_rounds=4))
    (c,) = v.comparisons
    assert not c.beats and c.unproven_on == ["peak_memory_bytes"]
    assert c.detectable_goals["output_throughput"] is None
    assert "a gain of +" not in v.summary.split("in 4 interleaved rounds")[1].split(
        "peak_memory")[0]
    # what it could have seen is a cut of memory alone, throughput held
    assert ("a cut to x0.06 (-94%) on peak_memory_bytes (the other goals held within 10%) "
            "would have been found with 80% probability") in v.summary


def test_more_rounds_counts_the_gain_to_find_not_the_margin_and_is_never_zero() -> None:
    # against the current profile (replace_gain 5%) an open challenger was told "0 more
    # rounds": the margin was counted as part of the gain to tell
    rule = Rule(max_rounds=4, min_rounds=3, detect=0.10, stop_below=0.0)
    inc = ArmFigures("current profile", "incumbent", (100, 100, 100, 100))
    figures = (112, 96, 118, 104)
    close = ArmFigures("trial 1", "finalist", figures)
    v = decide([ArmFigures("vLLM defaults", "baseline", (100, 99, 101, 100)), inc, close],
               "maximize", replace_gain=0.05, rule=rule)
    c = next(c for c in v.comparisons if c.challenger == "trial 1")
    assert not c.settled and c.more_rounds is not None and c.more_rounds >= 1
    assert "about 0 more rounds" not in v.summary
    # the rounds to find +10% beyond the 5% margin, not +15.5% (margin and gain together)
    sd = float(np.std(np.log(np.array(figures) / 100), ddof=1))
    tail = rule.win_tail(4, 2)
    need = rounds_to_detect(sd, 0.10, tail)
    assert need is not None and c.more_rounds == need - 4
    assert c.more_rounds > (rounds_to_detect(sd, 1.05 * 1.10 - 1, tail) or 0) - 4
    # at no noise an open comparison is never told 0 either (a capacity's step: none helps)
    base = ArmFigures("vLLM defaults", "baseline", (8, 8, 8), highs=(9, 9, 9))
    one_up = ArmFigures("trial 2", "finalist", (9, 9, 9), highs=(10.125, 10.125, 10.125))
    (c,) = decide([base, one_up], "maximize", rule=Rule(max_rounds=3, detect=0.10)).comparisons
    assert not c.settled and c.more_rounds is None


def test_a_capacity_step_sets_what_can_be_found_and_what_can_be_ruled_out() -> None:
    # levels 12.5% apart; identical rounds: nothing under two levels can be found, and a
    # challenger of the same capacity is ruled out at the first look (it ran the budget)
    rule = Rule(max_rounds=12, min_rounds=3, detect=0.10)
    base = ArmFigures("vLLM defaults", "baseline", (8, 8, 8), highs=(9, 9, 9))
    same = ArmFigures("trial 1", "finalist", (8, 8, 8), highs=(9, 9, 9))
    v = decide([base, same], "maximize", rule=rule)
    (c,) = v.comparisons
    assert c.settled and v.settled and not c.beats
    assert c.detectable == pytest.approx((9 / 8) ** 2)  # two levels
    assert "a gain of +27% or more would have been found" in v.summary
    # one level better in every round can be neither found nor ruled out: it is stopped,
    # not measured to the budget, and the verdict says so
    one_up = ArmFigures("trial 2", "finalist", (9, 9, 9), highs=(10.125, 10.125, 10.125))
    v = decide([base, one_up], "maximize", rule=rule)
    (c,) = v.comparisons
    assert not c.beats and not c.settled and c.stopped and v.settled
    assert "trial 2 stopped after 3 rounds" in v.summary


@pytest.mark.parametrize(("sd", "n", "tail"), [(0.2, 3, 0.025), (0.15, 4, 0.0125),
                                                (0.1, 6, 0.004)])
def test_the_stated_power_is_the_power_of_the_test_applied(sd: float, n: int,
                                                            tail: float) -> None:
    # the gain stated as found with 80% probability is found 80% of the time by the t test
    # at that look's tail (the old sum of t quantiles gave 69-77% with few rounds)
    gain = detectable_gain(sd, n, tail)
    assert gain is not None and power_at(gain, sd, n, tail) == pytest.approx(POWER)
    rng = np.random.default_rng(n)
    x = rng.normal(gain, sd, size=(100_000, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    from scipy.stats import t as student_t
    assert float(np.mean(t > student_t.isf(tail, n - 1))) == pytest.approx(POWER, abs=0.01)


def test_when_nothing_won_the_verdict_names_the_best_trade_off_it_measured() -> None:
    # a third of the memory at about the same throughput, too noisy to show it held
    base = ArmFigures("vLLM defaults", "baseline", (3300, 2500, 4000),
                      goal_values=((3300, 2500, 4000), (4e9, 4.02e9, 3.98e9)))
    lean = ArmFigures("trial 2", "finalist", (2500, 4200, 3700),
                      goal_values=((2500, 4200, 3700), (1.41e9, 1.4e9, 1.42e9)), changes=1)
    v = decide_pareto([base, lean], GOALS, max_loss=0.10)
    assert v.winner == "vLLM defaults"
    assert "the best measured: trial 2, output_throughput x1.06 [" in v.summary
    assert "peak_memory_bytes x0.352 [" in v.summary
    assert "not shown to hold within the loss allowed on output_throughput" in v.summary
