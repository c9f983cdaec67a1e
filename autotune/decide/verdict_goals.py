"""Pure: the confirmation's decision when the objective has several goals (a Pareto front).

A challenger beats the reference when, on measurements paired by round, it is better beyond
noise on at least one goal (by `min_gain`) and its interval on every other goal shows a loss
of at most `max_loss` (non-inferiority: an interval too wide to show it is not enough; "not
worse" is measured, not assumed). Each interval is taken at the sequential rule's level for
this look, divided among challengers x goals. A challenger is settled once it wins, once it is
shown to lose more than `max_loss` on a goal, or once no goal can still gain `detect`. A
measured loss within `max_loss` is held, not worse; "worse" is a loss beyond `max_loss`. When
several beat the reference, choose.py picks one on these figures (never the list order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autotune.decide.findings import Comparison, Verdict
from autotune.decide.pairs import ArmFigures, Direction
from autotune.decide.sequential import Rule
from autotune.decide.verdict import judge


def decide_pareto(arms: Sequence[ArmFigures], goals: Sequence[tuple[str, Direction]],
                  min_gain: float = 0.0, max_loss: float = 0.05, replace_gain: float = 0.0,
                  rule: Rule | None = None, frozen: Mapping[str, Comparison] | None = None
                  ) -> Verdict:
    return judge(arms, goals, min_gain, max_loss, replace_gain, rule, frozen)
