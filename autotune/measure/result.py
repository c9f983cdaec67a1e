"""What a trial measured, success or failure, and the check that may stop it early."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from autotune.core.errors import FailureReason
from autotune.core.stats import Estimate
from autotune.measure.metrics import ROUND_METRICS, LevelResult
from autotune.measure.stalls import stall_note


class TrialResult(BaseModel):
    """What a trial measured, success or failure. Saved as JSON beside the server log."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "failed", "pruned"]
    reason: FailureReason | None = None
    detail: str = ""
    command: list[str]
    env: dict[str, str]
    metrics: dict[str, Estimate] = {}
    levels: list[LevelResult] = []
    log_tail: str = ""
    watched: str = "output_throughput"  # the metric whose interval decides when to stop
    round_values: list[float] = []  # its value in each round of the objective's level
    measure_s: float = 0.0  # time spent in measured rounds (warm-up excluded)
    saved_s: float = 0.0  # pruned: measuring time the stopping rule would still have spent
    quality_outputs: list[list[int]] = []  # greedy token ids on the quality guard's prompts
    slot: str = ""  # the share of the machine its server had (trials side by side)
    cores: list[int] = []  # the cores its server's processes were allowed, as the OS said

    def stalls(self) -> str | None:
        """How many of its rounds (every level's) had a first-token stall, and how long."""
        rounds = [r for lv in self.levels for r in lv.rounds]
        return stall_note([r.ttft_stall_s for r in rounds]) if rounds else None

    def value(self, name: str) -> float | None:
        """A metric's point estimate (None when not measured)."""
        e = self.metrics.get(name)
        return None if e is None or math.isnan(e.value) else e.value


# Called after each round of the objective's level with the round's index and its value of
# the watched metric; True stops measuring the candidate (it cannot reach the best so far).
PruneCheck = Callable[[int, float], bool]


def watched_metric(metric: str) -> str:
    """The per-round metric whose interval decides when a level has been measured enough:
    the objective's own, unless it is not a per-round figure (memory, start-up time)."""
    return metric if metric in ROUND_METRICS else "output_throughput"
