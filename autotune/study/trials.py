"""A trial's result written into the study, and finished trials read back: roles, figures,
feasibility, best and finalists.

What a trial measured is stored in its user attrs as serialised `Estimate`s and read back
through the same model here; nothing else writes or parses them.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.core.stats import Estimate, mean_interval
from autotune.decide.pareto import Point, front, ranked
from autotune.measure.result import TrialResult
from autotune.space.goals import Objective
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, baseline_params, resolve

BASELINE = "baseline"  # the trial that measures vLLM's defaults
ROLE = "role"  # user attr naming a trial's role; search trials have none


def is_baseline(t: FrozenTrial) -> bool:
    return t.user_attrs.get(ROLE) == BASELINE


def metrics_of(t: FrozenTrial) -> dict[str, Estimate]:
    raw: dict[str, Any] = t.user_attrs.get("metrics") or {}
    return {k: Estimate.model_validate(v) for k, v in raw.items() if v is not None}


def objective_estimate(t: FrozenTrial) -> Estimate:
    """The objective as measured in the trial's rounds (its intermediate values)."""
    values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    if values:
        return mean_interval(values)
    v = primary_value(t)
    return Estimate.single(v) if v is not None else Estimate(value=math.nan, n=0)


def primary_value(t: FrozenTrial) -> float | None:
    """The first objective's value (a multi-objective trial has several)."""
    return t.values[0] if t.values else None


def feasible(t: FrozenTrial) -> bool:
    if t.user_attrs.get("status") != "ok":
        return False
    return all(v <= 0 for v in t.constraints.values())


def _ranked(study: optuna.Study, objective: Objective | None = None) -> list[FrozenTrial]:
    """Feasible finished trials, best first: by the first objective, or, in a multi-objective
    study, the Pareto front in the order of the objective's `choose` rule."""
    ok = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
          if feasible(t) and t.values]
    if objective is not None and objective.multi:
        pts = [Point(t, tuple(t.values)) for t in ok if len(t.values) == len(objective.goals())]
        return [p.key for p in ranked(front(pts, objective.goals()), objective)]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(ok, key=lambda t: t.values[0], reverse=maximize)


def pareto_trials(study: optuna.Study, objective: Objective) -> list[FrozenTrial]:
    """The front of a multi-objective study (the chosen point first); [] for one objective."""
    return _ranked(study, objective) if objective.multi else []


def best_trial(study: optuna.Study, objective: Objective | None = None) -> FrozenTrial | None:
    """The best feasible finished trial (in a multi-objective study, the point of the front
    the objective's rule picks), or None when no trial met every constraint."""
    ranked_ = _ranked(study, objective)
    return ranked_[0] if ranked_ else None


def finalists(study: optuna.Study, k: int, settings_of: Any,
              objective: Objective | None = None) -> list[FrozenTrial]:
    """The k best feasible search trials with distinct settings, vLLM's defaults excluded
    (they are always confirmed as the baseline). `settings_of(trial)` gives comparable
    settings, so a candidate drawn twice is confirmed once."""
    out: list[FrozenTrial] = []
    if k <= 0:
        return out
    seen: list[Any] = []
    seen += [settings_of(t) for t in study.get_trials(deepcopy=False) if is_baseline(t)]
    for t in _ranked(study, objective):
        s = settings_of(t)
        if is_baseline(t) or s in seen:
            continue  # vLLM's defaults, drawn again by the sampler, are still the baseline
        seen.append(s)
        out.append(t)
        if len(out) == k:
            break
    return out


# Trials that used up budget. A trial interrupted by a dying tuner becomes FAIL and is re-run.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


REPEAT_OF = "repeat_of"  # user attr: the earlier trial whose measurement answered this one


