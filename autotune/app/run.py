"""Wire one `autotune run`: check every input, search, confirm side by side, write the profile."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune.app import resume
from autotune.app.conclude import conclude
from autotune.app.guard import guard, reference_outputs
from autotune.app.inputs import Inputs, RunConfig, option_values, prepare, run_profile_path
from autotune.app.prechecks import chain, gpu_precheck, memory_baseline, memory_precheck
from autotune.app.trial import TrialSetup, run_trial
from autotune.core.errors import ConfigError
from autotune.decide.confirm import (
    BASELINE_NAME,
    INCUMBENT_NAME,
    Arm,
    Confirmation,
    RoundCallback,
    confirm,
    distinct,
    rule_of,
    same_settings,
)
from autotune.decide.scoring import derive
from autotune.engine.argv import default_launcher, vllm_version
from autotune.engine.hardware import resolve_target
from autotune.engine.probes import Probe, SystemProbe
from autotune.engine.slots import Pool, gpus_needed
from autotune.measure.quality import prompts_for
from autotune.measure.records import write_json
from autotune.measure.result import PruneCheck, TrialResult
from autotune.model.tokens import context_length
from autotune.profiles import warm
from autotune.profiles.identity import identity_digest, study_identity
from autotune.profiles.incumbent import Incumbent, find_incumbent
from autotune.profiles.profile import model_slug, served_as_measured
from autotune.scale.lease import Held, take
from autotune.scale.lock import profile_lock
from autotune.space.combos import scheduler_check
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, baseline_params, resolve
from autotune.study.front import front_record
from autotune.study.opening import StudyConfig, StudyMismatch
from autotune.study.storage import redact_url
from autotune.study.trials import (
    best_trial,
    counted_trials,
    feasible,
    finalists,
    is_baseline,
    pareto_trials,
)
from autotune.study.tuner import Precheck, TrialCallback, tune

log = logging.getLogger(__name__)



@dataclass
class RunOutcome:
    study: optuna.Study
    best: FrozenTrial | None  # the search's best (its own figures: one server start)
    confirmation: Confirmation | None = None
    profile_path: Path | None = None
    profile_written: bool = False
    decided: bool = False  # a verdict was reached: a profile written, or one kept
    note: str = ""
    results: dict[int, TrialResult] = field(default_factory=dict)
    front: list[FrozenTrial] = field(default_factory=list)  # multi-objective: chosen first
    # this worker searched; the verdict is another's (the lease holder's) or not asked for
    deferred: bool = False

    @property
    def saved_s(self) -> float:
        """Measuring time that stopping hopeless candidates early saved (estimated)."""
        return sum(r.saved_s for r in self.results.values() if r.status == "pruned")


def study_name(target: str, model: str, space: SearchSpace) -> str:
    return f"{target}.{model_slug(model)}.{space.name}"


def run(cfg: RunConfig, probe: Probe | None = None,
        on_trial: TrialCallback | None = None,
        on_ready: Callable[[str], None] | None = None,
        on_confirm: Callable[[list[Arm], int], None] | None = None,
        on_round: RoundCallback | None = None,
        workers: Callable[[], AbstractContextManager[object]] | None = None) -> RunOutcome:
    """`workers`: the other worker processes of a `--parallel` run, started (once the inputs
    are checked) for the search and ended after it."""
    started_at = time.time()
    probe = probe or SystemProbe()
    cfg = dataclasses.replace(cfg, target=resolve_target(cfg.target, probe, cfg.devices))
    inp = prepare(cfg, probe)
    space, model = inp.space, inp.model
    clash = sorted(set(model.args) & set(space.args))
    if clash:
        raise ConfigError(str(inp.space_path), f"args.{clash[0]}",
                          f"is set by the built-in model {cfg.model}")
    if cfg.verify_options:
        from autotune.engine.vllm_args import check_options

        check_options(option_values(space, model.args), str(inp.space_path))
    path = run_profile_path(cfg, inp.hardware.key)
    # One writer per profile: a second run or re-tune of it stops here, before any start.
    # Workers sharing a study in a database server take the lock only to conclude.
    whole = not cfg.search_only and cfg.storage.startswith("sqlite")
    with profile_lock(path) if whole else contextlib.nullcontext():
        return _search_and_conclude(cfg, inp, path, probe, on_trial, on_ready, on_confirm,
                                    on_round, workers, started_at,
                                    lock=not whole and not cfg.search_only)


def _search_and_conclude(cfg: RunConfig, inp: Inputs, path: Path, probe: Probe,
                         on_trial: TrialCallback | None,
                         on_ready: Callable[[str], None] | None,
                         on_confirm: Callable[[list[Arm], int], None] | None,
                         on_round: RoundCallback | None,
                         workers: Callable[[], AbstractContextManager[object]] | None,
                         started_at: float, lock: bool) -> RunOutcome:
    space, model = inp.space, inp.model
    identity = study_identity(cfg.model, model.path, inp.hardware, vllm_version(), space)
    launcher = cfg.launcher or default_launcher()
    setup = TrialSetup(model=model.path, launcher=launcher, plan=inp.plan, engine=space.engine,
                       probe=probe, base_args=dict(model.args),
                       gpu_indices=tuple(g.index for g in inp.hardware.gpus),
                       api_key=secrets.token_hex(16), objective_level=space.objective.level,
                       objective_metric=space.objective.metric,
                       baseline=memory_baseline(cfg.parallel, probe, inp.hardware),
                       quality_prompts=tuple(prompts_for(space.quality, inp.plan.tok,
                                                         space.workload.seed))
                       if space.quality else (),
                       quality_max_tokens=space.quality.max_tokens if space.quality else 16)
    results: dict[int, TrialResult] = {}
    attrs = {"target": cfg.target, "model": cfg.model, "space": space.name,
             "metric": space.objective.metric,
             "objective": space.objective.model_dump(mode="json"),
             "model_path": model.path, "model_args": dict(model.args),
             "hardware": inp.hardware.describe(), "vllm_version": vllm_version(),
             "workload": space.workload.model_dump(mode="json")}
    combos = (scheduler_check(space, dict(model.args), context_length(model.path),
                              str(inp.space_path)) if cfg.verify_options else None)
    gpus = tuple(g.index for g in inp.hardware.gpus)
    pool = Pool.for_run(cfg.runs_dir / ".slots", gpus, cfg.parallel)
    precheck = chain(combos, memory_precheck(model.path, dict(model.args), inp.hardware),
                     gpu_precheck(pool, dict(model.args)))
    with workers() if workers is not None else contextlib.nullcontext():
        study, name = _tune(cfg, space, identity, setup, results, attrs, on_trial, on_ready,
                            precheck, pool, warm.for_run(space, path, model.args))
    outcome = RunOutcome(study=study, best=best_trial(study, space.objective),
                         results=results, profile_path=path)
    if cfg.search_only:
        outcome.deferred = True
        outcome.note = "search done (--search-only): no confirmation, no profile"
        return outcome
    # one worker of those sharing the study confirms; the others leave it to it
    lease = take(study._storage, name, counted_trials(study), started_at)
    if isinstance(lease, Held):
        outcome.deferred = True
        state = "run" if lease.running else "done"
        outcome.note = (f"search done; the confirmation round is {state} by another worker "
                        f"({lease.holder}, lease {lease.name!r})")
        return outcome
    try:
        with profile_lock(path) if lock else contextlib.nullcontext():
            _confirm_and_conclude(outcome, cfg, inp, path, study, name, identity, setup, gpus,
                                  on_confirm, _beating(on_round, lease.beat))
    except BaseException:
        with contextlib.suppress(Exception):
            lease.abandon()  # interrupted or failed: the next run confirms
        raise
    lease.done(outcome.note)
    return outcome


def _beating(on_round: RoundCallback | None, beat: Callable[[], None]) -> RoundCallback:
    """The round callback, and the lease's heartbeat at every round."""
    def each(r: int, arm: Arm, result: TrialResult) -> None:
        beat()
        if on_round is not None:
            on_round(r, arm, result)
    return each


