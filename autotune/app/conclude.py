"""Turn the verdict into what is on disk: write the chosen profile, or keep the one there.

A profile is replaced only by settings that beat it beyond noise in this run's confirmation
round; one measured on other hardware only with --replace. A replaced profile is copied to
`history/` first, and every write is atomic.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autotune import __version__
from autotune.app.inputs import Inputs, RunConfig
from autotune.decide.confirm import INCUMBENT_NAME, Arm, Confirmation, same_settings
from autotune.engine.argv import default_launcher, vllm_version
from autotune.measure.quality import AGREEMENT, numerics_note
from autotune.profiles.changelog import log_replacement
from autotune.profiles.incumbent import Incumbent
from autotune.profiles.profile import Profile, ProfileMeta, write_profile
from autotune.space.search import SearchSpace, baseline_params
from autotune.study.trials import is_baseline, metrics_of


@dataclass(frozen=True)
class Conclusion:
    written: bool
    decided: bool  # a verdict was reached: a profile written, or one kept
    note: str


def conclude(path: Path, study: optuna.Study, cfg: RunConfig, inp: Inputs,
             identity: dict[str, str], name: str, incumbent: Incumbent | None,
             conf: Confirmation | None, arms: list[Arm]) -> Conclusion:
    """Keep or write the profile the verdict chose (`conf`; None: a single arm, unconfirmed)."""
    if conf is None:
        winner = arms[0]
        figures = _search_figures(study, winner)
        summary = (f"{winner.name}: no other candidate finished the search feasible (pruned, "
                   "failed or off a constraint), so there was nothing to confirm against and "
                   "no gain can be stated")
        gain: dict[str, Any] = {}
        confirmation: dict[str, Any] = {}
    else:
        record = conf.arm(conf.verdict.winner)
        if record is None:
            return Conclusion(False, False, f"no profile written: {conf.verdict.summary}")
        winner = next(a for a in arms if a.name == record.name)
        figures, summary = record.figures, conf.verdict.summary
        # vLLM's defaults are not stated against themselves: the finalists' ratios to them
        # are in the confirmation block
        gain = {} if winner.role == "baseline" else record.vs_baseline
        confirmation = _confirmation_summary(conf)
    summary = _with_numerics(summary, inp.space, study, winner)
    if incumbent is not None and incumbent.params is not None and incumbent.comparable and (
            winner.role == "incumbent" or same_settings(winner.params, incumbent.params)):
        return Conclusion(False, True, f"kept {path}: {summary}")
    if incumbent is not None and not incumbent.comparable and not cfg.replace:
        return Conclusion(False, True, f"kept {path}: {incumbent.why}; this run's result "
                                       f"({winner.name}) was not written (pass --replace to "
                                       "replace it)")
    space, model = inp.space, inp.model
    meta = ProfileMeta(
        autotune_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        target=cfg.target, model=cfg.model, model_revision=identity["model_revision"],
        hardware=inp.hardware.describe(), vllm_version=vllm_version(), space=space.name,
        space_fingerprint=space.fingerprint(), workload=space.workload.model_dump(mode="json"),
        study=name, trial=winner.trial,
        objective={"metric": space.objective.metric, "direction": space.objective.direction,
                   "value": figures[space.objective.metric].value
                   if space.objective.metric in figures else None,
                   **({"pareto": [g.model_dump() for g in space.objective.pareto],
                       "choose": space.objective.choose} if space.objective.multi else {}),
                   **({"weights": space.objective.weights} if space.objective.weights
                      else {})},
        metrics=figures, gain=gain, verdict=summary, confirmation=confirmation,
        env=dict(winner.params.env), serve=serve_prefix(default_launcher()))
    settings = {"model": model.path, **model.args, **winner.params.args}
    new = Profile(settings=settings, meta=meta)
    kept = write_profile(new, path)
    if kept is not None:
        replaced = next((a.name for a in arms if incumbent is not None and incumbent.params
                         is not None and same_settings(a.params, incumbent.params)),
                        INCUMBENT_NAME)
        log_replacement(path, kept, incumbent.profile if incumbent else None, new, conf,
                        winner.name, replaced)
    return Conclusion(True, True, summary + (f" (the profile it replaced is in {kept})"
                                             if kept else ""))


def _with_numerics(summary: str, space: SearchSpace, study: optuna.Study, winner: Arm) -> str:
    """The verdict, saying so when the winner's settings change numerics (quality.py)."""
    found = _search_figures(study, winner).get(AGREEMENT) if winner.trial is not None else None
    note = numerics_note(space.quality, winner.params.args, baseline_params(space).args, found)
    return f"{summary}; {note}" if note else summary


def _search_figures(study: optuna.Study, arm: Arm) -> dict[str, Any]:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    trial = next((t for t in done if (arm.trial is None and is_baseline(t))
                  or t.number == arm.trial), None)
    return metrics_of(trial) if trial is not None else {}


def _confirmation_summary(conf: Confirmation) -> dict[str, Any]:
    v = conf.verdict
    return {
        "rounds": conf.rounds, "max_rounds": conf.max_rounds, "detect": conf.detect,
        "settled": v.settled, "detectable": v.detectable, "more_rounds": v.more_rounds,
        "broken": v.broken,
        "reference": v.reference, "decision_level": round(v.level, 4), "min_gain": v.min_gain,
        "arms": [{"name": a.name, "role": a.role, "trial": a.trial,
                  conf.metric: a.figures[conf.metric].model_dump(mode="json")
                  if conf.metric in a.figures else None,
                  "vs_baseline": a.vs_baseline[conf.metric].model_dump(mode="json")
                  if conf.metric in a.vs_baseline else None,
                  "failure": a.failure} for a in conf.arms],
        "comparisons": [c.model_dump(mode="json") for c in v.comparisons],
    }


def serve_prefix(launcher: tuple[str, ...]) -> str:
    """How to start vLLM with a config file on this kind of host."""
    if launcher[-1] == "serve":
        return "vllm serve"
    return "python -m " + launcher[-1]
