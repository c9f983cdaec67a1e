"""What every `--json` of autotune writes, as one schema per command (docs/json.md prints them).

Numbers are numbers: every figure is `{value, low, high, n, basis}` (`null` where it is not
known: no interval from one reading, no value from no served request); arms of a
confirmation are keyed by a stable id (`vllm-defaults`, `current-profile`, `trial-7`) with
their display name as a field; a trial says what every table says of it (study.standing).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from optuna.trial import FrozenTrial
from pydantic import BaseModel, ConfigDict

from autotune.core.stats import Estimate
from autotune.decide.confirm import Confirmation
from autotune.fleet.plan import Row
from autotune.space.goals import Objective
from autotune.study.standing import Miss, standing
from autotune.study.trials import STALLS, is_baseline, metrics_of


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Figure(_Doc):
    """A figure with its 95% interval; `n` observations of kind `basis`."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    basis: str

    @classmethod
    def of(cls, e: Estimate) -> Figure:
        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)
        return cls(value=num(e.value), low=num(e.low), high=num(e.high), n=e.n, basis=e.basis)


def figures(found: dict[str, Estimate]) -> dict[str, Figure]:
    return {k: Figure.of(v) for k, v in found.items()}


class Missed(_Doc):
    """A constraint a measured trial missed: `by` is how far past its bound, relative to it
    (0.61: 61% above its max)."""

    metric: str
    bound: Literal["max", "min"]
    limit: float | None
    measured: Figure | None
    by: float

    @classmethod
    def of(cls, m: Miss) -> Missed:
        return cls(metric=m.metric, bound="max" if m.side == "max" else "min", limit=m.limit,
                   measured=None if m.measured is None else Figure.of(m.measured),
                   by=round(m.by, 6))


Status = Literal["ok", "infeasible", "failed", "pruned", "running"]


class TrialDoc(_Doc):
    """One search trial as every table shows it: `reason` is a failure's cause, or for an
    infeasible trial the constraints it missed (each in `missed`, with numbers)."""

    number: int
    vllm_defaults: bool
    params: dict[str, Any]
    status: Status
    reason: str | None
    missed: list[Missed]
    metrics: dict[str, Figure]
    stalls: str | None  # how many of its rounds had a first-token stall, and how long

    @classmethod
    def of(cls, t: FrozenTrial, objective: Objective | None) -> TrialDoc:
        metrics = metrics_of(t)
        s = standing(t, objective, metrics)
        status: Status = s.status if s.status in (  # type: ignore[assignment]
            "ok", "infeasible", "failed", "pruned", "running") else "failed"
        return cls(number=t.number, vllm_defaults=is_baseline(t), params=dict(t.params),
                   status=status, reason=s.reason, missed=[Missed.of(m) for m in s.missed],
                   metrics=figures(metrics), stalls=t.user_attrs.get(STALLS))


def arm_id(role: str, trial: int | None) -> str:
    """An arm's stable id: its role, or the search trial it came from."""
    if role == "baseline":
        return "vllm-defaults"
    if role == "incumbent":
        return "current-profile"
    return f"trial-{trial}" if trial is not None else role


class ArmDoc(_Doc):
    name: str  # as the tables show it
    role: str
    trial: int | None
    failure: str | None
    figures: dict[str, Figure]  # means over the rounds it served (basis: starts)
    vs_baseline: dict[str, Figure]  # paired ratios to vLLM's defaults


class ComparisonDoc(_Doc):
    challenger: str  # arm id
    reference: str  # arm id
    ratio: Figure  # challenger / reference, 95%
    decision_interval: Figure  # at `level`, the interval the decision was made on
    level: float
    beats: bool
    settled: bool
    detectable: float | None
    more_rounds: int | None
    stopped: bool  # could no longer be settled in the rounds left: measured no further
    reference_failed: int  # rounds the reference failed and the challenger served
    both_failed: int  # rounds both failed (they tell nothing between them)
    on_failures: bool  # the win rests on the reference's failed rounds
    outranked_by: str | None  # stopped: this winner (arm id) is better beyond noise on the
    # primary goal, so the challenger cannot change the outcome


class ConfirmationDoc(_Doc):
    metric: str
    direction: str
    rounds: int
    max_rounds: int
    detect: float | None
    settled: bool
    detectable: float | None
    more_rounds: int | None
    broken: str | None
    summary: str
    winner: str | None  # arm id
    choice: str
    stopped: list[str]  # arm ids
    out: list[str]  # arm ids: failed a round the reference served, so cannot win
    arms: dict[str, ArmDoc]  # by arm id
    comparisons: list[ComparisonDoc]

    @classmethod
    def of(cls, conf: Confirmation) -> ConfirmationDoc:
        ids = {a.name: arm_id(a.role, a.trial) for a in conf.arms}
        v = conf.verdict
        return cls(
            metric=conf.metric, direction=conf.direction, rounds=conf.rounds,
            max_rounds=conf.max_rounds, detect=conf.detect, settled=v.settled,
            detectable=v.detectable, more_rounds=v.more_rounds, broken=v.broken,
            summary=v.summary, winner=None if v.winner is None else ids.get(v.winner, v.winner),
            choice=v.choice, stopped=[ids.get(n, n) for n in v.stopped],
            out=[ids.get(n, n) for n in v.out],
            arms={ids[a.name]: ArmDoc(name=a.name, role=a.role, trial=a.trial,
                                      failure=a.failure, figures=figures(a.figures),
                                      vs_baseline=figures(a.vs_baseline)) for a in conf.arms},
            comparisons=[ComparisonDoc(
                challenger=ids.get(c.challenger, c.challenger),
                reference=ids.get(c.reference, c.reference), ratio=Figure.of(c.ratio),
                decision_interval=Figure.of(c.decision_interval), level=c.level,
                beats=c.beats, settled=c.settled, detectable=c.detectable,
                more_rounds=c.more_rounds, stopped=c.stopped,
                reference_failed=c.reference_failed, both_failed=c.both_failed,
                on_failures=c.on_failures,
                outranked_by=None if c.outranked_by is None else ids.get(c.outranked_by,
                                                                          c.outranked_by))
                for c in v.comparisons])


