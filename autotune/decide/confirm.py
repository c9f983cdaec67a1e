"""The confirmation round: the finalists, vLLM's defaults and the current profile measured again
side by side, and the decision made on those measurements alone.

Arms are measured in interleaved rounds, a fresh server each time, in a balanced order
(Williams' design: over each block of rounds every arm takes every position in the round once,
and follows every other arm equally often), so drift of the machine, the position in a round
and the arm before hit every arm alike. After each complete round from the rule's minimum on,
the decision is looked at; a challenger settled without a win, or that can no longer be
settled, is measured no further, and the rounds stop once every challenger is settled or
stopped, or at the budget (looks.py, sequential.py). A slot the machine could not measure
(EnvironmentFailure: memory not back, a port taken) is measured again; rounds already
measured are passed in by `previous`, so an interrupted confirmation resumes where it
stopped. Numbers from the search (or from another run, day or machine) never enter the
decision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from autotune.core.errors import EnvironmentFailure
from autotune.core.stats import Estimate, mean_interval, paired_ratio
from autotune.decide.findings import Comparison, Verdict
from autotune.decide.looks import drive
from autotune.decide.pairs import ArmFigures, Role
from autotune.decide.scoring import score
from autotune.decide.sequential import Rule
from autotune.decide.verdict import judge
from autotune.measure.result import TrialResult
from autotune.space.goals import Objective
from autotune.space.params import TrialParams
from autotune.space.search import Confirm

log = logging.getLogger(__name__)

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


def rule_of(settings: Confirm) -> Rule:
    """The sequential rule a space's `confirm:` section declares."""
    return Rule(max_rounds=settings.rounds, min_rounds=settings.min_rounds,
                detect=settings.detect)


def order(n_arms: int, r: int) -> list[int]:
    """The arms of round `r` in the order they are measured: row r of a Williams design
    (n rows for an even number of arms, 2n for an odd one, then again). Every block of n rows
    is a Latin square, so over any number of rounds no arm takes a position more than once
    more than another arm does; over the whole design each arm follows each other equally
    often."""
    if n_arms <= 0:
        return []
    first, lo, hi = [0], 1, n_arms - 1
    while len(first) < n_arms:
        first.append(lo)
        lo += 1
        if len(first) < n_arms:
            first.append(hi)
            hi -= 1
    period = n_arms if n_arms % 2 == 0 else 2 * n_arms
    j = r % period
    row = [(x + j) % n_arms for x in first]
    return row[::-1] if j >= n_arms else row


def schedule(n_arms: int, rounds: int) -> list[tuple[int, int]]:
    """(round, arm) in the order they are measured, every arm once per round."""
    return [(r, i) for r in range(rounds) for i in order(n_arms, r)]


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
    highs: list[float | None] = []  # a discrete objective: the top of each round's bracket
    figures: dict[str, Estimate]  # each metric over the rounds that served (basis: starts)
    vs_baseline: dict[str, Estimate] = {}  # paired ratios to vLLM's defaults


class Confirmation(BaseModel):
    """What the confirmation round measured and decided."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    direction: str
    rounds: int  # measured
    max_rounds: int = 0  # the budget (0: recorded before the rounds were a budget)
    detect: float | None = None  # the smallest gain worth having, of the rule used
    arms: list[ArmRecord]
    verdict: Verdict

    def arm(self, name: str | None) -> ArmRecord | None:
        return next((a for a in self.arms if a.name == name), None)


# (candidate, name of its record directory) -> the measurement of one fresh server
ConfirmRunner = Callable[[TrialParams, str], TrialResult]
RoundCallback = Callable[[int, Arm, TrialResult], None]


def slug(name: str) -> str:
    """An arm's name as its rounds' folder names carry it."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def confirm(arms: Sequence[Arm], rounds: Rule | int, objective: Objective,
            runner: ConfirmRunner, min_gain: float = 0.0, on_round: RoundCallback | None = None,
            max_loss: float = 0.05, replace_gain: float = 0.0,
            previous: Callable[[str], TrialResult | None] | None = None,
            retries: int = 2) -> Confirmation:
    """Measure the arms round after round until the rule settles every challenger (an int:
    exactly that many rounds), and decide (looks.py drives the rounds). `previous(where)`: a
    slot's result already measured by an interrupted run of the same confirmation."""
    rule = rounds if isinstance(rounds, Rule) else Rule(max_rounds=rounds,
                                                        min_rounds=max(2, rounds))
    results: dict[int, list[TrialResult]] = {i: [] for i in range(len(arms))}
    changes = _changes(arms)
    goals = [(g.metric, g.direction) for g in objective.goals()] if objective.multi else [
        (objective.metric, objective.direction)]

    def measure_round(r: int, active: Sequence[int]) -> None:
        slots = [(i, f"confirm/round-{r + 1:02d}-{slug(arms[i].name)}")
                 for i in order(len(arms), r) if i in active]
        # a round measured whole before an interruption is taken as it was; a part of one is
        # measured again whole, so that every round's arms were measured side by side
        kept = [previous(where) for _, where in slots] if previous is not None else []
        whole = bool(kept) and all(k is not None for k in kept)
        for n, (i, where) in enumerate(slots):
            got = kept[n] if whole else None
            result = got if got is not None else _measure(runner, arms[i].params, where,
                                                          retries)
            results[i].append(result)
            if on_round is not None:
                on_round(r, arms[i], result)

    def figures() -> list[ArmFigures]:
        return [_arm_figures(rec, changes[i])
                for i, rec in enumerate(_records(arms, results, objective))]

    def judge_now(figs: Sequence[ArmFigures], frozen: Mapping[str, Comparison]) -> Verdict:
        return judge(figs, goals, min_gain, max_loss if objective.multi else 0.0,
                     replace_gain, rule, frozen)

    verdict = drive(rule, [(a.name, a.role) for a in arms], judge_now, measure_round,
                    figures)
    if verdict is None:  # no arm: nothing measured
        verdict = judge_now(figures(), {})
    return _confirmation(arms, results, objective, rule, verdict)


