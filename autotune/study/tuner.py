"""The Optuna study: storage, sampler, first candidates, total budget, resume, best choice."""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autotune.core.errors import (
    AutotuneError,
    EnvironmentFailure,
    FailureReason,
    UserError,
    WorkloadError,
)
from autotune.decide.scoring import score
from autotune.engine.logs import setup_failure_cause
from autotune.measure.result import PruneCheck, TrialResult, watched_metric
from autotune.measure.stopping import PruneRule
from autotune.profiles.warm import WARM_FROM, WarmStart
from autotune.space.params import CategoricalParam, TrialParams, holds
from autotune.space.search import SearchSpace, baseline_params, broken_rule, suggest
from autotune.study.budget import (
    DRAWN,
    WORKER,
    Surplus,
    fail_stale,
    hand_back,
    left,
    running,
    running_params,
    running_twin,
    started,
    surplus,
    worker_id,
)
from autotune.study.pruning import IntervalPruner
from autotune.study.samplers import finite, make_sampler, unseen_candidate
from autotune.study.screening import SCREEN, enqueue_combination, enqueue_screens, uses_screening
from autotune.study.storage import open_error, redact_url
from autotune.study.trials import (
    BASELINE,
    NO_START_ATTR,
    REPEAT_OF,
    ROLE,
    counted_trials,
    is_baseline,
    measured_twin,
    result_of,
    seen_params,
)

log = logging.getLogger(__name__)

# (candidate, trial number, prune check) -> what the trial measured
TrialRunner = Callable[[TrialParams, int, PruneCheck], TrialResult]
# candidate -> why it cannot run (found without a start: a rule, the memory check), or None
Precheck = Callable[[TrialParams], "tuple[FailureReason, str] | None"]


@dataclass(frozen=True)
class TrialReport:
    """What the CLI shows as each trial ends."""

    number: int
    params: dict[str, Any]
    value: float
    feasible: bool
    result: TrialResult
    baseline: bool = False
    repeat_of: int | None = None  # answered from this earlier trial's measurement
    maximize: bool = True  # the direction of `value`
    left: int | None = None  # counted trials the budget still allows after this one


TrialCallback = Callable[[TrialReport], None]

MAX_ENVIRONMENT_FAILURES = 3

# This many candidates in a row refused before a start: the rules and the memory check leave
# (almost) nothing to try, and the sampler is not finding it.
MAX_NO_STARTS = 50


@dataclass(frozen=True)
class StudyConfig:
    storage: str
    name: str
    n_trials: int
    timeout_s: float | None = None
    # what the study's numbers depend on (model, hardware, vLLM, space, workload): a study
    # is never continued under other conditions
    identity: dict[str, str] = field(default_factory=dict)
    # Optuna writes a heartbeat from a thread while a trial runs (a server start blocks nothing
    # but our own thread), so a short grace period still never fails a live trial.
    heartbeat_s: int = 5
    # A RUNNING trial whose heartbeat is older than this belongs to a dead tuner: it is marked
    # FAIL and re-queued (RetryHeartbeatStaleTrialCallback) before the next trial starts.
    grace_s: int = 20
    # n_trials counts new trials, on top of those the study already holds (a re-tune)
    more: bool = False
    # a new study's first candidates after vLLM's defaults: a warm start, e.g. the previous
    # study's best (measured again here, never trusted from there)
    seeds: tuple[dict[str, Any], ...] = ()
    # before those and the space's `enqueue:`: this model's profiles on other hardware
    # (warm.py), each said in a note, the skipped ones too
    warm: tuple[WarmStart, ...] = ()
    # candidates refused in a row (rules, memory) before the space is declared empty
    max_no_starts: int = MAX_NO_STARTS
    # other workers may share the study (a database server's storage, --parallel)
    shared: bool = False


