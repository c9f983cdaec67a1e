"""Pure: the confirmation round's decision, from figures measured side by side.

Each arm (vLLM's defaults, the current profile, the search's finalists) was measured in R
interleaved rounds, a fresh server each time, so round i of every arm saw the same state of
the machine. A challenger beats the reference (the current profile if there is one, else vLLM's
defaults) only *beyond noise*: the 95% interval of its paired ratio to the reference, the very
interval the profile reports, must lie wholly on the better side of 1 (+- `min_gain`). That is
a one-sided test at 2.5%; with m challengers each interval is taken at 1 - 0.05/m (Bonferroni),
so the chance that any of them wins on noise alone stays under 2.5% (the target is 5%; the
margin covers real noise being less tidy than a t distribution: bench/verdicts.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from autotune.stats import Estimate, mean_interval, paired_ratio

Role = Literal["baseline", "incumbent", "finalist"]
Direction = Literal["maximize", "minimize"]
ALPHA = 0.05


@dataclass(frozen=True)
class ArmFigures:
    """One arm's objective in each confirmation round (None: that round failed)."""

    name: str
    role: Role
    values: tuple[float | None, ...]
    failure: str | None = None  # why a round failed, if one did
    # multi-objective: each goal's value per round, in the goals' order (the primary first)
    goal_values: tuple[tuple[float | None, ...], ...] = ()

    @property
    def ok(self) -> bool:
        return all(v is not None and not math.isnan(v) for v in self.values) and bool(
            self.values)


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    challenger: str
    reference: str
    ratio: Estimate  # challenger / reference, 95% interval
    decision_interval: Estimate  # the same at the Bonferroni-adjusted level the rule uses
    beats: bool
    # multi-objective: every goal's ratio (95%) and where the decision interval lies
    goals: dict[str, Estimate] = {}
    better_on: list[str] = []
    worse_on: list[str] = []
    unproven_on: list[str] = []  # neither better nor shown to lose at most max_loss


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str
    winner: str | None
    rounds: int
    level: float  # the confidence level of each decision interval
    min_gain: float
    comparisons: list[Comparison]
    summary: str


def _better(ratio: Estimate, direction: Direction, min_gain: float) -> bool:
    if ratio.low is None or ratio.high is None or ratio.n < 2:
        return False
    if direction == "maximize":
        return ratio.low > 1.0 + min_gain
    return ratio.high < 1.0 - min_gain


def _kept(reference: ArmFigures, rounds: int, level: float, min_gain: float,
          comparisons: list[Comparison], how: str) -> Verdict:
    """The verdict when no challenger beat the reference: it stays."""
    what = "the current profile" if reference.role == "incumbent" else "vLLM's defaults"
    return Verdict(reference=reference.name, winner=reference.name, rounds=rounds, level=level,
                   min_gain=min_gain, comparisons=comparisons,
                   summary=f"nothing beat {what} beyond noise{how} in {rounds} interleaved "
                           f"rounds: keeping {reference.name}")


def decide(arms: Sequence[ArmFigures], direction: Direction, min_gain: float = 0.0,
           replace_gain: float = 0.0) -> Verdict:
    """Which arm the run should keep. Arms that failed any round cannot win. Against the
    current profile a challenger must win by `replace_gain` at least (no flapping)."""
    by_role = {a.role: a for a in arms if a.role != "finalist"}
    rounds = max((len(a.values) for a in arms), default=0)
    reference = next((a for a in (by_role.get("incumbent"), by_role.get("baseline"))
                      if a is not None and a.ok), None)
    eligible = [a for a in arms if a.ok and a is not reference]
    if reference is not None and reference.role == "incumbent":
        min_gain = max(min_gain, replace_gain)
    if reference is None:
        # nothing to compare against: the best arm that served every round, stated as such
        if not eligible:
            return Verdict(reference="-", winner=None, rounds=rounds, level=1 - ALPHA,
                           min_gain=min_gain, comparisons=[],
                           summary="no arm met every constraint in every confirmation "
                                   "round")
        pick = (max if direction == "maximize" else min)(
            eligible, key=lambda a: mean_interval(a.values).value)
        return Verdict(reference="-", winner=pick.name, rounds=rounds, level=1 - ALPHA,
                       min_gain=min_gain, comparisons=[],
                       summary=f"{pick.name} wins by default: neither the current profile nor "
                               "vLLM's defaults met every constraint in every round, so no "
                               "gain can be stated")
    level = 1 - ALPHA / max(1, len(eligible))
    comparisons = []
    for a in eligible:
        decision = paired_ratio(a.values, reference.values, level=level)
        comparisons.append(Comparison(
            challenger=a.name, reference=reference.name,
            ratio=paired_ratio(a.values, reference.values), decision_interval=decision,
            beats=_better(decision, direction, min_gain)))
    beaters = [c for c in comparisons if c.beats]
    if not beaters:
        return _kept(reference, rounds, level, min_gain, comparisons,
                     f" (by at least {min_gain:.0%})" if min_gain else "")
    best = (max if direction == "maximize" else min)(beaters, key=lambda c: c.ratio.value)
    summary = (f"{best.challenger} beats {reference.name} beyond noise: "
               f"x{best.ratio.describe(3)} over {rounds} interleaved rounds")
    return Verdict(reference=reference.name, winner=best.challenger, rounds=rounds,
                   level=level, min_gain=min_gain, comparisons=comparisons, summary=summary)


