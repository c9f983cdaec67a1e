"""Pure: the verdict's sentence, from the comparisons made."""

from __future__ import annotations

import math
from collections.abc import Sequence

from autotune.core.units import plural
from autotune.decide.findings import Comparison, Seat
from autotune.decide.pairs import ArmFigures, Goal
from autotune.decide.sequential import Rule


def what(reference: ArmFigures) -> str:
    return "the current profile" if reference.role == "incumbent" else "vLLM's defaults"


def change(d: float, direction: str) -> str:
    """A factor above 1 as a gain in the goal's direction."""
    return f"a gain of +{d - 1:.0%}" if direction == "maximize" else \
        f"a cut to x{1 / d:.2f} (-{1 - 1 / d:.0%})"


def power_note(comparisons: Sequence[Comparison], goals: Sequence[Goal],
               max_loss: float) -> str:
    """What the comparisons could have seen: the least powerful one's, per goal."""
    made = [c for c in comparisons if c.detectable_goals or c.detectable is not None]
    if not made:
        return ""
    tail = " would have been found with 80% probability at the noise measured in this run"
    if len(goals) == 1:
        found = [c.detectable for c in made]
        if any(d is None for d in found):
            return ": no gain" + tail
        return f": {change(max(d for d in found if d is not None), goals[0][1])} or more" + tail
    phrases = []
    for metric, direction in goals:
        seen = [c.detectable_goals.get(metric) for c in made]
        if all(d is not None for d in seen):
            phrases.append(f"{change(max(d for d in seen if d is not None), direction)} "
                           f"on {metric}")
    if not phrases:
        return (": no gain on any goal" + tail + f": the goals that must hold were too noisy "
                f"to show a loss of at most {max_loss:.0%}")
    return (f": {' or '.join(phrases)} (the other goals held within {max_loss:.0%})" + tail)


def open_note(comparisons: Sequence[Comparison], rule: Rule, rounds: int) -> str:
    """Challengers stopped as unsettleable, and those left open at the budget's end."""
    out = []
    for c in comparisons:
        if not c.stopped:
            continue
        more = ("" if c.more_rounds is None else
                f"; about {plural(c.more_rounds, 'more round')} would tell a gain of "
                f"+{rule.detect:.0%}")
        out.append(f"; {c.challenger} stopped after {c.look} rounds: it could not be settled "
                   f"in the {plural(rule.max_rounds - c.look, 'round')} left (a win "
                   f"{c.win_chance or 0:.0%} likely, ruling one out {c.settle_chance or 0:.0%}, "
                   f"at the trend seen){more}")
    open_ = [c for c in comparisons if not c.settled and not c.stopped]
    if open_ and rounds >= rule.max_rounds:
        needs = [c.more_rounds for c in open_]
        head = (f"; {plural(len(open_), 'challenger')} still unsettled at the budget's end "
                f"({rounds} rounds): ")
        if all(m is not None for m in needs):
            out.append(head + f"the noise seen implies about "
                       f"{plural(max(m or 0 for m in needs), 'more round')} to tell a gain "
                       f"of +{rule.detect:.0%}")
        else:
            out.append(head + f"no number of rounds would tell a gain of +{rule.detect:.0%} "
                       "at the noise and resolution seen")
    return "".join(out)


def kept(st: Seat, reference: ArmFigures, rounds: int, min_gain: float, max_loss: float,
         comparisons: Sequence[Comparison], rule: Rule, goals: Sequence[Goal]) -> str:
    """No challenger beat the reference: it stays (or, where the current profile was
    declared broken, the reference takes its place)."""
    prefix = f"{st.broken}; " if st.broken else ""
    stays = (f"{reference.name} takes its place" if st.broken
             else f"keeping {reference.name}")
    if len(goals) > 1:
        how = f" on one goal while losing at most {max_loss:.0%} on the others"
    else:
        how = f" (by at least {min_gain:.0%})" if min_gain else ""
    return (f"{prefix}nothing beat {what(reference)} beyond noise{how} in {rounds} "
            f"interleaved rounds{st.note}{power_note(comparisons, goals, max_loss)}"
            f"{open_note(comparisons, rule, rounds)}{best_try(comparisons, goals)}; {stays}")


