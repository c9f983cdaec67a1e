"""Pure: the confirmation round's decision, from figures measured side by side.

Each arm (vLLM's defaults, the current profile, the search's finalists) is measured in
interleaved rounds, a fresh server each time, so round i of every arm saw the same state of
the machine. The reference is the current profile if there is one and it served most rounds,
else vLLM's defaults; a challenger is compared with it on the rounds both served. A challenger
beats the reference only *beyond noise*: the interval of its paired ratio, at the level the
sequential rule (sequential.py) gives this look, divided among the challengers (and goals),
must lie wholly on the better side of 1 (+- `min_gain`). That interval is the one stated: it
covers the choice among finalists and the looks taken. A challenger that failed a round cannot
win; a figure that is not positive (no capacity, no goodput) is a failed round. A discrete
objective (a capacity, with its bracket) wins only on its bracket: the level it held against
the level at which the reference broke.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from autotune.core.stats import Estimate, log_ratios, mean_interval, paired_ratio, served
from autotune.decide.sequential import ALPHA, Rule, detectable, rounds_to_detect, two_sided

Role = Literal["baseline", "incumbent", "finalist"]
Direction = Literal["maximize", "minimize"]


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

    @property
    def failed(self) -> int:
        return sum(not served(v) for v in self.values)

    @property
    def ok(self) -> bool:
        return bool(self.values) and self.failed == 0

    @property
    def mostly_served(self) -> bool:
        """It failed no more than half its rounds (more: declared broken)."""
        return bool(self.values) and self.failed * 2 <= len(self.values)


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    challenger: str
    reference: str
    ratio: Estimate  # challenger / reference, 95% interval on the rounds both served
    decision_interval: Estimate  # at the level the rule used: the interval stated
    beats: bool
    settled: bool = True  # beats, or shown not to beat the reference by `detect`
    look: int = 0  # the rounds it was decided on (settled at that look, and then final)
    level: float = 0.0  # the two-sided level of its decision interval
    detectable: float | None = None  # the ratio found with 80% probability at this noise
    more_rounds: int | None = None  # unsettled: rounds the noise seen implies are needed
    # multi-objective: every goal's ratio (95%) and where the decision interval lies
    goals: dict[str, Estimate] = {}
    decision_goals: dict[str, Estimate] = {}
    better_on: list[str] = []
    worse_on: list[str] = []
    unproven_on: list[str] = []  # neither better nor shown to lose at most max_loss


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str
    winner: str | None
    rounds: int
    level: float  # the confidence level of each decision interval
    min_gain: float
    comparisons: list[Comparison]
    summary: str
    settled: bool = True  # every challenger settled: the confirmation may stop
    detectable: float | None = None  # the largest of the comparisons' (None: none made)
    more_rounds: int | None = None
    broken: str | None = None  # the current profile failed most rounds: declared broken


@dataclass(frozen=True)
class _Test:
    """One paired comparison at one look, in log space, signed so that positive is better."""

    ratio: Estimate
    decision: Estimate
    better: bool  # beyond noise, by the margin
    worse: bool  # worse beyond noise (no margin)
    low_gain: float  # lower bound of the signed log gain at the decision level
    high_gain: float  # upper bound of the signed log gain at the futility level
    high_win: float  # upper bound of the signed log gain at the decision level
    futile: bool  # shown not to be better by margin + detect
    sd: float
    n: int


def _test(ours: Sequence[float | None], theirs: Sequence[float | None], direction: Direction,
          win: float, futility: float, margin: float, detect: float,
          ours_high: Sequence[float | None] = (), theirs_high: Sequence[float | None] = ()
          ) -> _Test:
    """A discrete objective's rounds carry brackets: a win is judged on the challenger's
    worst case against the reference's best, a loss on the challenger's best."""
    sign = 1.0 if direction == "maximize" else -1.0
    c_lo, c_hi = ours, ours_high or ours
    r_lo, r_hi = theirs, theirs_high or theirs
    if direction == "maximize":
        win_logs, fut_logs = log_ratios(c_lo, r_hi), log_ratios(c_hi, r_lo)
    else:
        win_logs, fut_logs = log_ratios(c_hi, r_lo), log_ratios(c_lo, r_hi)
    logs = log_ratios(ours, theirs)
    n = len(logs)
    ratio = paired_ratio(ours, theirs)
    if n < 2 or len(win_logs) < 2 or len(fut_logs) < 2:
        nan = Estimate(value=math.nan, n=n, basis="starts")
        return _Test(ratio, nan, False, False, -math.inf, math.inf, math.inf, False,
                     math.nan, n)
    # the interval stated is the one decided on (for a bracket: the conservative ratios)
    mean = math.fsum(win_logs) / len(win_logs)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in win_logs) / (len(win_logs) - 1))
    g_win = [sign * x for x in win_logs]
    g_fut = [sign * x for x in fut_logs]
    lo, hi = _bound(g_win, win, -1), _bound(g_fut, futility, +1)
    high_win = _bound(g_fut, win, +1)
    m = mean_interval(win_logs, basis="starts", level=two_sided(win), floor=False)
    assert m.low is not None and m.high is not None
    decision = Estimate(value=math.exp(m.value), low=math.exp(m.low), high=math.exp(m.high),
                        n=m.n, basis="starts")
    return _Test(ratio, decision, better=lo > margin, worse=high_win < 0, low_gain=lo,
                 high_gain=hi, high_win=high_win, futile=hi < margin + math.log1p(detect),
                 sd=sd, n=n)


def _bound(gains: Sequence[float], tail: float, side: int) -> float:
    """The one-sided bound of the mean signed log gain at `tail` (side -1 lower, +1 upper):
    a side of the two-sided interval whose each side has `tail`."""
    m = mean_interval(gains, level=two_sided(tail), floor=False)
    assert m.low is not None and m.high is not None
    return m.low if side < 0 else m.high


def _margin(direction: Direction, gain: float) -> float:
    return math.log1p(gain) if direction == "maximize" else -math.log1p(-gain)


@dataclass(frozen=True)
class _Seat:
    reference: ArmFigures | None
    broken: str | None
    note: str  # the reference missed rounds: said in the summary


def _seat(arms: Sequence[ArmFigures]) -> _Seat:
    """The reference: the current profile unless it failed most rounds (then it is declared
    broken), else vLLM's defaults if they served most rounds."""
    by_role = {a.role: a for a in arms if a.role != "finalist"}
    inc, base = by_role.get("incumbent"), by_role.get("baseline")
    broken = None
    if inc is not None and not inc.mostly_served:
        broken = (f"the current profile failed {inc.failed} of {len(inc.values)} rounds "
                  f"({inc.failure or 'failed'}): declared broken")
    ref = next((a for a in (inc, base) if a is not None and a.mostly_served), None)
    note = ""
    if ref is not None and ref.failed:
        note = (f" ({ref.name} failed {ref.failed} of {len(ref.values)} rounds: compared on "
                "the rounds both served)")
    return _Seat(ref, broken, note)


