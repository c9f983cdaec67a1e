"""Pure: the Pareto front of a multi-objective search, and the rule that picks one point.

A point is on the front when no other feasible point is at least as good on every goal and
better on one. Failed, pruned and SLO-breaking trials are never on it (they are not feasible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autotune.space.goals import Goal, Objective


@dataclass(frozen=True)
class Point:
    """One candidate's value on each goal (in the goals' order)."""

    key: Any  # what names it: a trial number, a trial
    values: tuple[float, ...]


def _better_or_equal(a: float, b: float, goal: Goal) -> bool:
    return a >= b if goal.direction == "maximize" else a <= b


def dominates(a: Point, b: Point, goals: Sequence[Goal]) -> bool:
    """a is at least as good as b on every goal and strictly better on one."""
    pairs = list(zip(a.values, b.values, goals, strict=True))
    return all(_better_or_equal(x, y, g) for x, y, g in pairs) and any(
        x != y for x, y, _ in pairs)


def front(points: Sequence[Point], goals: Sequence[Goal]) -> list[Point]:
    """The non-dominated points, in the order given (ties on every goal all stay)."""
    usable = [p for p in points if all(not math.isnan(v) for v in p.values)]
    return [p for p in usable if not any(dominates(q, p, goals) for q in usable if q is not p)]


def knee_distance(point: Point, pts: Sequence[Point], goals: Sequence[Goal]) -> float:
    """Distance to the ideal point (the best of the front on every goal), each goal scaled
    to [0, 1] over the front so that no unit outweighs another."""
    total = 0.0
    for i, g in enumerate(goals):
        vals = [p.values[i] for p in pts]
        lo, hi = min(vals), max(vals)
        if hi == lo:
            continue
        best = hi if g.direction == "maximize" else lo
        total += ((point.values[i] - best) / (hi - lo)) ** 2
    return math.sqrt(total)


def ranked(pts: Sequence[Point], objective: Objective) -> list[Point]:
    """The front ordered by the objective's `choose` rule, the chosen point first."""
    goals = objective.goals()
    if objective.choose == "knee":
        return sorted(pts, key=lambda p: (knee_distance(p, pts, goals),
                                          -_signed(p.values[0], goals[0])))
    return sorted(pts, key=lambda p: -_signed(p.values[0], goals[0]))


def _signed(v: float, goal: Goal) -> float:
    return v if goal.direction == "maximize" else -v


__all__ = ["Point", "dominates", "front", "knee_distance", "ranked"]
