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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
          + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, dof: float) -> float:
    """The p-quantile of Student's t (bisection on the CDF; exact to about 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


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
