"""What a trial came to, said one way everywhere: ok, infeasible (which constraint it missed,
and by how much), failed, pruned or still running.

The tables, the report, the live lines and every `--json` read a trial's standing here, so
none of them calls a trial `ok` that another calls infeasible. Pure reading of what the
tuner recorded (its status, reason and constraint violations, trials.record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autotune.core.stats import Estimate
from autotune.core.units import figure, unit
from autotune.decide.scoring import OK_CONSTRAINT
from autotune.space.goals import Objective
from autotune.study.trials import metrics_of

INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class Miss:
    """One constraint a measured trial missed: its metric, which bound, the bound, what was
    measured (with its interval) and by how much it missed, relative to the bound."""

    metric: str
    side: str  # "max" | "min"
    limit: float | None  # None: the objective that set it is not recorded
    measured: Estimate | None
    by: float  # (value - max) / |max|, or (min - value) / |min|: > 0

    def text(self) -> str:
        """'median_tpot_ms 32.1 ms [30.2, 34] above its max 20 ms (+61%)'."""
        what = "above its max" if self.side == "max" else "below its min"
        u = unit(self.metric)
        got = "not measured" if self.measured is None else figure(self.metric, self.measured)
        if self.measured is not None and u and u != "GiB":  # GiB: figure() names it
            value, _, rest = got.partition(" ")
            got = f"{value} {u}" + (f" {rest}" if rest else "")
        if self.limit is None:
            return f"{self.metric} {got} {what} (by {self.by:+.0%})"
        bound = figure(self.metric, Estimate.single(self.limit))
        if u and u != "GiB":
            bound += f" {u}"
        return f"{self.metric} {got} {what} {bound} ({self.by:+.0%})"

    def doc(self) -> dict[str, Any]:
        return {"metric": self.metric, "bound": self.side, "limit": self.limit,
                "measured": None if self.measured is None else self.measured.model_dump(
                    mode="json"), "by": round(self.by, 6)}


@dataclass(frozen=True)
class Standing:
    status: str  # ok | infeasible | failed | pruned | running
    reason: str | None = None  # failed: its reason; infeasible: the constraints missed
    missed: list[Miss] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return self.status == "ok"


def misses(constraints: dict[str, float], metrics: dict[str, Estimate],
           objective: Objective | None) -> list[Miss]:
    """The constraints a measured trial missed (violation > 0), from its recorded violations
    (`{metric}_{max|min}`, scoring.score) and the objective's bounds."""
    bounds = objective.constraints if objective is not None else {}
    out = []
    for key, by in constraints.items():
        if key == OK_CONSTRAINT or not by > 0 or math.isnan(by):
            continue
        metric, _, side = key.rpartition("_")
        b = bounds.get(metric)
        limit = None if b is None else (b.max if side == "max" else b.min)
        out.append(Miss(metric, side, limit, metrics.get(metric), by))
    return out


def standing(t: FrozenTrial, objective: Objective | None,
             metrics: dict[str, Estimate] | None = None) -> Standing:
    """A trial's standing as every output says it."""
    status = t.user_attrs.get("status")
    if status is None:
        return Standing("running" if t.state is TrialState.RUNNING else "failed",
                        None if t.state is TrialState.RUNNING else "interrupted")
    if status != "ok":
        reason = t.user_attrs.get("reason")
        return Standing(str(status), str(reason) if reason else None)
    missed = misses(t.constraints, metrics_of(t) if metrics is None else metrics, objective)
    if missed:
        return Standing(INFEASIBLE, "; ".join(m.text() for m in missed), missed)
    return Standing("ok")


def study_objective_or_none(attrs: dict[str, Any]) -> Objective | None:
    """The objective a study recorded (None for one made before it was recorded)."""
    raw = attrs.get("objective")
    try:
        return None if raw is None else Objective.model_validate(raw)
    except ValueError:
        return None


__all__ = ["INFEASIBLE", "Miss", "Standing", "misses", "standing", "study_objective_or_none"]
