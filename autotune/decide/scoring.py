"""Pure: what a trial's result scores for the search (values and constraint violations), and
the figures an objective derives (a weighted score)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.core.stats import Estimate
from autotune.measure.result import TrialResult
from autotune.space.goals import WEIGHTED, Objective


@dataclass(frozen=True)
class Score:
    """The values Optuna optimizes (the primary first, then each Pareto goal) and the
    constraints (<= 0 is feasible) it learns from."""

    values: tuple[float, ...]
    constraints: dict[str, float]

    @property
    def value(self) -> float:
        return self.values[0]

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


# Every trial carries the same constraint keys, failed or not, so the sampler compares like
# with like. A failed trial violates `trial_ok`, so it can never be chosen as best.
OK_CONSTRAINT = "trial_ok"


def _violation(value: float, bound: float, upper: bool) -> float:
    scale = abs(bound) if bound else 1.0
    excess = (value - bound) if upper else (bound - value)
    return excess / scale


def _worst(direction: str) -> float:
    return 0.0 if direction == "maximize" else 1e18


def weighted_score(objective: Objective, metrics: dict[str, Estimate]) -> Estimate | None:
    """Product of each metric raised to its weight, with an interval from the metrics' own
    relative half-widths combined in quadrature (on the log scale). None when a weighted
    metric was not measured or is not positive."""
    log_value, rel2, n = 0.0, 0.0, None
    for name, w in objective.weights.items():
        e = metrics.get(name)
        if e is None or math.isnan(e.value) or e.value <= 0:
            return None
        log_value += w * math.log(e.value)
        rhw = e.relative_half_width
        rel2 += (w * rhw) ** 2 if rhw is not None else 0.0
        n = e.n if n is None else min(n, e.n)
    value = math.exp(log_value)
    rel = math.sqrt(rel2)
    if rel == 0.0:
        return Estimate(value=value, n=n or 1, basis="single")
    return Estimate(value=value, low=value * math.exp(-rel), high=value * math.exp(rel),
                    n=n or 1, basis="rounds")


def derive(objective: Objective, result: TrialResult) -> TrialResult:
    """The result with the figures its objective defines (a weighted score) added."""
    if objective.metric != WEIGHTED or result.status != "ok":
        return result
    ws = weighted_score(objective, result.metrics)
    if ws is None:
        return result
    return result.model_copy(update={"metrics": {**result.metrics, WEIGHTED: ws}})


def score(objective: Objective, result: TrialResult) -> Score:
    """Pure: a trial's metrics -> values and normalized constraint violations."""
    keys = [f"{name}_{side}" for name, b in objective.constraints.items()
            for side, v in (("max", b.max), ("min", b.min)) if v is not None]
    goals = objective.goals()
    values = [result.value(g.metric) for g in goals]
    if objective.metric == WEIGHTED and values[0] is None and result.status == "ok":
        ws = weighted_score(objective, result.metrics)
        values[0] = ws.value if ws is not None else None
    if result.status != "ok" or any(v is None for v in values):
        return Score(tuple(_worst(g.direction) for g in goals),
                     {OK_CONSTRAINT: 1.0, **dict.fromkeys(keys, 1.0)})
    constraints = {OK_CONSTRAINT: 0.0}
    for name, b in objective.constraints.items():
        m = result.value(name)
        for side, bound in (("max", b.max), ("min", b.min)):
            if bound is None:
                continue
            v = 1.0 if m is None else _violation(m, bound, upper=side == "max")
            constraints[f"{name}_{side}"] = v
    return Score(tuple(float(v) for v in values if v is not None), constraints)