def _changes(arms: Sequence[Arm]) -> list[int]:
    """How many settings each arm changes from vLLM's defaults (the baseline arm's)."""
    base = next((a.params for a in arms if a.role == "baseline"), None)
    ref_args = dict(base.args) if base is not None else {}
    ref_env = dict(base.env) if base is not None else {}
    out = []
    for a in arms:
        args, env = dict(a.params.args), dict(a.params.env)
        out.append(sum(args.get(k) != ref_args.get(k) for k in {*args, *ref_args})
                   + sum(env.get(k) != ref_env.get(k) for k in {*env, *ref_env}))
    return out


def _measure(runner: ConfirmRunner, params: TrialParams, where: str, retries: int
             ) -> TrialResult:
    """A fault of the machine is never the candidate's: its slot is measured again."""
    for attempt in range(retries + 1):
        try:
            return runner(params, where)
        except EnvironmentFailure as exc:
            if attempt == retries:
                raise
            log.warning("%s: the machine could not measure (%s): measuring again", where, exc)
    raise AssertionError("unreachable")


def _records(arms: Sequence[Arm], results: dict[int, list[TrialResult]],
             objective: Objective) -> list[ArmRecord]:
    records = []
    for i, arm in enumerate(arms):
        values: list[float | None] = []
        highs: list[float | None] = []
        failure = None
        for res in results[i]:
            s = score(objective, res)
            est = res.metrics.get(objective.metric)
            if s.feasible and s.value > 0:
                values.append(s.value)
                highs.append(est.high if est is not None and est.basis == "bracket" else None)
            else:
                values.append(None)
                highs.append(None)
                if res.status != "ok":
                    why = f"{res.reason.value if res.reason else 'failed'}: {res.detail}"
                elif s.feasible:
                    why = f"{objective.metric} measured {s.value:g}: nothing served"
                else:
                    why = "broke a constraint"
                failure = failure or why
        goals = {g.metric: [res.value(g.metric) if v is not None else None
                            for res, v in zip(results[i], values, strict=True)]
                 for g in objective.goals()} if objective.multi else {}
        records.append(ArmRecord(
            name=arm.name, role=arm.role, trial=arm.trial, args=dict(arm.params.args),
            env=dict(arm.params.env), objective=values, goals=goals, failure=failure,
            highs=highs if any(h is not None for h in highs) else [],
            figures=_figures(results[i])))
    return records


def _arm_figures(a: ArmRecord, changes: int) -> ArmFigures:
    return ArmFigures(a.name, a.role, tuple(a.objective), a.failure,
                      tuple(tuple(v) for v in a.goals.values()), tuple(a.highs), changes)


def _confirmation(arms: Sequence[Arm], results: dict[int, list[TrialResult]],
                  objective: Objective, rule: Rule, verdict: Verdict) -> Confirmation:
    records = _records(arms, results, objective)
    base = next((i for i, a in enumerate(arms) if a.role == "baseline"), None)
    if base is not None:
        for i, rec in enumerate(records):
            n = min(len(results[i]), len(results[base]))  # the rounds both were measured
            rec.vs_baseline = {m: paired_ratio(_per_round(results[i][:n], m),
                                               _per_round(results[base][:n], m))
                               for m in dict.fromkeys((*(g.metric for g in
                                                          objective.goals()), *KEY_METRICS))}
            # the winner's gain on what was decided is stated with the interval the
            # decision used: it covers the choice among finalists and the looks taken
            won = next((c for c in verdict.comparisons if c.challenger == rec.name
                        and c.reference == records[base].name and c.beats), None)
            if won is not None:
                rec.vs_baseline.update(won.decision_goals or {objective.metric:
                                                              won.decision_interval})
    return Confirmation(metric=objective.metric, direction=objective.direction,
                        rounds=max((len(v) for v in results.values()), default=0),
                        max_rounds=rule.max_rounds, detect=rule.detect, arms=records,
                        verdict=verdict)


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
