"""What `run --json` and `retune --json` write for other tools: the run's outcome as data,
in the schema `autotune.app.schema.RunDoc` (docs/json.md)."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from autotune.app.run import RunOutcome
from autotune.app.schema import Chosen, ConfirmationDoc, RunDoc, TrialDoc, arm_id
from autotune.profiles.profile import read_profile
from autotune.study.standing import study_objective_or_none
from autotune.study.trials import shown


def chosen(outcome: RunOutcome) -> Chosen | None:
    """The settings the verdict chose: the confirmation's winner, or (nothing to confirm
    against) the profile this run wrote; None when there is no verdict."""
    conf = outcome.confirmation
    if conf is not None:
        won = conf.arm(conf.verdict.winner)
        if won is None:
            return None
        return Chosen(arm=arm_id(won.role, won.trial), name=won.name, trial=won.trial,
                      vllm_defaults=won.role == "baseline")
    if not outcome.profile_written or outcome.profile_path is None:
        return None
    trial = read_profile(outcome.profile_path).meta.trial
    return Chosen(arm=None, name="vLLM defaults" if trial is None else f"trial {trial}",
                  trial=trial, vllm_defaults=trial is None)


def run_doc(outcome: RunOutcome) -> RunDoc:
    """The verdict, the profile, every trial's figures and the confirmation round."""
    objective = study_objective_or_none(outcome.study.user_attrs)
    conf = outcome.confirmation
    return RunDoc(
        decided=outcome.decided, deferred=outcome.deferred, verdict=outcome.note,
        profile=None if outcome.profile_path is None else str(outcome.profile_path),
        written=outcome.profile_written, study=outcome.study.study_name,
        chosen=chosen(outcome),
        search_best_trial=None if outcome.best is None else outcome.best.number,
        # queued candidates not yet run and candidates handed back are not trials of it
        trials=[TrialDoc.of(t, objective) for t in outcome.study.get_trials(deepcopy=False)
                if shown(t)],
        queued=len(outcome.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))),
        confirmation=None if conf is None else ConfirmationDoc.of(conf))


def run_summary(outcome: RunOutcome) -> dict[str, Any]:
    """`run_doc` as JSON data (NaN and infinities as null)."""
    import json

    data: dict[str, Any] = json.loads(run_doc(outcome).model_dump_json())
    return data


__all__ = ["chosen", "run_doc", "run_summary"]
