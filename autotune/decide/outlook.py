"""Pure: what one comparison could have seen, the rounds it would still need, its chances.

All three are for the test actually applied (pairs.py): every goal that must hold (a gain on
one goal is found only where the others are shown held), the margin a win must clear, a
discrete objective's levels (nothing finer than two of its steps is found), the look's level
(the looks taken and the comparisons sharing the rate). The goals' tests are taken as
independent, the noise seen as the noise there is.

- `detectable`: per goal, the smallest gain found with 80% probability at this look (exact
  noncentral t), the other goals held at no change; None where no gain would be (the goals
  that must hold are too noisy to show it).
- `more_rounds`: the rounds the same test needs to find a gain of `detect` beyond the margin
  with 80% probability, less those measured (at least 1 for an open comparison); None where
  no number of rounds would.
- `win_chance`, `settle_chance`: the chance that a look still to come finds a win, or rules a
  win out, were the rounds to come like those seen (the conditional power at the trend seen);
  a comparison with both below `Rule.stop_below` cannot be settled in the rounds left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autotune.decide.pairs import Goal, Pair, loss_of, margin_of
from autotune.decide.power import MAX_ROUNDS, POWER, chance, detectable_gain, power_at
from autotune.decide.sequential import Rule


@dataclass(frozen=True)
class Outlook:
    detectable: dict[str, float | None]  # a factor above 1, whichever the direction
    more_rounds: int | None
    win_chance: float
    settle_chance: float


def outlook(pair: Pair, goals: Sequence[Goal], rule: Rule, n: int, k: int, min_gain: float,
            max_loss: float, settled: bool = False) -> Outlook:
    """A settled comparison needs no rounds and has no chances left to weigh."""
    win = rule.win_tail(n, k)
    margins = {m: margin_of(d, min_gain) for m, d in goals}
    losses = {m: loss_of(d, max_loss) for m, d in goals}
    tests = pair.tests
    found: dict[str, float | None] = {}
    for metric, _ in goals:
        t = tests[metric]
        def held(sd: float, m: str, n: int = t.n) -> float:
            return power_at(-losses[m], sd, n, win)

        holds = _holds(pair, goals, metric, held)
        d = detectable_gain(t.sd, t.n, win, POWER / holds) if holds > POWER else None
        found[metric] = None if d is None else math.exp(margins[metric] + t.res + d)
    if settled:
        return Outlook(found, None, 1.0, 1.0)
    return Outlook(found, _more(pair, goals, rule, n, win, losses),
                   *_chances(pair, goals, rule, n, k, margins, losses))


def _holds(pair: Pair, goals: Sequence[Goal], metric: str,
           p: Callable[[float, str], float]) -> float:
    """The product over the goals other than `metric` of p(noise, goal)."""
    out = 1.0
    for other, _ in goals:
        if other != metric:
            t = pair.tests[other]
            out *= p(t.sd, other) if math.isfinite(t.sd) else 0.0
    return out


def _more(pair: Pair, goals: Sequence[Goal], rule: Rule, n: int, win: float,
          losses: dict[str, float]) -> int | None:
    best: int | None = None
    for metric, _ in goals:
        t = pair.tests[metric]
        effect = math.log1p(rule.detect) - t.res
        if not math.isfinite(t.sd) or effect <= 0:
            continue

        def power(rounds: int, t_sd: float = t.sd, metric: str = metric,
                  effect: float = effect) -> float:
            holds = _holds(pair, goals, metric,
                           lambda s, m: power_at(-losses[m], s, rounds, win))
            return power_at(effect, t_sd, rounds, win) * holds

        rounds = 2
        while power(rounds) < POWER:
            rounds *= 2
            if rounds > MAX_ROUNDS:
                break
        else:
            lo = max(2, rounds // 2)
            while lo < rounds:
                mid = (lo + rounds) // 2
                if power(mid) >= POWER:
                    rounds = mid
                else:
                    lo = mid + 1
            best = rounds if best is None else min(best, rounds)
    return None if best is None else max(1, best - n)


def _chances(pair: Pair, goals: Sequence[Goal], rule: Rule, n: int, k: int,
             margins: dict[str, float], losses: dict[str, float]) -> tuple[float, float]:
    if pair.beats:
        return 1.0, 1.0
    if pair.ours_failed:
        return 0.0, 1.0
    later = [m for m in range(n + 1, rule.max_rounds + 1) if rule.looks_at(m)]
    wins = [(m, rule.win_tail(m, k)) for m in later]
    futs = [(m, rule.futility_tail(m, k)) for m in later]
    tests = pair.tests
    if any(not math.isfinite(t.sd) for t in tests.values()):
        return 1.0, 1.0  # too few rounds to tell: nothing is stopped on it
    win = 0.0
    for metric, _ in goals:
        t = tests[metric]
        holds = _holds(pair, goals, metric,
                       lambda s, m: chance(tests[m].mean, s, n, wins, losses[m], +1))
        win = max(win, chance(t.mean, t.sd, n, wins, margins[metric], +1) * holds)
    futile = 1.0
    refuted = 0.0
    for metric, _ in goals:
        t = tests[metric]
        worth = margins[metric] + max(math.log1p(rule.detect), t.res)
        futile *= chance(t.fut_mean, t.sd, n, futs, worth, -1)
        if len(goals) > 1:
            refuted = max(refuted, chance(t.fut_mean, t.sd, n, futs, losses[metric], -1))
    return win, max(futile, refuted)
