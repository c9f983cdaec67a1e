"""Pure: the one winner when several arms beat the reference, on the confirmation's own figures.

1. An arm that another winner beats (the same paired test as against the reference, without
   the margin: better beyond noise on a goal, every other goal held, or failing no round it
   served while this one failed some) drops out.
2. Of the rest, the best on the primary goal (its paired ratio to the reference) and every one
   that it does not beat beyond noise on the primary goal cannot be told apart on it.
3. Of those, the one that changes the fewest of vLLM's defaults wins (a shorter profile is
   easier to keep and to upgrade), then the better primary figure, then the name.

The list order of the arms never decides: vLLM's defaults (no change) win only when no finalist
is better beyond noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autotune.decide.pairs import ArmFigures, Goal, compare


@dataclass(frozen=True)
class Choice:
    winner: str
    why: str  # "" when one arm beat the reference


def choose(beaters: Mapping[str, float], arms: Mapping[str, ArmFigures],
           goals: Sequence[Goal], win: float, fut: float, max_loss: float) -> Choice:
    """The winner among the arms that beat the reference (at least one), each with its
    primary goal's paired ratio to the reference."""
    names = list(beaters)
    if len(names) == 1:
        return Choice(names[0], "")
    sign = 1.0 if goals[0][1] == "maximize" else -1.0
    gain = {n: sign * math.log(r) if r > 0 and math.isfinite(r) else -math.inf
            for n, r in beaters.items()}

    def beats(x: str, y: str) -> bool:
        return compare(arms[x], arms[y], goals, win, fut, 0.0, 0.0, max_loss).beats

    left = [y for y in names if not any(beats(x, y) for x in names if x != y)]
    out = [n for n in names if n not in left]
    if not left:  # beaten in a circle (possible with several goals): none drops out
        left = names
    top = max(left, key=lambda n: (gain[n], n))
    primary = goals[0][0]
    tied = [n for n in left if n == top or not compare(
        arms[top], arms[n], goals[:1], win, fut, 0.0, 0.0, 0.0).tests[primary].better]
    pick = min(tied, key=lambda n: (arms[n].changes, -gain[n], n))
    why = [f"{len(names)} arms beat the reference"]
    if out:
        why.append(f"{', '.join(out)} beaten beyond noise by another of them")
    if len(tied) > 1:
        why.append(f"{', '.join(tied)} cannot be told apart on {primary}: {pick} changes the "
                   f"fewest of vLLM's defaults ({arms[pick].changes})")
    else:
        why.append(f"{pick} is the best of the rest on {primary}")
    return Choice(pick, "; ".join(why))