def _confirm_and_conclude(outcome: RunOutcome, cfg: RunConfig, inp: Inputs, path: Path,
                          study: optuna.Study, name: str, identity: dict[str, str],
                          setup: TrialSetup, gpus: tuple[int, ...],
                          on_confirm: Callable[[list[Arm], int], None] | None,
                          on_round: RoundCallback) -> None:
    space, model = inp.space, inp.model
    run_dir = cfg.runs_dir / name
    # what the run adds to every profile it writes is not a setting the incumbent changed
    incumbent = find_incumbent(path, inp.hardware.describe(), served_as_measured(
        dict(model.args), space.workload.model_dump(mode="json")))
    # the confirmation measures one server at a time, on the whole machine (its GPUs shared
    # out as in the search)
    pool = Pool.for_run(cfg.runs_dir / ".slots", gpus, 1)
    if space.objective.multi:
        outcome.front = pareto_trials(study, space.objective)
        write_json(run_dir / "front.json", front_record(study, space.objective))

    arms = _arms(study, space, incumbent)
    lone_infeasible_baseline = len(arms) == 1 and arms[0].role == "baseline" and not any(
        is_baseline(t) and feasible(t) for t in study.trials)
    if not arms or lone_infeasible_baseline:
        outcome.note = "no trial met every constraint: no profile written"
        return
    # one arm: nothing to compare with, unless it is the current profile, which is measured
    # again all the same (its figures against its record: the regression alarm of a re-tune)
    if len(arms) == 1 and not _is_current(incumbent, arms[0]):
        conf = None
    else:
        if on_confirm:
            on_confirm(arms, space.confirm.rounds)

        def measure(params: TrialParams, where: str) -> TrialResult:
            result = in_slot(pool, setup, params, lambda s: run_trial(params, s, run_dir / where))
            return _record(result, run_dir / where, cfg, name, params, space)

        previous = resume.begin(run_dir, arms)
        conf = confirm(arms, rule_of(space.confirm), space.objective, measure,
                       _min_gain(space, incumbent, arms), on_round, space.confirm.max_loss,
                       space.confirm.replace_gain, previous=previous)
        resume.finish(run_dir, conf.model_dump(mode="json"), study)
        outcome.confirmation = conf
    c = conclude(path, study, cfg, inp, identity, name, incumbent, conf, arms)
    outcome.profile_written, outcome.decided, outcome.note = c.written, c.decided, c.note


