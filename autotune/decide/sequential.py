"""Pure: the sequential confirmation's rule: when it looks, at what level, what it could see.

The confirmation measures its arms round after round, a fresh server each, up to a budget of
`max_rounds`, and looks at the paired ratios after every complete round from `min_rounds` on.
A challenger is settled when it wins (its ratio's interval lies wholly above 1 + min_gain) or
when it is shown not to beat the reference by the smallest gain worth having (`detect`: the
interval lies wholly below 1 + detect). The run stops once every challenger is settled.

Looking many times must not make a win on noise likelier. The rule is a group-sequential test
with error spending (Lan & DeMets): the one-sided false-win rate `alpha` is spent over the
looks by the Hwang-Shih-DeCani function alpha (1 - e^(-g t)) / (1 - e^(-g)), t the share of
the budget's rounds measured. Each look's boundary is computed exactly for the joint
distribution of the looks (they share their early rounds: a recursion over the score's density,
Jennison & Turnbull ch. 19), so the looks together spend `alpha`, not more. The rounds' noise
is not known but estimated, and with 2-5 degrees of freedom the t statistics of successive
looks are not joined as normal scores are: the normal boundaries' tail probabilities applied
to them spend some 20% more than `alpha`. So the boundaries actually used are the t
statistics' own (`t_levels`): each look's share of the spending function, crossed by the t
statistic of the rounds measured on null paths that crossed no earlier look, found once by
simulation (fixed seed, 400,000 paths), and divided among the comparisons (Bonferroni over
challengers and goals). The futility side is the same with `beta` spent under a true gain of
`detect`; it is non-binding (stopping a challenger early can only make a false win rarer), so
a true gain of `detect` is missed by it at most `beta` of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from scipy.special import ndtr
from scipy.stats import t as student_t

# one-sided false-win rate of a whole confirmation, over every look and challenger: one look
# at one challenger is the familiar two-sided 95% interval lying wholly above 1
ALPHA = 0.025
BETA = 0.2  # the share of true gains of `detect` that futility may stop (power 80%)
# Hwang-Shih-DeCani's gamma: 1 spends like Pocock's (early looks get a real share, so a large
# gain ends in the minimum rounds), -4 like O'Brien-Fleming's (almost all at the end)
GAMMA = 1.0
FUTILITY_GAMMA = 1.0
STOP_BELOW = 0.10
_N = NormalDist()


def spent(t: float, total: float, gamma: float = GAMMA) -> float:
    """The error spent by the share `t` of the budget (Hwang-Shih-DeCani)."""
    t = min(max(t, 0.0), 1.0)
    if gamma == 0:
        return total * t
    return total * (1 - math.exp(-gamma * t)) / (1 - math.exp(-gamma))


@lru_cache(maxsize=256)
def tail_levels(min_rounds: int, max_rounds: int, total: float, gamma: float = GAMMA
                ) -> tuple[float, ...]:
    """Each look's one-sided tail probability (look i after min_rounds + i rounds): the nominal
    level of its test, such that the looks together reject with probability `total` under
    the null (exact for normal scores with independent increments)."""
    looks = list(range(min_rounds, max_rounds + 1))
    info = [n / max_rounds for n in looks]
    grid = np.linspace(-8.0, 8.0, 1601)  # the score S = Z sqrt(t), below the boundary
    step = grid[1] - grid[0]
    mass = np.where(np.isclose(grid, 0.0), 1.0, 0.0)  # S = 0 before the first round
    prev_t, prev_spent = 0.0, 0.0
    out = []
    for t in info:
        inc = max(spent(t, total, gamma) - prev_spent, 1e-12)
        sd = math.sqrt(t - prev_t)
        lo, hi = -8.0, 8.0
        for _ in range(80):  # the boundary b whose tail mass beyond it is this look's share
            mid = (lo + hi) / 2
            if float(np.sum(mass * ndtr(-(mid - grid) / sd))) > inc:
                lo = mid
            else:
                hi = mid
        out.append(1 - _N.cdf(hi / math.sqrt(t)))
        # S at this look, on the continuation region S < b (the mass of each grid cell)
        kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / sd) ** 2) / (
            sd * math.sqrt(2 * math.pi))
        mass = np.where(grid < hi, kernel @ mass, 0.0) * step
        prev_t, prev_spent = t, spent(t, total, gamma)
    return tuple(out)


PATHS = 400_000  # null paths the t statistics' boundaries are found on
_SEED = 20261207


@lru_cache(maxsize=4)
def _null_t(first: int, last: int) -> np.ndarray:
    """The t statistic of the mean after each look's rounds (first..last), on `PATHS` paths of
    independent standard normal rounds (float32: the boundaries need no more)."""
    rng = np.random.default_rng(_SEED)
    looks = np.arange(first, last + 1)
    out = np.empty((PATHS, len(looks)), dtype=np.float32)
    chunk = 50_000
    for lo in range(0, PATHS, chunk):
        x = rng.standard_normal((min(chunk, PATHS - lo), last))
        s1, s2 = np.cumsum(x, axis=1)[:, looks - 1], np.cumsum(x * x, axis=1)[:, looks - 1]
        mean = s1 / looks
        var = np.maximum(s2 - looks * mean * mean, 1e-300) / (looks - 1)
        out[lo:lo + len(x)] = mean / np.sqrt(var / looks)
    return out


@lru_cache(maxsize=512)
def t_levels(first: int, last: int, total: float, gamma: float = GAMMA) -> tuple[float, ...]:
    """Each look's one-sided tail probability for the t statistic of its rounds (look i after
    first + i rounds), such that the looks together reject with probability `total` when the
    rounds are normal and the true gain is nil: look i's boundary is crossed, on paths that
    crossed no earlier one, by its share of the spending function. The first look's is exact;
    the others are found on simulated paths."""
    looks = list(range(first, last + 1))
    t_share = [n / last for n in looks]
    out = [spent(t_share[0], total, gamma)]
    if len(looks) == 1:
        return (total,)
    stats = _null_t(first, last)
    crossed = stats[:, 0] > student_t.isf(out[0], first - 1)
    for i in range(1, len(looks)):
        inc = max(spent(t_share[i], total, gamma) - spent(t_share[i - 1], total, gamma), 0.0)
        col = np.where(crossed, -np.inf, stats[:, i])
        # the boundary that exactly inc of all paths cross here for the first time
        bound = float(np.quantile(col, 1 - inc)) if inc > 0 else math.inf
        out.append(float(student_t.sf(bound, looks[i] - 1)))
        crossed |= col > bound
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """The confirmation's budget and what it must be able to see."""

    max_rounds: int
    min_rounds: int = 3
    detect: float = 0.05  # the smallest gain worth having
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    futility_gamma: float = FUTILITY_GAMMA
    # an open challenger whose chances of a win and of ruling one out in the looks left are
    # both below this stops being measured (0: never); it can only lose chances to win
    stop_below: float = STOP_BELOW

    def __post_init__(self) -> None:
        if self.min_rounds < 2:
            raise ValueError("an interval needs at least 2 rounds")

    @property
    def first_look(self) -> int:
        return min(self.min_rounds, self.max_rounds)

    def looks_at(self, n: int) -> bool:
        return self.first_look <= n <= self.max_rounds

    def win_tail(self, n: int, comparisons: int = 1) -> float:
        """The one-sided tail probability a win must clear at the look after `n` rounds,
        when `comparisons` share the rate (each is spent its share over the looks)."""
        levels = t_levels(self.first_look, self.max_rounds,
                          self.alpha / max(1, comparisons), self.gamma)
        return levels[self._look(n)]

    def futility_tail(self, n: int, comparisons: int = 1) -> float:
        """The same for stopping a challenger as not worth having (spent over `beta`)."""
        levels = t_levels(self.first_look, self.max_rounds,
                          self.beta / max(1, comparisons), self.futility_gamma)
        return levels[self._look(n)]

    def _look(self, n: int) -> int:
        """Which look `n` rounds are (before the first: the first's level)."""
        return min(max(n, self.first_look), self.max_rounds) - self.first_look


def two_sided(tail: float) -> float:
    """The confidence level of a two-sided interval whose each side has `tail`."""
    return 1 - 2 * tail
