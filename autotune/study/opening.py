"""Opening the Optuna study: its storage, its identity (a study is never continued under other
conditions), its sampler and pruner, and a new study's first candidates: vLLM's defaults, warm
starts, the space's own, the screens."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from autotune.core.errors import UserError
from autotune.measure.result import watched_metric
from autotune.measure.stopping import PruneRule
from autotune.profiles.warm import WARM_FROM, WarmStart
from autotune.space.params import CategoricalParam, holds
from autotune.space.search import SearchSpace
from autotune.study.pruning import IntervalPruner
from autotune.study.samplers import make_sampler
from autotune.study.screening import enqueue_screens, uses_screening
from autotune.study.storage import open_error, redact_url
from autotune.study.trials import BASELINE, ROLE

log = logging.getLogger(__name__)

# (what to say) -> None: a worker's notes (waiting for others, a dead worker's trial retried)
Note = Callable[[str], None]

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
