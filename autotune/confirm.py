"""The confirmation round: the finalists, vLLM's defaults and the current profile measured again
side by side, and the decision made on those measurements alone.

Arms are measured in interleaved rounds, a fresh server each time, with the order rotated
from round to round (A B C, B C A, C A B, ...), so drift of the machine and the position in a
round hit every arm alike. Numbers from the search (or from another run, day or machine) never
enter the decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from autotune.objective import TrialResult
from autotune.scoring import score
from autotune.space import Objective, TrialParams
from autotune.stats import Estimate, mean_interval, paired_ratio
from autotune.verdict import ArmFigures, Role, Verdict, decide, decide_pareto

# Figures whose change against vLLM's defaults a profile states (besides the objective's).
KEY_METRICS = ("output_throughput", "request_throughput", "median_ttft_ms", "p95_ttft_ms",
               "median_tpot_ms", "p95_e2el_ms", "peak_memory_bytes")


@dataclass(frozen=True)
class Arm:
    name: str  # "vLLM defaults", "current profile", "trial 7"
    role: Role
    params: TrialParams
    trial: int | None = None  # the search trial it comes from


def same_settings(a: TrialParams, b: TrialParams) -> bool:
    return dict(a.args) == dict(b.args) and dict(a.env) == dict(b.env)


def distinct(arms: Sequence[Arm]) -> list[Arm]:
    """Arms with the same settings are measured once, under the first (most telling) role."""
    out: list[Arm] = []
    for a in arms:
        if not any(same_settings(a.params, b.params) for b in out):
            out.append(a)
    return out


def schedule(n_arms: int, rounds: int) -> list[tuple[int, int]]:
    """(round, arm) in the order they are measured: every arm once per round, the order
    rotated each round so that no arm always goes first."""
    return [(r, (r + i) % n_arms) for r in range(rounds) for i in range(n_arms)]


# the arms that are not search trials, by name
BASELINE_NAME = "vLLM defaults"
INCUMBENT_NAME = "current profile"


class ArmRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    trial: int | None
    args: dict[str, object]
    env: dict[str, str]
    objective: list[float | None]  # per round; None: that round failed or broke an SLO
    # multi-objective: each goal's value per round (None: that round failed or broke an SLO)
    goals: dict[str, list[float | None]] = {}
    failure: str | None = None
    figures: dict[str, Estimate]  # each metric over the rounds that served (basis: starts)
    vs_baseline: dict[str, Estimate] = {}  # paired ratios to vLLM's defaults


class Confirmation(BaseModel):
    """What the confirmation round measured and decided."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    direction: str
    rounds: int
    arms: list[ArmRecord]
    verdict: Verdict

    def arm(self, name: str | None) -> ArmRecord | None:
        return next((a for a in self.arms if a.name == name), None)


# (candidate, name of its record directory) -> the measurement of one fresh server
ConfirmRunner = Callable[[TrialParams, str], TrialResult]
RoundCallback = Callable[[int, Arm, TrialResult], None]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def confirm(arms: Sequence[Arm], rounds: int, objective: Objective, runner: ConfirmRunner,
            min_gain: float = 0.0, on_round: RoundCallback | None = None,
            max_loss: float = 0.05, replace_gain: float = 0.0) -> Confirmation:
    results: dict[int, list[TrialResult]] = {i: [] for i in range(len(arms))}
    for r, i in schedule(len(arms), rounds):
        result = runner(arms[i].params, f"confirm/round-{r + 1:02d}-{_slug(arms[i].name)}")
        results[i].append(result)
        if on_round is not None:
            on_round(r, arms[i], result)
    records = []
    for i, arm in enumerate(arms):
        values: list[float | None] = []
        failure = None
        for res in results[i]:
            s = score(objective, res)
            if s.feasible:
                values.append(s.value)
            else:
                values.append(None)
                if res.status != "ok":
                    why = f"{res.reason.value if res.reason else 'failed'}: {res.detail}"
                else:
                    why = "broke a constraint"
                failure = failure or why
        goals = {g.metric: [res.value(g.metric) if v is not None else None
                            for res, v in zip(results[i], values, strict=True)]
                 for g in objective.goals()} if objective.multi else {}
        records.append(ArmRecord(
            name=arm.name, role=arm.role, trial=arm.trial, args=dict(arm.params.args),
            env=dict(arm.params.env), objective=values, goals=goals, failure=failure,
            figures=_figures(results[i])))
    figures = [ArmFigures(a.name, a.role, tuple(a.objective), a.failure,
                          tuple(tuple(v) for v in a.goals.values())) for a in records]
    if objective.multi:
        verdict = decide_pareto(figures, [(g.metric, g.direction) for g in objective.goals()],
                                min_gain, max_loss, replace_gain)
    else:
        verdict = decide(figures, objective.direction, min_gain, replace_gain)
    base = next((i for i, a in enumerate(arms) if a.role == "baseline"), None)
    if base is not None:
        for i, rec in enumerate(records):
            rec.vs_baseline = {m: paired_ratio(_per_round(results[i], m),
                                               _per_round(results[base], m))
                               for m in dict.fromkeys((*(g.metric for g in
                                                          objective.goals()), *KEY_METRICS))}
    return Confirmation(metric=objective.metric, direction=objective.direction, rounds=rounds,
                        arms=records, verdict=verdict)


def _per_round(results: Sequence[TrialResult], metric: str) -> list[float | None]:
    return [r.value(metric) if r.status == "ok" else None for r in results]


def _figures(results: Sequence[TrialResult]) -> dict[str, Estimate]:
    names = sorted({k for r in results if r.status == "ok" for k in r.metrics})
    out = {}
    for name in names:
        est = mean_interval(_per_round(results, name), basis="starts")
        if not math.isnan(est.value):
            out[name] = est
    return out
