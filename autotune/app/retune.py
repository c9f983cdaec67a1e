"""A re-tune: a run whose incumbent is the current profile, made for a nightly scheduler.

It warm-starts the search (the study continues where the last night left it; a study that
had to start afresh is seeded with the profile's settings and the previous study's best),
searches a budget of new candidates, and ends with the confirmation round, the current
profile in it. The profile is replaced only by settings that beat it there beyond noise.

When what the figures depend on changed (vLLM, the hardware's detail, the GPU driver or the
CUDA version, the model's revision), the old results are not trusted: it says what changed and
searches twice the budget. When the current profile now measures worse than its own recorded
figures, beyond both intervals, it raises the regression alarm, whether or not anything better
was found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autotune.app.inputs import RunConfig, run_profile_path, run_space
from autotune.app.run import RunOutcome, run
from autotune.core.errors import UserError
from autotune.decide.confirm import INCUMBENT_NAME, Arm, Confirmation, RoundCallback, same_settings
from autotune.engine.argv import vllm_version
from autotune.engine.hardware import HardwareInfo, detect_hardware, resolve_target
from autotune.engine.probes import Probe, SystemProbe
from autotune.model.resolve import resolve_model
from autotune.profiles.identity import driver_changes, hardware_key, model_revision, same_hardware
from autotune.profiles.incumbent import find_incumbent
from autotune.profiles.profile import Profile, read_profile, served_as_measured
from autotune.space.params import ENV_PREFIX, CategoricalParam, FloatParam, IntParam, TrialParams
from autotune.space.search import SearchSpace
from autotune.study.storage import NoDatabase, open_existing
from autotune.study.trials import feasible
from autotune.study.tuner import TrialCallback

# exit codes, distinct for schedulers (usage errors 2 and failures 1 as for every command)
UNCHANGED = 0
UPDATED = 10
REGRESSION = 11
FAILED = 1
BUSY = 75  # another run holds the profile's lock (EX_TEMPFAIL: try again later)

WIDEN = 2  # how many times the budget, when the old results cannot be trusted
SEEDS_FROM_STUDY = 3


@dataclass
class RetunePlan:
    path: Path
    current: Profile | None
    changes: list[str]  # what changed since the profile was measured
    trials: int  # new trials to search
    seeds: tuple[dict[str, Any], ...]  # for a study that starts afresh


@dataclass
class RetuneOutcome:
    status: str  # unchanged | updated | regression | failed
    exit_code: int
    plan: RetunePlan
    run: RunOutcome
    regression: str | None = None

    def summary(self) -> dict[str, Any]:
        """What a scheduler or another tool reads (`--json`): the run's summary and what
        the re-tune adds."""
        from autotune.app.summary import run_summary

        return {**run_summary(self.run), "status": self.status, "exit_code": self.exit_code,
                "profile": str(self.plan.path), "changes": self.plan.changes,
                "regression": self.regression, "new_trials": self.plan.trials}


def what_changed(current: Profile, hardware: HardwareInfo, vllm: str, revision: str
                 ) -> list[str]:
    m = current.meta
    out = []
    if m.vllm_version != vllm:
        out.append(f"vLLM {m.vllm_version} -> {vllm}")
    here = hardware.describe()
    if not same_hardware(m.hardware, here):
        old, new = hardware_key(m.hardware), hardware_key(here)
        out += [f"hardware {k}: {old.get(k)} -> {new.get(k)}" for k in new
                if old.get(k) != new.get(k)]
    out += driver_changes(m.hardware, here)
    if m.model_revision != revision and "unknown" not in (m.model_revision, revision):
        out.append(f"model revision {m.model_revision} -> {revision}")
    return out


def within(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """The part of a candidate the space can express (names it tunes, values it allows).
    Environment values are strings in a profile: they match a choice by their text."""
    out = {}
    for name, spec in space.tuned().items():
        if name not in params:
            continue
        v = params[name]
        if isinstance(spec, CategoricalParam):
            match = [c for c in spec.choices if c == v or (
                isinstance(v, str) and c is not None and str(c) == v)]
            if match:
                out[name] = match[0]
        elif isinstance(spec, (IntParam, FloatParam)) and isinstance(
                v, (int, float)) and spec.low <= v <= spec.high:
            out[name] = v
    return out


def profile_params(p: Profile) -> dict[str, Any]:
    """A profile's settings as Optuna parameters (vLLM options as is, env as `env:NAME`)."""
    return {**{k: v for k, v in p.settings.items() if k != "model"},
            **{ENV_PREFIX + k: v for k, v in p.meta.env.items()}}


