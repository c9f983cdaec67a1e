"""Pure: what a paired test could see, how many rounds it needs, and its chances from here.

The test a confirmation applies to one goal is a one-sided t test on the per-round log ratios:
it finds a gain when the mean log gain, less the margin the gain must clear, is above its
interval's half-width at the look's tail. Its power at a true gain is exact: the statistic
then follows a noncentral t (`scipy.stats.nct`). Where the noise is estimated from the run,
the figures are at that estimate (the noise seen taken as the noise there is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist

from scipy.optimize import brentq
from scipy.special import nctdtr, stdtrit

POWER = 0.8  # the power every "would have been found" sentence states
MAX_ROUNDS = 10_000  # more rounds than any budget: "more rounds" beyond it is not a number
_N = NormalDist()


def power_at(gain: float, sd: float, n: int, tail: float) -> float:
    """The probability that the test on `n` rounds at one-sided `tail` finds a true log gain
    of `gain` beyond its margin, at per-round noise `sd` (exact: noncentral t)."""
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if gain > 0 else 0.0
    return 1.0 - float(nctdtr(n - 1, gain * math.sqrt(n) / sd, critical(tail, n - 1)))


@lru_cache(maxsize=65536)
def critical(tail: float, dof: int) -> float:
    """The t statistic's one-sided critical value at `tail`."""
    return float(stdtrit(dof, 1.0 - tail))


def detectable_gain(sd: float, n: int, tail: float, power: float = POWER) -> float | None:
    """The smallest log gain beyond the margin that the test finds with probability `power`
    (None below 2 rounds or without a finite noise; 0 at no noise)."""
    if n < 2 or not math.isfinite(sd) or power >= 1:
        return None
    if sd <= 0:
        return 0.0
    hi = sd
    while power_at(hi, sd, n, tail) < power:
        hi *= 2
        if hi > 1e6 * sd:
            return None
    return float(brentq(lambda g: power_at(g, sd, n, tail) - power, 0.0, hi, xtol=1e-10))


def detectable(sd: float, n: int, tail: float, power: float = POWER) -> float | None:
    """The smallest ratio (above 1, margin aside) found with probability `power`."""
    g = detectable_gain(sd, n, tail, power)
    return None if g is None else math.exp(g)


def rounds_to_detect(sd: float, gain: float, tail: float, power: float = POWER) -> int | None:
    """How many rounds the test at one-sided `tail` needs to find a ratio of 1 + `gain`
    beyond its margin with probability `power` (exact); None when no number of rounds up to
    `MAX_ROUNDS` does."""
    if gain <= 0:
        return None
    g = math.log1p(gain)
    if sd <= 0:
        return 2
    lo, hi = 2, 2
    while power_at(g, sd, hi, tail) < power:
        lo, hi = hi, hi * 2
        if hi > MAX_ROUNDS:
            return None
    while lo < hi:  # the power grows with the rounds: the first n that reaches it
        mid = (lo + hi) // 2
        if power_at(g, sd, mid, tail) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def chance(mean: float, sd: float, n: int, looks: Sequence[tuple[int, float]],
           threshold: float, side: int) -> float:
    """The chance that a later look crosses: the mean log gain's bound at that look's tail
    above `threshold` (side +1: a win) or below it (side -1: futility), were the rounds still
    to come to go on as the `n` seen (their mean and noise). `looks`: (rounds, tail) of each
    look still to come. The best single look's chance: a lower bound on crossing at any."""
    best = 0.0
    for rounds, tail in looks:
        if rounds <= n:
            continue
        crit = critical(tail, rounds - 1)
        if sd <= 0:
            crosses = (mean - threshold) * side > 0
            best = max(best, 1.0 if crosses else 0.0)
            continue
        # the mean after `rounds`: the n seen and rounds - n more like them
        centre = mean - side * crit * sd / math.sqrt(rounds)
        spread = math.sqrt(rounds - n) * sd / rounds
        best = max(best, _N.cdf(side * (centre - threshold) / spread))
    return best