def _tune(cfg: RunConfig, space: SearchSpace, identity: dict[str, str], setup: TrialSetup,
          results: dict[int, TrialResult], attrs: dict[str, Any],
          on_trial: TrialCallback | None, on_ready: Callable[[str], None] | None,
          precheck: Precheck | None = None, pool: Pool | None = None,
          warm_starts: tuple[warm.WarmStart, ...] = ()) -> tuple[optuna.Study, str]:
    """The search, in the study for this run's conditions: a default-named study measured
    under other conditions is left alone and a new one, named by the conditions, is used."""
    names = [cfg.study] if cfg.study else [
        study_name(cfg.target, cfg.model, space),
        f"{study_name(cfg.target, cfg.model, space)}.{identity_digest(identity)}"]
    # vLLM's defaults' greedy outputs, read from the study once (they never change)
    reference = {name: functools.cache(functools.partial(reference_outputs, cfg.storage, name))
                 for name in names}
    for i, name in enumerate(names):
        run_dir = cfg.runs_dir / name

        def runner(params: TrialParams, number: int, prune: PruneCheck,
                   run_dir: Path = run_dir, name: str = name) -> TrialResult:
            trial_dir = run_dir / f"trial-{number:04d}"
            result = in_slot(pool, setup, params,
                             lambda s: run_trial(params, s, trial_dir, prune))
            if space.quality is not None:
                result = guard(space, params, result, setup, reference[name])
            result = _record(result, trial_dir, cfg, name, params, space, number)
            results[number] = result
            return result

        study_cfg = StudyConfig(cfg.storage, name, cfg.trials, cfg.timeout_s, identity,
                                more=cfg.more_trials, seeds=cfg.seeds, warm=warm_starts,
                                shared=cfg.parallel > 1 or not cfg.storage.startswith("sqlite"))
        try:
            if on_ready:
                on_ready(f"study {name!r} in {redact_url(cfg.storage)}; logs in {run_dir}")
            return tune(space, study_cfg, runner, attrs, on_trial, precheck, on_ready), name
        except StudyMismatch as exc:
            if i + 1 == len(names):
                raise
            if on_ready:
                on_ready(f"study {name!r} was measured under other conditions "
                         f"({', '.join(exc.differs)} differ): using a new study")
    raise AssertionError("unreachable")