def best_try(comparisons: Sequence[Comparison], goals: Sequence[Goal]) -> str:
    """The best trade-off measured when nothing won: a challenger better beyond noise on
    some goal (with several), else the best primary figure, with where it stands."""
    if not comparisons:
        return ""
    if len(goals) > 1:
        better = [c for c in comparisons if c.better_on]
        if not better:
            return ""
        sign = {m: 1 if d == "maximize" else -1 for m, d in goals}

        def strength(c: Comparison) -> float:
            m = c.better_on[0]
            r = c.goals[m].value
            return sign[m] * math.log(r) if r > 0 else -math.inf

        c = max(better, key=strength)
        parts = [f"{m} x{c.goals[m].describe(3)}" for m, _ in goals if m in c.goals]
        why = ("not shown to hold within the loss allowed on " + ", ".join(c.unproven_on)
               if c.unproven_on else "worse beyond the loss allowed on " + ", ".join(c.worse_on)
               if c.worse_on else "unsettled")
    else:
        direction = goals[0][1]
        usable = [c for c in comparisons if c.ratio.value > 0]
        if not usable:
            return ""
        c = (max if direction == "maximize" else min)(usable, key=lambda c: c.ratio.value)
        parts = [f"x{c.ratio.describe(3)}"]
        why = "stopped" if c.stopped else ("unsettled" if not c.settled else "ruled out")
    return f"; the best measured: {c.challenger}, " + ", ".join(parts) + f" ({why})"


def outranked_note(comparisons: Sequence[Comparison]) -> str:
    """Challengers stopped because a winner beats them beyond noise."""
    return "".join(f"; {c.challenger} stopped after {c.look} rounds: {c.outranked_by} is "
                   "better beyond noise on the primary goal, so it cannot change the outcome"
                   for c in comparisons if c.outranked_by)


def won(st: Seat, reference: ArmFigures, best: Comparison, goals: Sequence[Goal],
        max_loss: float, challengers: int, why: str) -> str:
    prefix = f"{st.broken}; " if st.broken else ""
    who = plural(challengers, "challenger")
    if best.on_failures:
        lead = (f"{best.challenger} beats {reference.name}: {reference.name} failed or broke "
                f"a constraint in {best.reference_failed} of {best.look} rounds that "
                f"{best.challenger} served, which failed none, and is not worse beyond noise ")
        if len(goals) == 1:
            body = f"(x{best.decision_interval.describe(3)})"
        else:
            body = "(" + ", ".join(f"{m} x{best.decision_goals[m].describe(3)}"
                                   for m, _ in goals) + ")"
        text = (f"{prefix}{lead}{body} over {best.look} interleaved rounds ({best.level:.1%} "
                f"intervals, adjusted for {who} and the looks taken)")
    elif len(goals) == 1:
        text = (f"{prefix}{best.challenger} beats {reference.name} beyond noise: "
                f"x{best.decision_interval.describe(3)} over {best.look} interleaved rounds "
                f"({best.level:.1%} interval, adjusted for {who} and the looks taken)")
    else:
        gains = ", ".join(f"{m} x{best.decision_goals[m].describe(3)}" for m in best.better_on)
        held = [f"{m} (x{best.decision_goals[m].describe(3)})" for m, _ in goals
                if m not in best.better_on]
        text = (f"{prefix}{best.challenger} beats {reference.name} beyond noise on {gains}"
                + (f", and loses at most {max_loss:.0%} on {', '.join(held)}" if held else "")
                + f", over {best.look} interleaved rounds ({best.level:.1%} intervals, "
                f"adjusted for {who}, {len(goals)} goals and the looks taken)")
    return text + st.note + (f"; {why}" if why else "")
