"""Pure: how long a load level is measured, and when a candidate is not worth measuring on.

A level is measured in rounds: each round sends the workload's `num_requests` sessions (as
`vllm bench serve` does once) and yields one value of the objective's metric. Rounds go on
until the 95% interval of their mean is narrow enough (`target_ci`), or the time cap is hit,
and never stop before `min_rounds` and `min_s` (only `max_rounds` outranks them): the time cap
`max_s` applies once both are reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune.core.stats import Estimate, mean_interval, rounds_needed


class Measure(BaseModel):
    """The stopping rule of one load level. Defaults suit a GPU server; a small CPU host
    declares shorter caps (see search_spaces/cpu.yaml)."""

    model_config = ConfigDict(extra="forbid")

    min_rounds: int = Field(3, ge=1, description="never fewer rounds, whatever max_s says "
                                                 "(an interval needs >= 2)")
    max_rounds: int = Field(50, ge=1, description="never more rounds")
    min_s: float = Field(20.0, ge=0, description="never stop before this much measured time, "
                                                 "whatever max_s says (max_rounds may)")
    max_s: float = Field(120.0, gt=0, description="once min_s is measured, stop before a round "
                                                  "would end past this")
    target_ci: float = Field(0.03, gt=0, lt=1, description="stop once the 95% interval's "
                                                           "half-width is within this share "
                                                           "of the mean (0.03: +-3%)")

    @model_validator(mode="after")
    def _order(self) -> Measure:
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) is above max_rounds "
                             f"({self.max_rounds})")
        if self.min_s > self.max_s:
            raise ValueError(f"min_s ({self.min_s:g}) is above max_s ({self.max_s:g})")
        return self


Step = Literal["continue", "done"]


def next_step(values: Sequence[float], durations_s: Sequence[float], m: Measure) -> Step:
    """After a round: measure another one, or stop. `values` are the watched metric's value per
    round so far, `durations_s` how long each round took."""
    n = len(values)
    elapsed = math.fsum(durations_s)
    if n >= m.max_rounds:
        return "done"
    if n < m.min_rounds:
        return "continue"  # an interval needs its rounds, whatever the time cap says
    if elapsed < m.min_s:
        return "continue"  # nor does the cap cut the minimum measuring time short
    if elapsed + elapsed / n > m.max_s:
        return "done"  # the next round would end past the cap
    rel = mean_interval(values).relative_half_width
    if rel is not None and rel <= m.target_ci:
        return "done"
    return "continue"


def time_to_finish(values: Sequence[float], durations_s: Sequence[float], m: Measure) -> float:
    """Estimated measuring time the rule would still have spent after these rounds: what
    stopping a candidate here saves."""
    n = len(values)
    if n == 0:
        return 0.0
    spent = math.fsum(durations_s)
    per_round = spent / n
    if per_round <= 0:
        return 0.0
    # as next_step, with rounds of the mean duration: at least min_rounds and min_s, then no
    # round that would end past max_s, and never more than max_rounds
    floor = max(m.min_rounds, math.ceil(m.min_s / per_round))
    cap = max(floor, math.floor(m.max_s / per_round))
    need = rounds_needed(values, m.target_ci) or floor
    need = min(max(need, floor), cap, m.max_rounds)
    return max(0.0, need * per_round - spent)


@dataclass(frozen=True)
class PruneRule:
    """Stop measuring a candidate whose interval says it cannot reach the best so far.

    Both intervals come from rounds within one server start each, and server starts differ by
    more than that (start-to-start noise), so a candidate is stopped only when even the top of
    its interval is more than `margin` below the bottom of the best's."""

    direction: Literal["maximize", "minimize"]
    margin: float = 0.10
    min_rounds: int = 3


def hopeless(candidate: Sequence[float], best: Estimate | None, rule: PruneRule) -> bool:
    if best is None or best.low is None or best.high is None or len(candidate) < max(
            2, rule.min_rounds):
        return False
    c = mean_interval(candidate)
    if c.low is None or c.high is None:
        return False
    if rule.direction == "maximize":
        return c.high < best.low * (1.0 - rule.margin)
    return c.low > best.high * (1.0 + rule.margin)