def make_storage(url: str, heartbeat_s: int, grace_s: int) -> optuna.storages.BaseStorage:
    if "://" not in url:
        raise UserError(f"--storage: {redact_url(url)!r} is not a storage URL (e.g. "
                        "sqlite:///autotune.db)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                else None,
            )
    except Exception as exc:  # sqlalchemy raises many kinds for a bad URL
        raise open_error(url, exc) from exc  # its password hidden


class StudyMismatch(UserError):
    """An existing study was measured under other conditions than this run's."""

    def __init__(self, name: str, differs: list[str]) -> None:
        self.differs = differs
        super().__init__(f"--study {name}: this study was measured under other conditions "
                         f"({', '.join(differs)} differ); pass a new --study")


def identity_differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def reports_rounds(space: SearchSpace) -> bool:
    """Whether each round's figure is the objective's own, reported to Optuna as an
    intermediate value. Not in a multi-objective study (Optuna prunes single-objective studies
    only), nor for an objective that is not a per-round figure (memory, start-up time, KV cache
    tokens, a weighted score): its rounds give output throughput (`watched_metric`), which
    says how long to measure, never whether a candidate can reach the best."""
    metric = space.objective.metric
    return not space.objective.multi and watched_metric(metric) == metric


def open_study(space: SearchSpace, cfg: StudyConfig, attrs: dict[str, Any],
               on_note: Note | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(cfg.storage, cfg.heartbeat_s, cfg.grace_s)
    n_existing = 0
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
        n_existing = len(existing.trials)
    except KeyError:
        existing = None
    if existing is not None:
        differs = identity_differences(_identity(existing), cfg.identity)
        if differs:
            raise StudyMismatch(cfg.name, differs)
    # workers sharing a study draw apart: the same seed would propose the same candidates
    seed = None if space.sampler.seed is None else (
        space.sampler.seed + n_existing + (os.getpid() if cfg.shared else 0))
    goals = space.objective.goals()
    sampler = make_sampler(space, seed, len(goals))
    # the pruner judges the objective's own rounds: off where there are none (reports_rounds)
    pruner: optuna.pruners.BasePruner = (
        IntervalPruner(PruneRule(space.objective.direction, space.pruning.margin,
                                 space.workload.measure.min_rounds))
        if space.pruning.enabled and reports_rounds(space) else optuna.pruners.NopPruner())
    new = existing is None
    try:
        # not load_if_exists: of several workers starting at once, one creates the study and
        # queues its first candidates, the others join it
        study = optuna.create_study(study_name=cfg.name, storage=storage, sampler=sampler,
                                    pruner=pruner, directions=[g.direction for g in goals],
                                    load_if_exists=existing is not None)
    except optuna.exceptions.DuplicatedStudyError:
        new = False
        study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        # (its identity is set by its creator right after; a joiner checks what is there)
        differs = identity_differences(_identity(study), cfg.identity)
        if differs:
            raise StudyMismatch(cfg.name, differs) from None
    if new:
        # vLLM's defaults first, always: the baseline every candidate has to beat
        study.enqueue_trial(with_defaults(space, {}), user_attrs={ROLE: BASELINE})
        for w in cfg.warm:  # then this model's profiles on other hardware
            (on_note or log.info)(w.line())
            if w.params is not None and space.sampler.name != "grid":
                study.enqueue_trial(with_defaults(space, w.params), skip_if_exists=True,
                                    user_attrs={WARM_FROM: w.source})
        # (the grid sampler visits every point anyway, and cannot finish with queued trials)
        for cand in [*(space.enqueue if space.sampler.name != "grid" else []), *cfg.seeds]:
            study.enqueue_trial(with_defaults(space, cand), skip_if_exists=True)
        if uses_screening(space):
            enqueue_screens(study, space)
        # the identity last: a worker joining this study waits for it (_identity), and so
        # finds the queue filled (one that drew before the baseline was queued would measure
        # vLLM's defaults beside it)
        for k, v in {"identity": cfg.identity, **attrs}.items():
            study.set_user_attr(k, v)
    return study


# A worker that joins a study another has just created waits this long for its identity.
IDENTITY_WAIT_S = 15.0


def _identity(study: optuna.Study) -> dict[str, str]:
    """The study's identity; a study created a moment ago by another worker may not have it
    yet (its creator sets it first thing): wait for it."""
    deadline = time.monotonic() + IDENTITY_WAIT_S
    while True:
        ident = study.user_attrs.get("identity")
        if ident is not None or time.monotonic() > deadline:
            return dict(ident or {})
        time.sleep(0.2)
        study = optuna.load_study(study_name=study.study_name, storage=study._storage)


def with_defaults(space: SearchSpace, candidate: dict[str, Any]) -> dict[str, Any]:
    """An enqueued candidate is vLLM's defaults plus what it names: every other tuned option
    that may be left unset is left unset, not sampled."""
    out = dict(candidate)
    for name, spec in space.tuned().items():
        if name not in out and isinstance(spec, CategoricalParam) and None in spec.choices:
            out[name] = None
    return out


def suggest_defaults(space: SearchSpace, trial: optuna.Trial) -> None:
    """Draw the enqueued "unset" (None) of every tuned categorical that offers it (only what
    was enqueued: nothing is sampled for vLLM's defaults)."""
    fixed = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {}
    drawn: dict[str, Any] = {}
    for name, spec in space.tuned().items():
        if (isinstance(spec, CategoricalParam) and name in fixed and fixed[name] is None
                and None in spec.choices and holds(spec.when, drawn)):
            drawn[name] = trial.suggest_categorical(name, spec.choices)


def requeue(study: optuna.Study, trial: optuna.Trial, space: SearchSpace) -> None:
    """Queue the same candidate again (the baseline stays the baseline)."""
    if trial.user_attrs.get(ROLE) == BASELINE:
        study.enqueue_trial(with_defaults(space, {}), user_attrs={ROLE: BASELINE})
    else:
        study.enqueue_trial(dict(trial.params))


# This many start-ups in a row failing for the same cause that no setting can change (the
# model's weights or tokenizer missing, a broken engine install) stop the run.
SAME_CAUSE_STOPS = 2
STARTUP_FAILURES = (FailureReason.STARTUP_CRASH, FailureReason.STARTUP_TIMEOUT,
                    FailureReason.INVALID_ARGS)



def refused(params: TrialParams, reason: FailureReason, detail: str) -> TrialResult:
    return TrialResult(status="failed", reason=reason, detail=f"{detail} (no server started)",
                       command=[], env=dict(params.env))


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
    for key, value in constraints.items():
        trial.set_constraint(key, value)


# How often a worker whose budget is claimed looks again while other workers' trials run (a
# dead worker's trial comes back to the queue once its heartbeat is stale).
WAIT_S = 1.0

# (what to say) -> None: a worker's notes (waiting for others, a dead worker's trial retried)
Note = Callable[[str], None]


def tune(space: SearchSpace, cfg: StudyConfig, runner: TrialRunner, attrs: dict[str, Any],
         on_trial: TrialCallback | None = None, precheck: Precheck | None = None,
         on_note: Note | None = None) -> optuna.Study:
    """Run trials until the study holds `cfg.n_trials` finished ones (in total, across runs
    and across the workers sharing its storage, budget.py), then wait for the other workers'
    trials to end, so that a dead worker's candidate is retried here."""
    study = open_study(space, cfg, attrs, on_note)
    total = cfg.n_trials + (counted_trials(study) if cfg.more else 0)
    if total - counted_trials(study) <= 0:
        log.info("study %s already has %d finished trials", cfg.name, counted_trials(study))
        return study

    env_failures = 0
    setup_causes: list[str] = []  # start-up failures in a row that no setting can change
    refused_in_a_row = 0
    exhausted = False  # every candidate of a finite space has been tried
    rng = random.Random(space.sampler.seed)

    multi = space.objective.multi
    per_round = reports_rounds(space)

    def objective(trial: optuna.Trial) -> float | list[float]:
        nonlocal env_failures, refused_in_a_row, exhausted
        baseline = trial.user_attrs.get(ROLE) == BASELINE
        trial.set_user_attr(WORKER, worker_id())  # who measures it (several may share a study)
        if surplus(study, trial.number, total):
            hand_back(study, trial, "the budget was used up by other workers' trials")

        def prune_check(step: int, value: float) -> bool:
            if math.isnan(value) or not per_round:
                return False  # not the objective's figure: never reported, never pruned
            trial.report(value, step)
            return trial.should_prune()

        try:
            if baseline:
                # vLLM's defaults are recorded as the "unset" value of every tuned option
                # that has one, so samplers that model the options jointly (multivariate
                # TPE, GP) count this trial as part of the search space
                suggest_defaults(space, trial)
                params = baseline_params(space)
            else:
                params = suggest(space, trial)
            trial.set_user_attr(DRAWN, True)
            busy = running_twin(study, space, params, trial.number)
            if busy is not None:
                if not baseline and space.sampler.name != "grid" and finite(space):
                    # an unseen candidate goes next, so that this worker does not draw the
                    # one being measured again
                    unseen = unseen_candidate(space, seen_params(study, space) + running_params(
                        study, space, trial.number), rng)
                    if unseen is not None:
                        study.enqueue_trial(unseen, skip_if_exists=True)
                doing = "is queued with" if busy.state is TrialState.WAITING else \
                    "of another worker is measuring"
                hand_back(study, trial, f"trial {busy.number} {doing} the same settings",
                          requeue=False)
            why_not = None if baseline else _why_not(space, params, precheck)
            twin = None if why_not else measured_twin(study, space, params, trial.number)
            if why_not is not None:
                # never start what cannot work: infeasible, learned from, not in the budget
                trial.set_user_attr(NO_START_ATTR, True)
                result = refused(params, *why_not)
                refused_in_a_row += 1
            elif twin is not None:
                # a repeat draw costs no server start: the search never measures a candidate
                # twice (repeats belong to the confirmation round)
                trial.set_user_attr(REPEAT_OF, twin.number)
                result = result_of(twin)
                # not counted in the budget; so that a sampler stuck on a good point still
                # makes progress, an unseen candidate goes next (none left: the space is done)
                if space.sampler.name != "grid" and finite(space):  # grid: each point once
                    unseen = unseen_candidate(space, seen_params(study, space), rng)
                    if unseen is None:
                        exhausted = True
                        study.stop()
                    else:
                        study.enqueue_trial(unseen)
            else:
                # a second look at the budget: a trial's start time is taken before the
                # storage has it, so one that started a moment earlier may be visible only now
                if surplus(study, trial.number, total):
                    hand_back(study, trial, "the budget was used up by other workers' trials")
                result = runner(params, trial.number, prune_check)
        except Surplus:
            raise
        except WorkloadError as exc:
            # the load is at fault, not this candidate: no point trying another
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", "workload")
            trial.set_user_attr("detail", str(exc))
            raise
        except EnvironmentFailure as exc:
            # Not the candidate's fault: FAIL (no sampler learns from it), queue it again, and
            # give up on a machine that stays dirty.
            env_failures += 1
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", FailureReason.ENVIRONMENT.value)
            trial.set_user_attr("detail", str(exc))
            requeue(study, trial, space)
            if env_failures >= MAX_ENVIRONMENT_FAILURES:
                raise AutotuneError(f"stopping: {env_failures} trials in a row found the "
                                    f"machine unfit to measure ({exc})") from exc
            raise
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM, a bug): Optuna records FAIL, which no sampler
            # learns from. Queue the same candidate so the next run measures it after all.
            # (A SIGKILLed tuner leaves a RUNNING trial; the heartbeat callback re-queues it.)
            trial.set_user_attr("interrupted", True)
            requeue(study, trial, space)
            raise
        if not trial.user_attrs.get(NO_START_ATTR):
            refused_in_a_row = 0
        elif refused_in_a_row >= cfg.max_no_starts:
            study.stop()
        s = score(space.objective, result)
        env_failures = 0
        trial.set_user_attr("args", dict(params.args))
        record(trial, result, s.constraints)
        cause = (setup_failure_cause(result.log_tail) if result.reason in STARTUP_FAILURES
                 else None)
        if cause is None:
            setup_causes.clear()
        else:
            setup_causes.append(cause)
            if len(setup_causes) >= SAME_CAUSE_STOPS and len(set(setup_causes)) == 1:
                study.stop()  # after this trial, recorded as it is
        if on_trial is not None:
            counts = not trial.user_attrs.get(NO_START_ATTR) and REPEAT_OF not in \
                trial.user_attrs
            on_trial(TrialReport(trial.number, dict(trial.params), s.value, s.feasible, result,
                                 baseline, trial.user_attrs.get(REPEAT_OF),
                                 space.objective.direction == "maximize",
                                 max(0, total - counted_trials(study) - counts)))
        if result.status == "pruned":
            raise optuna.TrialPruned(result.detail)
        return list(s.values) if multi else s.value

    deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
    waiting = 0  # the other workers' trials this worker said it waits for
    while True:
        t_left = None if deadline is None else deadline - time.monotonic()
        if t_left is not None and t_left <= 0:
            break
        # a dead worker's RUNNING trial (stale heartbeat): FAIL, and its candidate re-queued
        stale = fail_stale(study)
        if stale and on_note:
            on_note(f"trial(s) {', '.join(map(str, stale))} of a worker that stopped "
                    "answering: failed, their candidates queued again")
        if left(study, total) <= 0 or exhausted:
            others = running(study)
            if not others:
                break
            if len(others) != waiting and on_note:
                on_note(f"budget claimed: waiting for {len(others)} trial(s) of other "
                        "workers to end (a dead worker's candidate is retried here)")
            waiting = len(others)
            time.sleep(WAIT_S)
            continue
        waiting = 0
        # one trial at a time: the shared budget is looked at again before each
        n_started = started(study)
        study.optimize(objective, n_trials=1, timeout=t_left,
                       callbacks=[_after_screens(space)],
                       catch=(EnvironmentFailure, Surplus), gc_after_trial=True)
        if refused_in_a_row >= cfg.max_no_starts:
            raise AutotuneError(f"stopping: {refused_in_a_row} candidates in a row broke a "
                                "rule or could not fit in memory; the space leaves (almost) "
                                "nothing to measure: loosen its rules or ranges")
        if len(setup_causes) >= SAME_CAUSE_STOPS and len(set(setup_causes)) == 1:
            raise AutotuneError(f"stopping: {len(setup_causes)} start-ups in a row failed "
                                f"alike, for a reason no setting changes: {setup_causes[0]}")
        grid = study.sampler
        if isinstance(grid, optuna.samplers.GridSampler) and grid.is_exhausted(study):
            exhausted = True  # every point of the grid visited
        if started(study) == n_started:
            break  # nothing ran (the timeout)
    return study


def _why_not(space: SearchSpace, params: TrialParams, precheck: Precheck | None
             ) -> tuple[FailureReason, str] | None:
    rule = broken_rule(space, params)
    if rule is not None:
        return FailureReason.BREAKS_RULE, rule
    return precheck(params) if precheck is not None else None


def _after_screens(space: SearchSpace) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Once the last screen is measured, queue the combination of the changes that helped."""
    def check(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.user_attrs.get(ROLE) == SCREEN:
            enqueue_combination(study, space)
    return check


__all__ = ["StudyConfig", "StudyMismatch", "TrialReport", "counted_trials", "is_baseline", "tune"]