def _what(reference: ArmFigures) -> str:
    return "the current profile" if reference.role == "incumbent" else "vLLM's defaults"


def _power_note(comparisons: Sequence[Comparison], direction: Direction) -> str:
    found = [c.detectable for c in comparisons if c.detectable is not None]
    if not found:
        return ""
    d = max(found)  # the gain as a factor above 1, whichever the direction
    gain = f"a gain of +{d - 1:.0%}" if direction == "maximize" else \
        f"a cut to x{1 / d:.2f} (-{1 - 1 / d:.0%})"
    return (f": {gain} or more would have been found with 80% probability at the noise "
            "measured in this run")


def _budget_note(comparisons: Sequence[Comparison], rule: Rule, rounds: int) -> str:
    open_ = [c for c in comparisons if not c.settled]
    if not open_ or rounds < rule.max_rounds:
        return ""
    more = max((c.more_rounds or 0) for c in open_)
    return (f"; {len(open_)} challenger(s) still unsettled at the budget's end ({rounds} "
            f"rounds): the noise seen implies about {more} more rounds to tell a gain of "
            f"+{rule.detect:.0%}")


def _kept(seat: _Seat, rounds: int, level: float, min_gain: float,
          comparisons: list[Comparison], how: str, rule: Rule, settled: bool,
          direction: Direction) -> Verdict:
    """The verdict when no challenger beat the reference: it stays (or, when the current
    profile was declared broken, the reference takes its place)."""
    reference = seat.reference
    assert reference is not None
    prefix = f"{seat.broken}; " if seat.broken else ""
    stays = (f"{reference.name} takes its place" if seat.broken
             else f"keeping {reference.name}")
    summary = (f"{prefix}nothing beat {_what(reference)} beyond noise{how} in {rounds} "
               f"interleaved rounds{seat.note}{_power_note(comparisons, direction)}"
               f"{_budget_note(comparisons, rule, rounds)}; {stays}")
    found = [c.detectable for c in comparisons if c.detectable is not None]
    more = [c.more_rounds for c in comparisons if c.more_rounds is not None]
    return Verdict(reference=reference.name, winner=reference.name, rounds=rounds, level=level,
                   min_gain=min_gain, comparisons=comparisons, summary=summary,
                   settled=settled, detectable=max(found) if found else None,
                   more_rounds=max(more) if more else None, broken=seat.broken)


