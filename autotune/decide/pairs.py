"""Pure: one arm against another, round by round: each goal's paired test, and their failures.

Both arms were measured in the same rounds (a fresh server each, side by side). On each goal
the per-round log ratios give a t interval at the look's tail; signed so that positive is
better. Failures are counted round by round, the same way for either side:

- a round where only `ours` failed (or broke a constraint) counts against it: it cannot beat
  the other;
- a round where only `theirs` failed counts against them: `ours`, failing no round the other
  served, beats them unless its figures are worse beyond noise on some goal (by more than
  `max_loss` where several goals are held; by anything where there is one);
- a round where both failed tells nothing between them: it is left out;
- rounds not measured (an arm stopped early) are neither served nor failed.

Failures are counted, not tested: one broken start is a fault of those settings, as it is
for a challenger. A discrete objective (a capacity: each round a bracket, held..broke) is
judged on its brackets: a win on the challenger's worst case against the other's best, a loss
on the challenger's best; nothing finer than the levels' step can be told apart, so the
futility bound is at least two of its steps (`res`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from autotune.core.stats import Estimate, log_ratios, mean_interval, paired_ratio, served
from autotune.decide.sequential import two_sided

Direction = Literal["maximize", "minimize"]
Role = Literal["baseline", "incumbent", "finalist"]
Goal = tuple[str, Direction]


@dataclass(frozen=True)
class ArmFigures:
    """One arm's objective in each confirmation round (None: that round failed)."""

    name: str
    role: Role
    values: tuple[float | None, ...]
    failure: str | None = None  # why a round failed, if one did
    # multi-objective: each goal's value per round, in the goals' order (the primary first)
    goal_values: tuple[tuple[float | None, ...], ...] = ()
    # a discrete objective (capacity): the top of each round's bracket, where it broke
    highs: tuple[float | None, ...] = ()
    changes: int = 0  # settings it changes from vLLM's defaults (ties go to fewer)
    stopped_at: int | None = None  # measured no further than this many rounds

    @property
    def measured(self) -> int:
        n = len(self.values)
        return n if self.stopped_at is None else min(n, self.stopped_at)

    @property
    def failed(self) -> int:
        return sum(not served(v) for v in self.values[:self.measured])

    @property
    def ok(self) -> bool:
        return self.measured > 0 and self.failed == 0

    @property
    def mostly_served(self) -> bool:
        """It failed no more than half its rounds (more: declared broken)."""
        return self.measured > 0 and self.failed * 2 <= self.measured


@dataclass(frozen=True)
class GoalTest:
    """One goal's paired comparison at one look, in log space, signed: positive is better."""

    ratio: Estimate  # ours / theirs, 95%
    decision: Estimate  # at the decision's level (for a bracket: the conservative ratios)
    better: bool  # beyond noise, by the margin
    held: bool  # a loss of at most max_loss, shown
    worse: bool  # a loss beyond max_loss, beyond noise
    futile: bool  # shown not to be better by the margin and what is worth finding
    refuted: bool  # shown, at the futility level, to lose beyond max_loss
    mean: float  # signed mean log gain of the win side (nan below 2 rounds)
    fut_mean: float  # the same of the futility side (a bracket's best case)
    sd: float
    n: int
    res: float = 0.0  # a bracket's resolution: the log gain no round can resolve below


@dataclass(frozen=True)
class Pair:
    """`ours` against `theirs` on every goal, with the rounds each failed."""

    tests: dict[str, GoalTest]
    ours_failed: int  # rounds only ours failed
    theirs_failed: int  # rounds only theirs failed
    both_failed: int
    better_on: list[str] = field(default_factory=list)
    worse_on: list[str] = field(default_factory=list)
    unproven_on: list[str] = field(default_factory=list)
    on_failures: bool = False  # it beats them because they failed rounds it served

    @property
    def beats(self) -> bool:
        if self.ours_failed:
            return False
        return self.on_failures or (bool(self.better_on) and not self.worse_on
                                    and not self.unproven_on)

    @property
    def futile(self) -> bool:
        """Settled without a win: no goal can still gain enough, or a loss was shown."""
        if self.ours_failed:
            return True
        tests = list(self.tests.values())
        return all(t.futile for t in tests) or any(t.refuted for t in tests)


def series(arm: ArmFigures, i: int) -> tuple[float | None, ...]:
    """Goal i's value in each round measured (the objective where there is one goal)."""
    values = arm.goal_values[i] if arm.goal_values else arm.values
    return tuple(values[:arm.measured])


def margin_of(direction: Direction, gain: float) -> float:
    """The signed log gain a win must clear."""
    return math.log1p(gain) if direction == "maximize" else -math.log1p(-gain)


def loss_of(direction: Direction, max_loss: float) -> float:
    """The signed log gain of the largest loss allowed (0 or negative)."""
    return math.log1p(-max_loss) if direction == "maximize" else -math.log1p(max_loss)