class Chosen(_Doc):
    """The settings the verdict chose (what the profile holds when one was written)."""

    arm: str | None  # arm id in the confirmation (None: no confirmation was needed)
    name: str
    trial: int | None  # the search trial (None: vLLM's defaults or the current profile)
    vllm_defaults: bool


class RunDoc(_Doc):
    """`autotune run --json` (`retune --json` adds `status`, `exit_code` and its own keys)."""

    decided: bool
    deferred: bool
    verdict: str
    profile: str | None
    written: bool
    study: str
    chosen: Chosen | None
    search_best_trial: int | None  # the search's best on its own figures (one start each)
    trials: list[TrialDoc]
    queued: int  # candidates left queued, unmeasured: a run with a larger --trials takes them
    confirmation: ConfirmationDoc | None


class ReportDoc(_Doc):
    """`autotune report --json`."""

    study: str
    html: str
    markdown: str
    verdict: str
    note: str | None  # a profile's run that the study no longer holds, said plainly
    profile: str | None
    chosen_trial: int | None
    failed: int
    trials: list[TrialDoc]
    confirmation: ConfirmationDoc | None
    importances: dict[str, float]  # {} when not computed: importances_note says why
    importances_note: str | None
    missing: list[str]


class GoalDoc(_Doc):
    metric: str
    direction: Literal["maximize", "minimize"]


class PointDoc(_Doc):
    trial: int
    vllm_defaults: bool
    chosen: bool
    args: dict[str, Any]
    env: dict[str, str]
    figures: dict[str, Figure]
    knee_distance: float


class FrontDoc(_Doc):
    """`autotune pareto --json`: the front, the chosen point first."""

    study: str
    goals: list[GoalDoc]
    choose: str
    points: list[PointDoc]


class Span(_Doc):
    """A figure a plan derives from a card, with the range the card's interval gives it."""

    value: float
    low: float
    high: float


class PlanRowDoc(_Doc):
    hardware: str  # the profile's hardware key
    profile: str  # its path
    usable: bool  # its card answers the asked load and SLO
    note: str  # why not, or how it answers (measured at a stricter SLO)
    capacity: Figure | None  # the card's, over its rounds
    counted: float | None  # what the plan counts on: the capacity's low end
    replicas: Span | None
    price_per_h: float | None  # from --prices: its hardware key's, else its target's
    cost_per_h: Span | None
    cost_per_m_output_tokens: Span | None  # a rate load only

    @classmethod
    def of(cls, r: Row) -> PlanRowDoc:
        def span(v: float | None, rng: tuple[float, float] | None) -> Span | None:
            return None if v is None or rng is None else Span(value=v, low=rng[0], high=rng[1])
        return cls(hardware=r.hardware, profile=r.path, usable=r.usable, note=r.note,
                   capacity=None if r.held is None else Figure.of(r.held), counted=r.counted,
                   replicas=span(r.replicas, r.replicas_range), price_per_h=r.price_per_h,
                   cost_per_h=span(r.cost_per_h, r.cost_per_h_range),
                   cost_per_m_output_tokens=span(r.cost_per_m_tokens,
                                                 r.cost_per_m_tokens_range))


class LoadDoc(_Doc):
    over: Literal["rate", "concurrency"]
    value: float  # per second for a rate, in flight for a concurrency
    text: str  # as given


class PlanDoc(_Doc):
    """`autotune plan --json`: cheapest first, then the profiles whose card does not answer."""

    model: str
    load: LoadDoc
    slo: dict[str, float]
    rows: list[PlanRowDoc]


SCHEMAS: dict[str, type[BaseModel]] = {"run": RunDoc, "report": ReportDoc, "pareto": FrontDoc,
                                       "plan": PlanDoc}


def schema_blocks() -> str:
    """Each command's JSON Schema as docs/json.md prints it (`python -m autotune.app.schema`)."""
    import json

    return "\n\n".join(f"<!-- schema: {name} -->\n```json\n"
                        f"{json.dumps(model.model_json_schema(), indent=2)}\n```"
                        for name, model in SCHEMAS.items())


if __name__ == "__main__":
    print(schema_blocks())

__all__ = ["SCHEMAS", "ConfirmationDoc", "Figure", "FrontDoc", "PlanDoc", "ReportDoc", "RunDoc",
           "TrialDoc", "arm_id"]
