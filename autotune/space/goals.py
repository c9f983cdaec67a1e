"""What a trial's score is: the objective's metrics and directions, weights and constraints."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autotune.measure.metrics import metric_names


class Bound(BaseModel):
    """A constraint on one metric: feasible when min <= value <= max."""

    model_config = ConfigDict(extra="forbid")
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Bound:
        if self.max is None and self.min is None:
            raise ValueError("give max or min")
        # every metric is a count, a rate, a time, a size or a share: none is below 0, so
        # such a bound (or an empty interval) makes every candidate infeasible
        if any(b is not None and math.isnan(b) for b in (self.max, self.min)):
            raise ValueError("nan is not a bound")
        if self.max is not None and self.max < 0:
            raise ValueError(f"max {self.max:g} is below 0: no trial can meet it")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self


WEIGHTED = "weighted_score"  # the objective's metric when it is a weighted score
Direction = Literal["maximize", "minimize"]


def objective_metric(name: str) -> str:
    """A metric an objective may name: any metric, or the weighted score."""
    if name != WEIGHTED and name not in metric_names():
        raise ValueError(f"unknown metric {name!r}")
    return name


class Goal(BaseModel):
    """One more objective of a multi-objective search."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    direction: Direction

    _known_metric = field_validator("metric")(classmethod(lambda cls, v: objective_metric(v)))


class Objective(BaseModel):
    """What a trial's score is.

    - one metric (`metric`, `direction`);
    - a weighted score (`metric: weighted_score` and `weights`): the product of each metric
      raised to its weight, so weights are elasticities (throughput^1 x p95 TTFT^-0.5: a 10%
      slower TTFT is worth 5% more throughput) and no unit needs converting; maximized;
    - several objectives (`pareto`: more goals besides `metric`): a multi-objective search
      that keeps a Pareto front, from which `choose` picks the profile.
    """

    model_config = ConfigDict(extra="forbid")
    metric: str = "output_throughput"
    direction: Direction = "maximize"
    weights: dict[str, float] = Field(default_factory=dict)
    pareto: list[Goal] = Field(default_factory=list, description="more objectives: the search "
                                                                   "keeps a Pareto front")
    choose: Literal["primary", "knee"] = Field(
        "primary", description="which point of a Pareto front becomes the profile: the best "
                               "on `metric` (within the constraints), or the knee (closest "
                               "to the ideal point, each goal scaled over the front)")
    constraints: dict[str, Bound] = Field(default_factory=dict)
    level: int = Field(-1, description="which load level of a sweep is scored (index)")

    _known_metric = field_validator("metric")(classmethod(lambda cls, v: objective_metric(v)))

    @field_validator("constraints", "weights")
    @classmethod
    def _known_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if name not in metric_names():
                raise ValueError(f"unknown metric {name!r}")
        return v

    @field_validator("constraints")
    @classmethod
    def _meetable(cls, v: dict[str, Bound]) -> dict[str, Bound]:
        for name, bound in v.items():
            if bound.max == 0 and name.endswith(("_ms", "_s")):
                raise ValueError(f"{name}: max 0 is met by no trial: nothing takes no time")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Objective:
        names = [self.metric, *(g.metric for g in self.pareto)]
        if WEIGHTED in names:
            if not self.weights:
                raise ValueError("metric weighted_score needs weights: {metric: weight, ...}")
            if any(g.direction != "maximize" for g in self.goals() if g.metric == WEIGHTED):
                raise ValueError("a weighted score is maximized: give a negative weight to a "
                                 "metric that is better lower")
            if all(w == 0 for w in self.weights.values()):
                raise ValueError("weights are all 0")
        elif self.weights:
            raise ValueError("weights are for metric: weighted_score")
        if len(set(names)) != len(names):
            raise ValueError(f"pareto: a metric is given twice ({', '.join(names)})")
        if self.choose == "knee" and not self.pareto:
            raise ValueError("choose: knee needs a Pareto front (pareto: more goals)")
        return self

    def goals(self) -> list[Goal]:
        """Every objective, the primary first."""
        return [Goal(metric=self.metric, direction=self.direction), *self.pareto]

    @property
    def multi(self) -> bool:
        return bool(self.pareto)