def _no_reference(arms: Sequence[ArmFigures], direction: Direction, rounds: int,
                  min_gain: float, seat: _Seat) -> Verdict:
    eligible = [a for a in arms if a.ok]
    prefix = f"{seat.broken}; " if seat.broken else ""
    if not eligible:
        return Verdict(reference="-", winner=None, rounds=rounds, level=1 - 2 * ALPHA,
                       min_gain=min_gain, comparisons=[], broken=seat.broken,
                       summary=f"{prefix}no arm met every constraint in every confirmation "
                               "round")
    pick = (max if direction == "maximize" else min)(
        eligible, key=lambda a: mean_interval(a.values).value)
    return Verdict(reference="-", winner=pick.name, rounds=rounds, level=1 - 2 * ALPHA,
                   min_gain=min_gain, comparisons=[], broken=seat.broken,
                   summary=f"{prefix}{pick.name} wins by default: neither the current profile "
                           "nor vLLM's defaults served most rounds, so no gain can be stated")


def _rule(rule: Rule | None, rounds: int) -> Rule:
    """No rule given: one look after the rounds measured (a fixed-round confirmation)."""
    n = max(2, rounds)
    return rule if rule is not None else Rule(max_rounds=n, min_rounds=n)


def _extras(t: _Test, rule: Rule, win: float, margin: float) -> tuple[float | None, int | None]:
    """What the comparison could have seen, and the rounds it would still need."""
    if t.n < 2:
        return None, None
    found = detectable(t.sd, t.n, win)
    seen = None if found is None else found * math.exp(margin)
    need = rounds_to_detect(t.sd, math.expm1(margin + math.log1p(rule.detect)), win)
    return seen, max(0, need - t.n)


def final(frozen: Mapping[str, Comparison] | None, name: str, reference: str
          ) -> Comparison | None:
    """A challenger settled at an earlier look against the same reference: its decision
    stands (a sequential test ends at the first boundary it crosses)."""
    c = (frozen or {}).get(name)
    return c if c is not None and c.reference == reference else None


def decide(arms: Sequence[ArmFigures], direction: Direction, min_gain: float = 0.0,
           replace_gain: float = 0.0, rule: Rule | None = None,
           frozen: Mapping[str, Comparison] | None = None) -> Verdict:
    """Which arm the run should keep, at a look after the rounds measured so far. Against
    the current profile a challenger must win by `replace_gain` at least (no flapping).
    `frozen`: the comparisons settled at earlier looks, which stand."""
    rounds = max((len(a.values) for a in arms), default=0)
    seat = _seat(arms)
    reference = seat.reference
    if reference is not None and reference.role == "incumbent":
        min_gain = max(min_gain, replace_gain)
    if reference is None:
        return _no_reference(arms, direction, rounds, min_gain, seat)
    rule = _rule(rule, rounds)
    eligible = [a for a in arms if a.ok and a is not reference]
    k = max(1, len(eligible))
    win, fut = rule.win_tail(rounds, k), rule.futility_tail(rounds, k)
    margin = _margin(direction, min_gain)
    comparisons = []
    level = two_sided(win)
    for a in eligible:
        done = final(frozen, a.name, reference.name)
        if done is not None:
            comparisons.append(done)
            continue
        t = _test(a.values, reference.values, direction, win, fut, margin, rule.detect,
                  a.highs, reference.highs)
        seen, more = _extras(t, rule, win, margin)
        comparisons.append(Comparison(
            challenger=a.name, reference=reference.name, ratio=t.ratio,
            decision_interval=t.decision, beats=t.better, settled=t.better or t.futile,
            look=rounds, level=level, detectable=seen,
            more_rounds=None if t.better or t.futile else more))
    settled = all(c.settled for c in comparisons) or rounds >= rule.max_rounds
    beaters = [c for c in comparisons if c.beats]
    if not beaters:
        return _kept(seat, rounds, level, min_gain, comparisons,
                     f" (by at least {min_gain:.0%})" if min_gain else "", rule, settled,
                     direction)
    best = (max if direction == "maximize" else min)(beaters, key=lambda c: c.ratio.value)
    prefix = f"{seat.broken}; " if seat.broken else ""
    summary = (f"{prefix}{best.challenger} beats {reference.name} beyond noise: "
               f"x{best.decision_interval.describe(3)} over {best.look} interleaved rounds "
               f"({best.level:.1%} interval, adjusted for {k} challenger(s) and the looks "
               f"taken){seat.note}")
    return Verdict(reference=reference.name, winner=best.challenger, rounds=rounds,
                   level=level, min_gain=min_gain, comparisons=comparisons, summary=summary,
                   settled=settled, broken=seat.broken)
