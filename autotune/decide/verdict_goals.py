"""Pure: the confirmation's decision when the objective has several goals (a Pareto front).

A challenger beats the reference when, on measurements paired by round, it is better beyond
noise on at least one goal (by `min_gain`) and its interval on every other goal shows a loss
of at most `max_loss` (non-inferiority: an interval too wide to show it is not enough; "not
worse" is measured, not assumed). Each interval is taken at the sequential rule's level for
this look, divided among challengers x goals. A challenger is settled once it wins, once it is
shown to lose more than `max_loss` on a goal, or once no goal can still gain `detect`. A
measured loss within `max_loss` is held, not worse; "worse" is a loss beyond `max_loss`. Arms
come in the order of the front's rule: the first that beats the reference wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from autotune.decide.sequential import Rule, two_sided
from autotune.decide.verdict import (
    ArmFigures,
    Comparison,
    Direction,
    Verdict,
    _extras,
    _kept,
    _margin,
    _no_reference,
    _rule,
    _seat,
    _test,
    final,
)


def _loss_margin(direction: Direction, max_loss: float) -> float:
    """The signed log gain of the largest loss allowed (negative)."""
    return math.log1p(-max_loss) if direction == "maximize" else -math.log1p(max_loss)


def decide_pareto(arms: Sequence[ArmFigures], goals: Sequence[tuple[str, Direction]],
                  min_gain: float = 0.0, max_loss: float = 0.05, replace_gain: float = 0.0,
                  rule: Rule | None = None, frozen: Mapping[str, Comparison] | None = None
                  ) -> Verdict:
    rounds = max((len(a.values) for a in arms), default=0)
    seat = _seat(arms)
    reference = seat.reference
    if reference is None:
        return _no_reference(arms, goals[0][1], rounds, min_gain, seat)
    if reference.role == "incumbent":
        min_gain = max(min_gain, replace_gain)
    rule = _rule(rule, rounds)
    eligible = [a for a in arms if a.ok and a is not reference]
    k = max(1, len(eligible) * len(goals))
    win, fut = rule.win_tail(rounds, k), rule.futility_tail(rounds, k)
    level = two_sided(win)
    comparisons = []
    for a in eligible:
        done = final(frozen, a.name, reference.name)
        if done is not None:
            comparisons.append(done)
            continue
        ratios, decisions, better, worse, unproven = {}, {}, [], [], []
        futile, refuted = True, False
        seen = more = None
        for i, (metric, direction) in enumerate(goals):
            margin = _margin(direction, min_gain)
            t = _test(a.goal_values[i], reference.goal_values[i], direction, win, fut, margin,
                      rule.detect)
            ratios[metric], decisions[metric] = t.ratio, t.decision
            loss = _loss_margin(direction, max_loss)
            if t.better:
                better.append(metric)
            elif t.low_gain >= loss:
                pass  # held: its interval shows a loss of at most max_loss
            elif t.high_win < loss:
                worse.append(metric)  # a loss beyond max_loss, beyond noise
            else:
                unproven.append(metric)
            futile = futile and t.futile
            refuted = refuted or t.high_gain < loss
            if i == 0:
                seen, more = _extras(t, rule, win, margin)
        beats = bool(better) and not worse and not unproven
        settled = beats or futile or refuted
        comparisons.append(Comparison(
            challenger=a.name, reference=reference.name, ratio=ratios[goals[0][0]],
            decision_interval=decisions[goals[0][0]], beats=beats, settled=settled,
            look=rounds, level=level, detectable=seen, more_rounds=None if settled else more,
            goals=ratios, decision_goals=decisions, better_on=better, worse_on=worse,
            unproven_on=unproven))
    settled = all(c.settled for c in comparisons) or rounds >= rule.max_rounds
    beaters = [c for c in comparisons if c.beats]
    if not beaters:
        return _kept(seat, rounds, level, min_gain, comparisons,
                     f" on one goal while losing at most {max_loss:.0%} on the others", rule,
                     settled, goals[0][1])
    best = beaters[0]
    gains = ", ".join(f"{m} x{best.decision_goals[m].describe(3)}" for m in best.better_on)
    held = [f"{m} (x{best.decision_goals[m].describe(3)})" for m, _ in goals
            if m not in best.better_on]
    prefix = f"{seat.broken}; " if seat.broken else ""
    summary = (f"{prefix}{best.challenger} beats {reference.name} beyond noise on {gains}"
               + (f", and loses at most {max_loss:.0%} on {', '.join(held)}" if held else "")
               + f", over {best.look} interleaved rounds ({best.level:.1%} intervals, adjusted "
               f"for {len(eligible)} challenger(s), {len(goals)} goals and the looks "
               f"taken){seat.note}")
    return Verdict(reference=reference.name, winner=best.challenger, rounds=rounds,
                   level=level, min_gain=min_gain, comparisons=comparisons, summary=summary,
                   settled=settled, broken=seat.broken)
