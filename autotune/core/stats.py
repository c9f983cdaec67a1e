"""Pure statistics: figures with their 95% intervals, and paired ratios between settings.

Every figure autotune reports is an `Estimate`: a value, its interval and what the interval
rests on (rounds within one server start, or server starts). Requests within one run are not
independent (they share batches and queues), so intervals are never computed over requests:
a figure's observations are whole rounds of the workload, or whole server starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator
from scipy.special import stdtr, stdtrit

# What the n of an Estimate counts.
Basis = Literal["rounds", "starts", "single", "bracket", "windows"]


class Estimate(BaseModel):
    """A figure and its two-sided 95% interval (None where it cannot be known: one observation).

    `n` is how many observations it rests on and `basis` what they are: `rounds` of the
    workload within one server start, `starts` of a fresh server, a `single` reading, or the
    load levels of a capacity search (`bracket`: the interval is the highest level that held
    its SLOs to the lowest that did not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    low: float | None = None
    high: float | None = None
    n: int = 1
    basis: Basis = "single"

    @field_validator("value", mode="before")
    @classmethod
    def _none_is_nan(cls, v: object) -> object:
        # JSON has no NaN: an estimate of nothing (no successful request) is written as null
        return math.nan if v is None else v

    @classmethod
    def single(cls, value: float) -> Estimate:
        return cls(value=value, n=1, basis="single")

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (for a symmetric interval, the usual +-)."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    @property
    def relative_half_width(self) -> float | None:
        """Half-width over |value|: 0.03 reads "+-3%". None without an interval or at 0."""
        h = self.half_width
        if h is None or self.value == 0 or math.isnan(self.value):
            return None
        return h / abs(self.value)

    def describe(self, digits: int = 4, unit: str = "") -> str:
        """'866.2 [850.1, 880.3] (3 starts)' - a figure as it should be reported."""
        v = f"{significant(self.value, digits)}{unit}"
        if self.low is None or self.high is None:
            return v + ("" if self.basis == "single" else f" ({self.n} {self.basis})")
        return (f"{v} [{significant(self.low, digits)}, {significant(self.high, digits)}] "
                f"({self.n} {self.basis})")


def significant(x: float, digits: int = 4) -> str:
    """x to `digits` significant digits, or more where fewer would print a figure that is not
    1 as "1" (a ratio's bound must show which side of 1 it is on: 1.0002, not 1)."""
    text = f"{x:.{digits}g}"
    while x != 1 and math.isfinite(x) and float(text) == 1 and digits < 12:
        digits += 1
        text = f"{x:.{digits}g}"
    return text


# ---------------------------------------------------------------- Student t


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    return float(stdtr(dof, t))


@lru_cache(maxsize=4096)
def t_quantile(p: float, dof: float) -> float:
    """The p-quantile of Student's t."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float(stdtrit(dof, p))


# ---------------------------------------------------------------- intervals


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def mean_interval(values: Sequence[float | None], basis: Basis = "rounds",
                  level: float = 0.95, floor: bool = True) -> Estimate:
    """Mean of the observations and its Student t interval (none from a single one). With
    `floor`, the interval of observations that are all >= 0 (a rate, a latency) is cut at 0;
    a difference of logarithms must not be cut (`floor=False`)."""
    xs = _clean(values)
    if not xs:
        return Estimate(value=math.nan, n=0, basis=basis)
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(value=mean, n=1, basis=basis)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    # a figure that cannot be negative (a rate, a latency) gets no negative bound
    low = max(0.0, mean - half) if floor and min(xs) >= 0 else mean - half
    return Estimate(value=mean, low=low, high=mean + half, n=n, basis=basis)


def paired_ratio(challenger: Sequence[float | None], reference: Sequence[float | None],
                 level: float = 0.95) -> Estimate:
    """How many times the reference the challenger measured, from paired observations.

    Observation i of each was taken side by side (same round of an interleaved schedule), so
    drift of the machine cancels in the pair. The ratio is the geometric mean of the per-pair
    ratios and its interval a t interval on their logarithms (never cut: a log ratio may be
    negative); pairs where either side is missing or not positive are dropped. n counts the
    pairs used."""
    logs = log_ratios(challenger, reference)
    if not logs:
        return Estimate(value=math.nan, n=0, basis="starts")
    m = mean_interval(logs, basis="starts", level=level, floor=False)
    if m.low is None or m.high is None:
        return Estimate(value=math.exp(m.value), n=m.n, basis="starts")
    return Estimate(value=math.exp(m.value), low=math.exp(m.low), high=math.exp(m.high),
                    n=m.n, basis="starts")


def served(v: float | None) -> bool:
    """A figure that can enter a ratio: measured, finite and positive."""
    return v is not None and math.isfinite(v) and v > 0


def log_ratios(challenger: Sequence[float | None], reference: Sequence[float | None]
               ) -> list[float]:
    """log(challenger / reference) of each pair where both sides were served."""
    if len(challenger) != len(reference):
        raise ValueError("paired observations must have the same length")
    return [math.log(c / r) for c, r in zip(challenger, reference, strict=True)
            if c is not None and r is not None and served(c) and served(r)]


def rounds_needed(values: Sequence[float], target: float, level: float = 0.95) -> int | None:
    """How many rounds like these it would take for the mean's relative half-width to reach
    `target` (None: cannot tell from fewer than two, or a zero mean)."""
    xs = _clean(values)
    if len(xs) < 2:
        return None
    est = mean_interval(xs, level=level)
    if est.value == 0 or est.half_width is None:
        return None
    sd = est.half_width * math.sqrt(est.n) / t_quantile(0.5 + level / 2.0, est.n - 1)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return max(est.n, math.ceil((z * sd / (target * abs(est.value))) ** 2))