def previous_best(storage: str, study: str, n: int) -> list[dict[str, Any]]:
    """The best feasible trials of the study that made the profile (empty if it is gone).
    Read-only: a storage that is not there is not created here (the run creates it)."""
    try:
        s = optuna.load_study(study_name=study, storage=open_existing(storage))
    except (KeyError, ValueError, NoDatabase):
        return []
    if len(s.directions) != 1:
        return []
    sign = -1 if s.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    done = [t for t in s.get_trials(deepcopy=False,
                                    states=(optuna.trial.TrialState.COMPLETE,))
            if feasible(t) and t.value is not None]
    done.sort(key=lambda t: sign * float(t.value or 0))
    return [dict(t.params) for t in done[:n]]


def plan_retune(cfg: RunConfig, space: SearchSpace, hardware: HardwareInfo, budget: int
                ) -> RetunePlan:
    path = run_profile_path(cfg, hardware.key)
    current = None
    if path.exists():
        try:
            current = read_profile(path)
        except UserError:
            current = None  # the run says why it cannot be compared
    if current is None:
        return RetunePlan(path, None, [], budget, ())
    model = resolve_model(cfg.model)
    changes = what_changed(current, hardware, vllm_version(), model_revision(cfg.model,
                                                                             model.path))
    seeds = [within(space, profile_params(current))]
    seeds += [within(space, p) for p in previous_best(cfg.storage, current.meta.study,
                                                      SEEDS_FROM_STUDY)]
    unique: list[dict[str, Any]] = []
    for s in seeds:
        if s and s not in unique:
            unique.append(s)
    return RetunePlan(path, current, changes, budget * WIDEN if changes else budget,
                      tuple(unique))


def regression(current: Profile, conf: Confirmation | None,
               settings: TrialParams | None = None) -> str | None:
    """The current profile, re-measured here, worse than its own record beyond both
    intervals (a vLLM upgrade, a driver, a noisy neighbour that stayed). `settings`: the
    profile as a candidate, to find it when it was measured under another arm's name (a
    profile of vLLM's defaults is measured as the baseline)."""
    if conf is None:
        return None
    arm = conf.arm(INCUMBENT_NAME)
    if arm is None and settings is not None:
        arm = next((a for a in conf.arms if same_settings(
            TrialParams(args=dict(a.args), env=dict(a.env)), settings)), None)
    metric = conf.metric
    old = current.meta.metrics.get(metric)
    new = arm.figures.get(metric) if arm is not None else None
    if old is None or new is None or None in (old.low, old.high, new.low, new.high):
        return None
    assert old.low is not None and old.high is not None
    assert new.low is not None and new.high is not None
    worse = new.high < old.low if conf.direction == "maximize" else new.low > old.high
    if not worse:
        return None
    return (f"the current profile now measures {metric} {new.describe()} against "
            f"{old.describe()} recorded on {current.meta.created[:10]} "
            f"({current.meta.vllm_version}): worse beyond both intervals")


def retune(cfg: RunConfig, budget: int, probe: Probe | None = None,
           on_plan: Callable[[RetunePlan], None] | None = None,
           on_trial: TrialCallback | None = None,
           on_ready: Callable[[str], None] | None = None,
           on_confirm: Callable[[list[Arm], int], None] | None = None,
           on_round: RoundCallback | None = None) -> RetuneOutcome:
    """Search `budget` new candidates (twice that when conditions changed), confirm with the
    current profile in the round, replace it only beyond noise."""
    probe = probe or SystemProbe()
    cfg = dataclasses.replace(cfg, target=resolve_target(cfg.target, probe, cfg.devices))
    hardware = detect_hardware(cfg.target, probe, cfg.devices, cfg.mismatch_ok)
    plan = plan_retune(cfg, run_space(cfg)[1], hardware, budget)
    if on_plan:
        on_plan(plan)
    # the profile the alarm judges is the one in place before the run: the run may replace it
    before = (find_incumbent(plan.path, hardware.describe(), served_as_measured(
        dict(resolve_model(cfg.model).args), run_space(cfg)[1].workload.model_dump(
            mode="json"))) if plan.current else None)
    outcome = run(dataclasses.replace(cfg, trials=plan.trials, more_trials=True,
                                      seeds=plan.seeds), probe, on_trial, on_ready,
                  on_confirm, on_round)
    alarm = (regression(plan.current, outcome.confirmation, before.params)
             if plan.current and before and before.comparable else None)
    status, code = retune_status(alarm, outcome.decided, outcome.profile_written)
    return RetuneOutcome(status, code, plan, outcome, alarm)


def retune_status(alarm: str | None, decided: bool, written: bool) -> tuple[str, int]:
    """The status and exit code of a re-tune. The alarm is about the deployed profile staying
    in place while it measures worse than its record: `regression` (11) when the profile was
    kept; when a winner confirmed beyond noise replaced it, `updated` (10), the alarm still
    in the summary."""
    if written:
        return "updated", UPDATED
    if alarm:
        return "regression", REGRESSION
    if not decided:
        return "failed", FAILED
    return "unchanged", UNCHANGED