def _worse(ratio: Estimate, direction: Direction) -> bool:
    return _better(ratio, "minimize" if direction == "maximize" else "maximize", 0.0)


def _within(ratio: Estimate, direction: Direction, max_loss: float) -> bool:
    """The whole interval shows a loss of at most `max_loss` (non-inferiority)."""
    if ratio.low is None or ratio.high is None or ratio.n < 2:
        return False
    if direction == "maximize":
        return ratio.low >= 1.0 - max_loss
    return ratio.high <= 1.0 + max_loss


def decide_pareto(arms: Sequence[ArmFigures], goals: Sequence[tuple[str, Direction]],
                  min_gain: float = 0.0, max_loss: float = 0.05, replace_gain: float = 0.0
                  ) -> Verdict:
    """Multi-objective: a challenger beats the reference when, on measurements paired by
    round, it is better beyond noise on at least one goal (by `min_gain`) and its interval on
    every other goal shows a loss of at most `max_loss` (an interval too wide to show that is
    not enough: "not worse" must be measured, not assumed). Each interval is taken at
    1 - 0.05/(challengers x goals) (Bonferroni). Arms come in the order of the front's rule:
    the first that beats the reference wins."""
    primary = decide(arms, goals[0][1], min_gain, replace_gain)
    by_role = {a.role: a for a in arms if a.role != "finalist"}
    reference = next((a for a in (by_role.get("incumbent"), by_role.get("baseline"))
                      if a is not None and a.ok), None)
    if reference is None:
        return primary
    if reference.role == "incumbent":
        min_gain = max(min_gain, replace_gain)
    eligible = [a for a in arms if a.ok and a is not reference]
    level = 1 - ALPHA / max(1, len(eligible) * len(goals))
    comparisons = []
    for a in eligible:
        ratios, better, worse, unproven = {}, [], [], []
        for i, (metric, direction) in enumerate(goals):
            ours, theirs = a.goal_values[i], reference.goal_values[i]
            ratios[metric] = paired_ratio(ours, theirs)
            decision = paired_ratio(ours, theirs, level=level)
            if _better(decision, direction, min_gain):
                better.append(metric)
            elif _worse(decision, direction):
                worse.append(metric)
            elif not _within(decision, direction, max_loss):
                unproven.append(metric)
        comparisons.append(Comparison(
            challenger=a.name, reference=reference.name, ratio=ratios[goals[0][0]],
            decision_interval=paired_ratio(a.values, reference.values, level=level),
            beats=bool(better) and not worse and not unproven, goals=ratios,
            better_on=better, worse_on=worse, unproven_on=unproven))
    rounds = primary.rounds
    beaters = [c for c in comparisons if c.beats]
    if not beaters:
        return _kept(reference, rounds, level, min_gain, comparisons,
                     f" on one goal while losing at most {max_loss:.0%} on the others")
    best = beaters[0]
    gains = ", ".join(f"{m} x{best.goals[m].describe(3)}" for m in best.better_on)
    held = [m for m, _ in goals if m not in best.better_on]
    summary = (f"{best.challenger} beats {reference.name} beyond noise on {gains}"
               + (f", and loses at most {max_loss:.0%} on {', '.join(held)}" if held else "")
               + f", over {rounds} interleaved rounds")
    return Verdict(reference=reference.name, winner=best.challenger, rounds=rounds,
                   level=level, min_gain=min_gain, comparisons=comparisons, summary=summary)
