"""Capacity at an SLO: the highest load a server holds with its latency SLOs met, found inside
one trial by moving the load level on the running server (no restart per level).

    workload:
      capacity:
        over: rate            # sessions started per second (or: concurrency)
        low: 1                # the first level tried
        high: 64              # never beyond
        slo: {p95_ttft_ms: 500, p95_tpot_ms: 50, error_rate: 0}
        resolution: 0.1       # stop when the bracket is this narrow (relative)

The search doubles the level from `low` while every SLO holds, then bisects (geometrically)
between the highest level that held and the lowest that did not, one measured round per
level, until they are within `resolution` (for concurrency: adjacent integers). The figure
is the highest level that held, and its interval is that bracket: the true capacity lies
between the level that held and the one that did not. This is the figure operators size
fleets by ("QPS at P95 TTFT <= 500 ms").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from autotune.core.stats import Estimate
from autotune.measure.metrics import ROUND_METRICS

CAPACITY = "capacity"  # the metric an objective names


class Capacity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    over: Literal["concurrency", "rate"] = "concurrency"
    low: float = Field(1.0, gt=0, description="the first level tried")
    high: float = Field(gt=0, description="the highest level tried")
    slo: dict[str, float] = Field(min_length=1, description="upper bounds on per-round "
                                                           "metrics, e.g. p95_ttft_ms: 500")
    resolution: float = Field(0.1, gt=0, lt=1)
    max_levels: PositiveInt = Field(12, description="levels measured at most")

    @field_validator("slo")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in ROUND_METRICS:
                raise ValueError(f"unknown per-round metric {name!r} (e.g. p95_ttft_ms, "
                                 "p95_tpot_ms, error_rate)")
        return v

    @model_validator(mode="after")
    def _range(self) -> Capacity:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.over == "concurrency" and (self.low != int(self.low)
                                           or self.high != int(self.high)):
            raise ValueError("concurrency levels are whole numbers")
        return self


@dataclass(frozen=True)
class Probe:
    level: float
    holds: bool
    broken: tuple[str, ...]  # the SLOs it broke, as 'p95_ttft_ms 812 > 500'


@dataclass
class CapacitySearch:
    """Pure state machine: the next level from what the levels so far measured."""

    spec: Capacity
    probes: list[Probe] = field(default_factory=list)

    @property
    def held(self) -> float | None:
        """The highest level that met every SLO."""
        ok = [p.level for p in self.probes if p.holds]
        return max(ok) if ok else None

    @property
    def broke(self) -> float | None:
        """The lowest level that broke an SLO (above the highest that held)."""
        held = self.held
        bad = [p.level for p in self.probes if not p.holds and (held is None or p.level > held)]
        return min(bad) if bad else None

    def record(self, level: float, figures: dict[str, float]) -> Probe:
        broken = tuple(f"{name} {figures.get(name, math.nan):.4g} > {bound:g}"
                       for name, bound in self.spec.slo.items()
                       if not figures.get(name, math.inf) <= bound)
        probe = Probe(level, not broken, broken)
        self.probes.append(probe)
        return probe

    def first(self) -> float:
        return self._fit(self.spec.low)

    def next(self) -> float | None:
        """The next level to measure, or None when the search is done."""
        if len(self.probes) >= self.spec.max_levels:
            return None
        held, broke = self.held, self.broke
        if held is None:
            return None  # the lowest level already breaks the SLOs
        if broke is None:
            if held >= self.spec.high:
                return None
            return self._fit(min(self.spec.high, held * 2))
        if self._narrow(held, broke):
            return None
        mid = self._fit(math.sqrt(held * broke))
        if not held < mid < broke:
            return None
        return mid

    def _narrow(self, held: float, broke: float) -> bool:
        if self.spec.over == "concurrency":
            return broke - held <= 1 or broke / held - 1 <= self.spec.resolution
        return broke / held - 1 <= self.spec.resolution

    def _fit(self, level: float) -> float:
        return float(round(level)) if self.spec.over == "concurrency" else float(f"{level:.4g}")

    def estimate(self) -> Estimate:
        """The capacity with its bracket as the interval; 0 when even `low` broke an SLO."""
        held, broke = self.held, self.broke
        n = len(self.probes)
        if held is None:
            return Estimate(value=0.0, low=0.0, high=self.spec.low, n=n, basis="bracket")
        return Estimate(value=held, low=held, high=broke if broke is not None else held, n=n,
                        basis="bracket")

    def summary(self) -> str:
        est = self.estimate()
        unit = "sessions in flight" if self.spec.over == "concurrency" else "sessions/s"
        slo = ", ".join(f"{k} <= {v:g}" for k, v in self.spec.slo.items())
        if self.held is None:
            return (f"capacity below {self.spec.low:g} {unit}: the lowest level broke "
                    f"{'; '.join(self.probes[0].broken)}")
        where = (f"{self.broke:g} broke the SLOs" if self.broke is not None
                 else f"held up to the highest level tried ({self.spec.high:g})")
        return (f"capacity {est.value:g} {unit} at {slo} ({len(self.probes)} levels on one "
                f"server; {where})")


__all__ = ["CAPACITY", "Capacity", "CapacitySearch", "Probe"]
