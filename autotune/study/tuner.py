"""The search loop: trials until the study's budget is spent (across runs and the workers
sharing it), each candidate drawn, refused, answered from a twin or measured, and recorded."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.core.errors import (
    AutotuneError,
    EnvironmentFailure,
    FailureReason,
    WorkloadError,
)
from autotune.decide.scoring import score
from autotune.engine.logs import setup_failure_cause
from autotune.measure.result import PruneCheck, TrialResult
from autotune.space.params import TrialParams
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
from autotune.study.opening import (
    Note,
    StudyConfig,
    open_study,
    reports_rounds,
    requeue,
    suggest_defaults,
)
from autotune.study.samplers import finite, unseen_candidate
from autotune.study.screening import SCREEN, enqueue_combination
from autotune.study.standing import Miss, misses
from autotune.study.trials import (
    BASELINE,
    NO_START_ATTR,
    REPEAT_OF,
    ROLE,
    counted_trials,
    measured_twin,
    record,
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
    missed: tuple[Miss, ...] = ()  # the constraints a measured trial missed (standing.py)


TrialCallback = Callable[[TrialReport], None]

MAX_ENVIRONMENT_FAILURES = 3

# This many start-ups in a row failing for the same cause that no setting can change (the
# model's weights or tokenizer missing, a broken engine install) stop the run.
SAME_CAUSE_STOPS = 2
STARTUP_FAILURES = (FailureReason.STARTUP_CRASH, FailureReason.STARTUP_TIMEOUT,
                    FailureReason.INVALID_ARGS)



def refused(params: TrialParams, reason: FailureReason, detail: str) -> TrialResult:
    return TrialResult(status="failed", reason=reason, detail=f"{detail} (no server started)",
                       command=[], env=dict(params.env))


# How often a worker whose budget is claimed looks again while other workers' trials run (a
# dead worker's trial comes back to the queue once its heartbeat is stale).
WAIT_S = 1.0

USED_UP = "the budget was used up by other workers' trials"


@dataclass
class Tuner:
    """One worker's search on an open study: `run()` measures trials until the study holds
    `total` counted ones, then waits for the other workers' trials to end."""

    space: SearchSpace
    cfg: StudyConfig
    study: optuna.Study
    runner: TrialRunner
    total: int  # counted trials the study should hold in the end
    on_trial: TrialCallback | None = None
    precheck: Precheck | None = None
    on_note: Note | None = None
    env_failures: int = 0  # trials in a row that found the machine unfit to measure
    setup_causes: list[str] = field(default_factory=list)  # alike start-up failures in a row
    refused_in_a_row: int = 0  # candidates refused before a start, in a row
    exhausted: bool = False  # every candidate of a finite space has been tried
    rng: random.Random = field(default_factory=random.Random)

    def run(self) -> optuna.Study:
        study, cfg = self.study, self.cfg
        deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
        waiting = 0  # the other workers' trials this worker said it waits for
        while True:
            t_left = None if deadline is None else deadline - time.monotonic()
            if t_left is not None and t_left <= 0:
                break
            # a dead worker's RUNNING trial (stale heartbeat): FAIL, its candidate re-queued
            stale = fail_stale(study)
            if stale and self.on_note:
                self.on_note(f"trial(s) {', '.join(map(str, stale))} of a worker that stopped "
                             "answering: failed, their candidates queued again")
            if left(study, self.total) <= 0 or self.exhausted:
                others = running(study)
                if not others:
                    break
                if len(others) != waiting and self.on_note:
                    self.on_note(f"budget claimed: waiting for {len(others)} trial(s) of other "
                                 "workers to end (a dead worker's candidate is retried here)")
                waiting = len(others)
                time.sleep(WAIT_S)
                continue
            waiting = 0
            # one trial at a time: the shared budget is looked at again before each
            n_started = started(study)
            study.optimize(self.objective, n_trials=1, timeout=t_left,
                           callbacks=[_after_screens(self.space)],
                           catch=(EnvironmentFailure, Surplus), gc_after_trial=True)
            self._stop_if_hopeless()
            grid = study.sampler
            if isinstance(grid, optuna.samplers.GridSampler) and grid.is_exhausted(study):
                self.exhausted = True  # every point of the grid visited
            if started(study) == n_started:
                break  # nothing ran (the timeout)
        return study

    def _stop_if_hopeless(self) -> None:
        if self.refused_in_a_row >= self.cfg.max_no_starts:
            raise AutotuneError(f"stopping: {self.refused_in_a_row} candidates in a row broke a "
                                "rule or could not fit in memory; the space leaves (almost) "
                                "nothing to measure: loosen its rules or ranges")
        causes = self.setup_causes
        if len(causes) >= SAME_CAUSE_STOPS and len(set(causes)) == 1:
            raise AutotuneError(f"stopping: {len(causes)} start-ups in a row failed alike, "
                                f"for a reason no setting changes: {causes[0]}")

    def objective(self, trial: optuna.Trial) -> float | list[float]:
        """One trial: draw a candidate, then refuse it, answer it from its measured twin, or
        measure it; record what came of it."""
        space, study = self.space, self.study
        baseline = trial.user_attrs.get(ROLE) == BASELINE
        trial.set_user_attr(WORKER, worker_id())  # who measures it (several may share a study)
        if surplus(study, trial.number, self.total):
            hand_back(study, trial, USED_UP)
        try:
            params = self._draw(trial, baseline)
            result = self._result(trial, params, baseline)
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
            self.env_failures += 1
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", FailureReason.ENVIRONMENT.value)
            trial.set_user_attr("detail", str(exc))
            requeue(study, trial, space)
            if self.env_failures >= MAX_ENVIRONMENT_FAILURES:
                raise AutotuneError(f"stopping: {self.env_failures} trials in a row found the "
                                    f"machine unfit to measure ({exc})") from exc
            raise
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM, a bug): Optuna records FAIL, which no sampler
            # learns from. Queue the same candidate so the next run measures it after all.
            # (A SIGKILLed tuner leaves a RUNNING trial; the heartbeat callback re-queues it.)
            trial.set_user_attr("interrupted", True)
            requeue(study, trial, space)
            raise
        return self._conclude(trial, params, result, baseline)

    def _draw(self, trial: optuna.Trial, baseline: bool) -> TrialParams:
        """The trial's candidate; handed back when another trial is measuring the same."""
        space, study = self.space, self.study
        if baseline:
            # vLLM's defaults are recorded as the "unset" value of every tuned option that has
            # one, so samplers that model the options jointly (multivariate TPE, GP) count
            # this trial as part of the search space
            suggest_defaults(space, trial)
            params = baseline_params(space)
        else:
            params = suggest(space, trial)
        trial.set_user_attr(DRAWN, True)
        busy = running_twin(study, space, params, trial.number)
        if busy is not None:
            if not baseline and space.sampler.name != "grid" and finite(space):
                # an unseen candidate goes next, so that this worker does not draw the one
                # being measured again
                unseen = unseen_candidate(space, seen_params(study, space) + running_params(
                    study, space, trial.number), self.rng)
                if unseen is not None:
                    study.enqueue_trial(unseen, skip_if_exists=True)
            doing = "is queued with" if busy.state is TrialState.WAITING else \
                "of another worker is measuring"
            hand_back(study, trial, f"trial {busy.number} {doing} the same settings",
                      requeue=False)
        return params

    def _result(self, trial: optuna.Trial, params: TrialParams, baseline: bool) -> TrialResult:
        """Refused before a start, answered from a measured twin, or measured."""
        space, study = self.space, self.study
        why_not = None if baseline else _why_not(space, params, self.precheck)
        if why_not is not None:
            # never start what cannot work: infeasible, learned from, not in the budget
            trial.set_user_attr(NO_START_ATTR, True)
            result = refused(params, *why_not)
            self.refused_in_a_row += 1
            return result
        twin = measured_twin(study, space, params, trial.number)
        if twin is not None:
            # a repeat draw costs no server start: the search never measures a candidate
            # twice (repeats belong to the confirmation round)
            trial.set_user_attr(REPEAT_OF, twin.number)
            result = result_of(twin)
            # not counted in the budget; so that a sampler stuck on a good point still makes
            # progress, an unseen candidate goes next (none left: the space is done)
            if space.sampler.name != "grid" and finite(space):  # grid: each point once
                unseen = unseen_candidate(space, seen_params(study, space), self.rng)
                if unseen is None:
                    self.exhausted = True
                    study.stop()
                else:
                    study.enqueue_trial(unseen)
            return result
        # a second look at the budget: a trial's start time is taken before the storage has
        # it, so one that started a moment earlier may be visible only now
        if surplus(study, trial.number, self.total):
            hand_back(study, trial, USED_UP)
        per_round = reports_rounds(space)

        def prune_check(step: int, value: float) -> bool:
            if math.isnan(value) or not per_round:
                return False  # not the objective's figure: never reported, never pruned
            trial.report(value, step)
            return trial.should_prune()

        return self.runner(params, trial.number, prune_check)

    def _conclude(self, trial: optuna.Trial, params: TrialParams, result: TrialResult,
                  baseline: bool) -> float | list[float]:
        """Record the result, count what stops the run, tell the CLI, give Optuna its value."""
        space, study = self.space, self.study
        if not trial.user_attrs.get(NO_START_ATTR):
            self.refused_in_a_row = 0
        elif self.refused_in_a_row >= self.cfg.max_no_starts:
            study.stop()
        s = score(space.objective, result)
        self.env_failures = 0
        trial.set_user_attr("args", dict(params.args))
        record(trial, result, s.constraints)
        cause = (setup_failure_cause(result.log_tail) if result.reason in STARTUP_FAILURES
                 else None)
        if cause is None:
            self.setup_causes.clear()
        else:
            self.setup_causes.append(cause)
            if len(self.setup_causes) >= SAME_CAUSE_STOPS and len(set(self.setup_causes)) == 1:
                study.stop()  # after this trial, recorded as it is
        if self.on_trial is not None:
            counts = not trial.user_attrs.get(NO_START_ATTR) and REPEAT_OF not in \
                trial.user_attrs
            self.on_trial(TrialReport(trial.number, dict(trial.params), s.value, s.feasible,
                                      result, baseline, trial.user_attrs.get(REPEAT_OF),
                                      space.objective.direction == "maximize",
                                      max(0, self.total - counted_trials(study) - counts),
                                      tuple(misses(s.constraints, result.metrics,
                                                   space.objective))))
        if result.status == "pruned":
            raise optuna.TrialPruned(result.detail)
        return list(s.values) if space.objective.multi else s.value


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
    return Tuner(space, cfg, study, runner, total, on_trial, precheck, on_note,
                 rng=random.Random(space.sampler.seed)).run()


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


__all__ = ["TrialReport", "Tuner", "tune"]