def goal_test(ours: Sequence[float | None], theirs: Sequence[float | None],
              direction: Direction, win: float, fut: float, margin: float, detect: float,
              loss: float, ours_high: Sequence[float | None] = (),
              theirs_high: Sequence[float | None] = ()) -> GoalTest:
    n_pair = min(len(ours), len(theirs))
    ours, theirs = ours[:n_pair], theirs[:n_pair]
    sign = 1.0 if direction == "maximize" else -1.0
    c_hi = tuple(ours_high[:n_pair]) if ours_high else ours
    r_hi = tuple(theirs_high[:n_pair]) if theirs_high else theirs
    if direction == "maximize":
        win_logs, fut_logs = log_ratios(ours, r_hi), log_ratios(c_hi, theirs)
    else:
        win_logs, fut_logs = log_ratios(c_hi, theirs), log_ratios(ours, r_hi)
    res = _resolution(ours, c_hi) + _resolution(theirs, r_hi)
    logs = log_ratios(ours, theirs)
    n = len(logs)
    ratio = paired_ratio(ours, theirs)
    if n < 2 or len(win_logs) < 2 or len(fut_logs) < 2:
        nan = Estimate(value=math.nan, n=n, basis="starts")
        return GoalTest(ratio, nan, False, False, False, False, False, math.nan, math.nan,
                        math.nan, n, res)
    g_win = [sign * x for x in win_logs]
    g_fut = [sign * x for x in fut_logs]
    mean = math.fsum(g_win) / len(g_win)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in g_win) / (len(g_win) - 1))
    lo, _ = _bounds(g_win, win)
    _, hi = _bounds(g_fut, fut)
    # worse beyond noise on the best case (ours at its bracket's top, theirs at its bottom):
    # two capacity brackets alike are not worse than each other
    _, high_win = _bounds(g_fut, win)
    m = mean_interval(win_logs, basis="starts", level=two_sided(win), floor=False)
    assert m.low is not None and m.high is not None
    decision = Estimate(value=math.exp(m.value), low=math.exp(m.low), high=math.exp(m.high),
                        n=m.n, basis="starts")
    worth = margin + max(math.log1p(detect), res)
    return GoalTest(ratio, decision, better=lo > margin, held=lo >= loss,
                    worse=high_win < loss, futile=hi < worth, refuted=hi < loss,
                    mean=mean, fut_mean=math.fsum(g_fut) / len(g_fut), sd=sd, n=n, res=res)


def _bounds(gains: Sequence[float], tail: float) -> tuple[float, float]:
    """The one-sided lower and upper bounds of the mean signed log gain at `tail`."""
    m = mean_interval(gains, level=two_sided(tail), floor=False)
    assert m.low is not None and m.high is not None
    return m.low, m.high


def _resolution(low: Sequence[float | None], high: Sequence[float | None]) -> float:
    """The mean log width of a bracket's rounds (0 for a figure that is not a bracket)."""
    widths = [math.log(h / lo) for lo, h in zip(low, high, strict=True)
              if lo is not None and h is not None and served(lo) and served(h) and h > lo]
    return math.fsum(widths) / len(widths) if widths else 0.0


def compare(ours: ArmFigures, theirs: ArmFigures, goals: Sequence[Goal], win: float,
            fut: float, min_gain: float, detect: float, max_loss: float) -> Pair:
    """`ours` against `theirs` at one look: every goal's test and the failures. With one goal
    `max_loss` is 0: a failure-free arm must not be worse at all beyond noise."""
    n = min(ours.measured, theirs.measured)
    o_fail = [not served(v) for v in ours.values[:n]]
    t_fail = [not served(v) for v in theirs.values[:n]]
    ours_failed = sum(a and not b for a, b in zip(o_fail, t_fail, strict=True))
    theirs_failed = sum(b and not a for a, b in zip(o_fail, t_fail, strict=True))
    both = sum(a and b for a, b in zip(o_fail, t_fail, strict=True))
    tests: dict[str, GoalTest] = {}
    better, worse, unproven = [], [], []
    for i, (metric, direction) in enumerate(goals):
        highs = i == 0
        t = goal_test(series(ours, i), series(theirs, i), direction, win, fut,
                      margin_of(direction, min_gain), detect, loss_of(direction, max_loss),
                      ours.highs[:n] if highs else (), theirs.highs[:n] if highs else ())
        tests[metric] = t
        if t.better:
            better.append(metric)
        elif t.held:
            pass
        elif t.worse:
            worse.append(metric)
        else:
            unproven.append(metric)
    # with one goal, "held" is not enough to win; worse is any loss beyond noise, which takes
    # two rounds both served to be shown or ruled out
    on_failures = (theirs_failed > 0 and not ours_failed
                   and all(t.n >= 2 for t in tests.values())
                   and not any(t.worse for t in tests.values()))
    return Pair(tests, ours_failed, theirs_failed, both, better, worse, unproven,
                on_failures)