def in_slot(pool: Pool | None, setup: TrialSetup, params: TrialParams,
            measure: Callable[[TrialSetup], TrialResult]) -> TrialResult:
    """Measure on the share of the machine the pool gives this candidate (waiting for it)."""
    if pool is None:
        return measure(setup)
    with pool.take(gpus_needed({**setup.base_args, **params.args})) as slot:
        if not slot.gpus and not slot.cpus:
            return measure(setup)
        result = measure(dataclasses.replace(setup, gpu_indices=slot.gpus or setup.gpu_indices,
                                             cpus=slot.cpus))
        return result.model_copy(update={"slot": slot.describe()})


def _record(result: TrialResult, trial_dir: Path, cfg: RunConfig, study: str,
            params: TrialParams, space: SearchSpace, number: int | None = None
            ) -> TrialResult:
    result = derive(space.objective, result)
    write_json(trial_dir / "result.json", {
        "trial": number, "study": study, "model": cfg.model, "target": cfg.target,
        "args": params.args, "workload": space.workload.model_dump(mode="json"),
        **result.model_dump(mode="json")})
    return result


def _arms(study: optuna.Study, space: SearchSpace, incumbent: Incumbent | None) -> list[Arm]:
    """Who is confirmed: vLLM's defaults (if they served the load in the search), the current
    profile (if measured on this hardware) and the search's best feasible candidates."""
    out: list[Arm] = []
    if any(is_baseline(t) and t.user_attrs.get("status") == "ok" for t in study.trials):
        out.append(Arm(BASELINE_NAME, "baseline", baseline_params(space)))
    if incumbent is not None and incumbent.comparable and incumbent.params is not None:
        out.append(Arm(INCUMBENT_NAME, "incumbent", incumbent.params))
    for t in finalists(study, space.confirm.finalists, _settings(space), space.objective):
        out.append(Arm(f"trial {t.number}", "finalist", resolve(space, t.params), t.number))
    return distinct(out)


def _is_current(incumbent: Incumbent | None, arm: Arm) -> bool:
    return (incumbent is not None and incumbent.comparable and incumbent.params is not None
            and same_settings(arm.params, incumbent.params))


def _min_gain(space: SearchSpace, incumbent: Incumbent | None, arms: list[Arm]) -> float:
    """A current profile that is vLLM's defaults is measured as the baseline arm: replacing
    it asks for `replace_gain` all the same."""
    current = incumbent is not None and incumbent.comparable and incumbent.params is not None
    if current and not any(a.role == "incumbent" for a in arms):
        return max(space.confirm.min_gain, space.confirm.replace_gain)
    return space.confirm.min_gain


def _settings(space: SearchSpace) -> Callable[[FrozenTrial], Any]:
    def of(t: FrozenTrial) -> Any:
        p = baseline_params(space) if is_baseline(t) else resolve(space, t.params)
        return (sorted(p.args.items(), key=str), sorted(p.env.items()))
    return of


__all__ = ["RunConfig", "RunOutcome", "run"]
