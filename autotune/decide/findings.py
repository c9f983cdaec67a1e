"""Pure: what a confirmation's decision records: each comparison, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from autotune.core.stats import Estimate
from autotune.decide.pairs import ArmFigures


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
    detectable: float | None = None  # the primary goal's ratio found with 80% probability
    more_rounds: int | None = None  # unsettled: rounds the noise seen implies are needed
    # multi-objective: every goal's ratio (95%) and where the decision interval lies
    goals: dict[str, Estimate] = {}
    decision_goals: dict[str, Estimate] = {}
    better_on: list[str] = []
    worse_on: list[str] = []
    unproven_on: list[str] = []  # neither better nor shown to lose at most max_loss
    detectable_goals: dict[str, float | None] = {}  # each goal's, the others held
    reference_failed: int = 0  # rounds the reference failed and this one served
    both_failed: int = 0  # rounds both failed (left out)
    on_failures: bool = False  # beats because the reference failed rounds it served
    win_chance: float | None = None  # open: the chance a later look finds a win
    settle_chance: float | None = None  # open: the chance a later look rules one out
    stopped: bool = False  # open, and could not be settled in the rounds left: not measured
    # open, and stopped because this winner is better beyond noise on the primary goal: it
    # cannot become the one chosen (choose.py), so it cannot change the outcome
    outranked_by: str | None = None


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str
    winner: str | None
    rounds: int
    level: float  # the confidence level of each decision interval
    min_gain: float
    comparisons: list[Comparison]
    summary: str
    settled: bool = True  # every challenger settled or stopped: the confirmation may stop
    detectable: float | None = None  # the largest of the comparisons' (None: none made)
    more_rounds: int | None = None
    broken: str | None = None  # the current profile failed most rounds: declared broken
    choice: str = ""  # several arms beat the reference: how the winner was chosen
    stopped: list[str] = []  # challengers stopped as unsettleable
    # challengers that failed a round the reference served: they cannot win, and are not
    # compared
    out: list[str] = []


@dataclass(frozen=True)
class Seat:
    reference: ArmFigures | None
    broken: str | None
    note: str  # the reference missed rounds: said in the summary


