"""One budget shared by every worker on a study (processes on one host or many, one storage).

Optuna gives each worker trials from one storage; this module decides, from what the storage
holds, how many more a worker may start. A trial counts once it is measured (trials.COUNTED,
not repeats nor candidates refused before a start); a trial RUNNING in another worker holds a
claim on the budget until it ends. Two workers that start a trial at the same instant may both
see one trial left: the trial that started later is then one too many (`surplus`): it hands
its candidate back to the queue and ends as FAIL, which no sampler learns from and the budget
does not count. "Later" is by start time, not by number: a queued trial's number is given when
it is queued, so a candidate handed back and taken again carries a lower number than a trial
another worker created a moment before it.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from time import monotonic, sleep

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, baseline_params, resolve
from autotune.study.trials import (
    BASELINE,
    COUNTED,
    NO_START_ATTR,
    REPEAT_OF,
    ROLE,
    SURPLUS,
    params_of,
)


class Surplus(Exception):
    """This trial is one too many for the shared budget, or another worker is measuring its
    candidate right now: it ends as FAIL, its candidate handed back, nothing measured."""


def _claims(t: FrozenTrial) -> bool:
    """Whether a trial uses the budget (measured) or holds a claim on it (running)."""
    return not t.user_attrs.get(NO_START_ATTR) and t.user_attrs.get(REPEAT_OF) is None


def running(study: optuna.Study, but: int | None = None) -> list[FrozenTrial]:
    """Trials running now (in any worker), except trial number `but`."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number != but and _claims(t)]


def _census(study: optuna.Study) -> tuple[int, list[FrozenTrial]]:
    """The measured trials' count and the running trials, from one read of the storage."""
    measured, runs = 0, []
    for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING)):
        if not _claims(t):
            continue
        if t.state is TrialState.RUNNING:
            runs.append(t)
        else:
            measured += 1
    return measured, runs


def left(study: optuna.Study, total: int) -> int:
    """Trials this worker may still start: the total less those measured and those running."""
    measured, runs = _census(study)
    return total - measured - len(runs)


def _start_key(t: FrozenTrial) -> tuple[float, int]:
    start = t.datetime_start.timestamp() if t.datetime_start is not None else float("inf")
    return start, t.number


def surplus(study: optuna.Study, number: int, total: int) -> bool:
    """Whether trial `number`, just started, is beyond the budget: the measured trials and the
    running ones that started before it use it up. A trial checks after its own start, so it
    sees every trial that started before it (running, or measured); the earlier of two never
    counts the later one. Start times come from each worker's clock: workers on several hosts
    need their clocks kept in step (NTP), as the heartbeat already does."""
    measured, runs = _census(study)
    mine = next((t for t in runs if t.number == number), None)
    if mine is None:  # not running (cannot happen for a trial being measured): count all
        return measured + len(runs) >= total
    return measured + sum(1 for t in runs if _start_key(t) < _start_key(mine)) >= total


def running_params(study: optuna.Study, space: SearchSpace, but: int) -> list[TrialParams]:
    """What the trials running now (except `but`) measure."""
    out = []
    for t in running(study, but):
        try:
            out.append(params_of(space, t))
        except Exception:  # still drawing its settings
            continue
    return out


DRAWN = "drawn"  # user attr: the trial's settings are all drawn (running_twin compares them)
# A trial waits for an earlier one to finish drawing its settings until it has, or has ended
# (a dead worker's trial ends once its heartbeat is stale); on a machine so loaded that one
# draw takes longer than this, the trial goes on without waiting (a rare repeat, not a hang).
DRAW_WAIT_S = 300.0
STALE_CHECK_S = 2.0  # how often, while waiting, a dead worker's trials are looked for


def running_twin(study: optuna.Study, space: SearchSpace, params: TrialParams,
                 number: int) -> FrozenTrial | None:
    """An earlier trial (a lower number) that measures exactly these settings: running now in
    another worker, or queued with them (it is measured once a worker takes it: a trial
    created while another worker was queuing it has the higher number, and gives way). An
    earlier trial still drawing its settings is waited for: the lower number measures, the
    higher one gives way, whoever drew first."""
    deadline = monotonic() + DRAW_WAIT_S
    stale_check = monotonic() + STALE_CHECK_S
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,
                                                                       TrialState.WAITING))
                   if t.number < number and (t.state is TrialState.WAITING or _claims(t))]
        drawing = [t for t in earlier
                   if t.state is TrialState.RUNNING and not t.user_attrs.get(DRAWN)]
        if not drawing or monotonic() > deadline:
            break
        if monotonic() > stale_check:
            fail_stale(study)
            stale_check = monotonic() + STALE_CHECK_S
        sleep(0.05)
    for t in earlier:
        try:
            if t.state is TrialState.WAITING:
                theirs = queued_params(space, t)
            elif t.user_attrs.get(DRAWN):
                theirs = params_of(space, t)
            else:
                continue
        except Exception:  # settings it cannot resolve: not a twin
            continue
        if theirs == params:
            return t
    return None


def queued_params(space: SearchSpace, t: FrozenTrial) -> TrialParams | None:
    """What a queued trial will measure, when its queue entry names every tuned option (vLLM's
    defaults for the baseline; a dead worker's trial queued again carries its params): None
    when the sampler will draw some of it."""
    fixed = t.system_attrs.get("fixed_params") or t.params
    if t.user_attrs.get(ROLE) == BASELINE:
        return baseline_params(space)
    if not isinstance(fixed, dict) or not set(space.tuned()) <= set(fixed):
        return None
    return resolve(space, fixed)


def handed_back(study: optuna.Study) -> int:
    """Trials that started beyond the budget and gave their candidate back (coordination)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.user_attrs.get(SURPLUS))


class _QuietSurplus(logging.Filter):
    """Optuna logs every failed trial with its traceback, then once more without a value;
    a hand-back is not a failure, an interrupt is said in one line (autotune.cli.entry), and
    autotune says what failed in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        interrupted = record.exc_info is not None and record.exc_info[0] is KeyboardInterrupt
        return ("Surplus(" not in text and not interrupted
                and not text.endswith("failed with value None."))


logging.getLogger("optuna.study._optimize").addFilter(_QuietSurplus())


def hand_back(study: optuna.Study, trial: optuna.Trial, why: str, requeue: bool = True
              ) -> None:
    """End a trial that must not measure (beyond the budget, or its candidate is being
    measured by another worker): a queued candidate goes back to the queue (`requeue`)."""
    trial.set_user_attr(SURPLUS, True)
    fixed = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
    if fixed is not None and requeue:
        study.enqueue_trial(fixed, user_attrs={ROLE: trial.user_attrs[ROLE]}
                            if ROLE in trial.user_attrs else None)
    raise Surplus(why)


WORKER = "worker"  # user attr: the host and process that ran the trial


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def started(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose heartbeat is stale (their worker died); the storage's
    callback queues each candidate again. Returns their numbers."""
    before = [t.number for t in running(study)]
    if not before:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return [n for n in before if states.get(n) == optuna.trial.TrialState.FAIL]


__all__ = [
    "SURPLUS",
    "WORKER",
    "Surplus",
    "fail_stale",
    "hand_back",
    "handed_back",
    "left",
    "running",
    "running_params",
    "running_twin",
    "started",
    "surplus",
    "worker_id",
]