def measured_twin(study: optuna.Study, space: SearchSpace, params: TrialParams,
                  number: int) -> FrozenTrial | None:
    """An earlier trial that measured exactly these settings (ok or failed), if any."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number == number or t.user_attrs.get(REPEAT_OF) is not None:
            continue
        if t.user_attrs.get("status") not in ("ok", "failed"):
            continue
        if (baseline_params(space) if is_baseline(t) else resolve(space, t.params)) == params:
            return t
    return None


STALLS = "stalls"  # user attr: how many rounds had a first-token stall (measure/stalls.py)


def record(trial: optuna.Trial, result: TrialResult, constraints: dict[str, float]) -> None:
    trial.set_user_attr("status", result.status)
    trial.set_user_attr("reason", result.reason.value if result.reason else None)
    trial.set_user_attr("detail", result.detail)
    trial.set_user_attr("command", result.command)
    trial.set_user_attr("env", result.env)
    trial.set_user_attr("metrics", {k: v.model_dump(mode="json")
                                    for k, v in result.metrics.items()})
    trial.set_user_attr("measure_s", result.measure_s)
    # every level's figures with their intervals (result.json beside the log has the rounds)
    trial.set_user_attr("levels", [
        {"label": lv.label, "level": lv.level, "server": lv.server,
         "metrics": {k: v.model_dump(mode="json") for k, v in lv.metrics.items()}}
        for lv in result.levels])
    trial.set_user_attr("round_values", result.round_values)
    if result.status == "pruned":
        trial.set_user_attr("saved_s", result.saved_s)
    if result.log_tail:
        trial.set_user_attr("log_tail", result.log_tail[-2000:])
    if result.slot:
        trial.set_user_attr("slot", result.slot)
    if result.cores:
        trial.set_user_attr("cores", result.cores)
    if result.quality_outputs:
        trial.set_user_attr("quality_outputs", result.quality_outputs)
    stalls = result.stalls()
    if stalls:
        trial.set_user_attr(STALLS, stalls)
    for key, value in constraints.items():
        trial.set_constraint(key, value)


def result_of(twin: FrozenTrial) -> TrialResult:
    """A finished trial's result, as recorded in the study, for a repeat of it."""
    a = twin.user_attrs
    return TrialResult(
        status=a["status"], reason=a.get("reason"),
        detail=f"the same settings as trial {twin.number}, answered from its measurement "
               f"(no server started){': ' + a['detail'] if a.get('detail') else ''}",
        command=a.get("command") or [], env=a.get("env") or {},
        metrics={k: Estimate.model_validate(v) for k, v in (a.get("metrics") or {}).items()},
        round_values=a.get("round_values") or [], measure_s=0.0,
        log_tail=a.get("log_tail") or "")


SURPLUS = "surplus"  # user attr: a trial started beyond a shared budget, handed back (budget.py)


def shown(t: FrozenTrial) -> bool:
    """Whether a trial belongs in tables and reports: not a queued candidate, nor a trial
    that handed its candidate back to the other workers without measuring anything."""
    return t.state is not TrialState.WAITING and not t.user_attrs.get(SURPLUS)


def queued_note(study: optuna.Study) -> str | None:
    """What a finished run left queued and unmeasured (start-up screens or profiles of other
    hardware beyond the budget, say), and how they get measured; None when nothing is."""
    n = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if n == 0:
        return None
    them = "it" if n == 1 else "them"
    return (f"{n} queued candidate{'' if n == 1 else 's'} not measured: the budget was spent "
            f"before {them}; `autotune run` on this study with a larger --trials measures "
            f"{them} first")


NO_START_ATTR = "no_start"  # user attr: refused before any start (a rule, the memory check)
def counted_trials(study: optuna.Study) -> int:
    """Trials that used the budget: measured ones; not repeats answered from the study nor
    candidates refused before a start."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=COUNTED)
               if not t.user_attrs.get(NO_START_ATTR) and t.user_attrs.get(REPEAT_OF) is None)


def params_of(space: SearchSpace, t: FrozenTrial) -> TrialParams:
    """The settings a trial measures (vLLM's defaults for the baseline)."""
    return baseline_params(space) if is_baseline(t) else resolve(space, t.params)


def seen_params(study: optuna.Study, space: SearchSpace) -> list[TrialParams]:
    """Every candidate a finished trial had (measured, refused or repeated)."""
    return [params_of(space, t) for t in study.get_trials(deepcopy=False, states=COUNTED)]


def no_starts(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=COUNTED)
               if t.user_attrs.get(NO_START_ATTR))
