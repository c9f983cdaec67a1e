"""Pure: the sequential confirmation, look by look: who is measured, which decisions stand.

One function drives it for the run (confirm.py) and for the benchmark that states its error
rates (bench/verdicts.py), so the rule the documentation's figures describe is the one
shipped. After each complete round from the rule's first look on, the arms are judged; a
challenger settled (won, or shown not worth having) or stopped (it cannot be settled in the
rounds left) keeps that decision, as a sequential test ends at the first boundary it crosses.
A challenger settled without a win, or stopped, or that failed a round the reference served
(it cannot win), is measured no further; vLLM's defaults and
the current profile always are (either may have to be the reference), and so is a winner
while others are open (the winner is chosen among the winners on the rounds they shared). The
rounds end once every challenger is settled or stopped, or at the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.decide.findings import Comparison, Verdict
from autotune.decide.pairs import ArmFigures, Role
from autotune.decide.sequential import Rule

Judge = Callable[[Sequence[ArmFigures], Mapping[str, Comparison]], Verdict]


def measured_next(role: Role, decided: Comparison | None, out: bool = False) -> bool:
    """Whether an arm is measured in the next round, given its standing decision (`out`: it
    failed a round the reference served, so it cannot win)."""
    return role != "finalist" or ((decided is None or decided.beats) and not out)


def drive(rule: Rule, arms: Sequence[tuple[str, Role]], judge: Judge,
          measure_round: Callable[[int, Sequence[int]], None],
          figures: Callable[[], Sequence[ArmFigures]]) -> Verdict | None:
    """Measure round after round (`measure_round(r, arms to measure)`), judging
    `figures()` at each look with the decisions that stand, until the verdict is settled or
    the budget is spent. None: no look was taken (no round)."""
    frozen: dict[str, Comparison] = {}
    out: set[str] = set()
    verdict = None
    for r in range(rule.max_rounds):
        measure_round(r, [i for i, (name, role) in enumerate(arms)
                          if measured_next(role, frozen.get(name), name in out)])
        n = r + 1
        if not (rule.looks_at(n) or n == rule.max_rounds):
            continue
        verdict = judge(figures(), frozen)
        out.update(verdict.out)
        for c in verdict.comparisons:
            if (c.settled or c.stopped) and c.challenger not in frozen:
                frozen[c.challenger] = c
        if verdict.settled:
            break
    return verdict
