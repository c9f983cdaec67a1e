"""Turn the verdict into what is on disk: write the chosen profile, or keep the one there.

A profile is replaced only by settings that beat it beyond noise in this run's confirmation
round; one measured on other hardware only with --replace. A replaced profile is copied to
`history/` first, and every write is atomic. A profile kept because this run measured its
settings again records this run's confirmation beside the one it was written with, so the
file always says what the last run found. Rounds in which the chosen settings failed or broke
a constraint are counted from the rounds' own records and said in the profile's header.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autotune import __version__
from autotune.app.inputs import Inputs, RunConfig
from autotune.decide.confirm import INCUMBENT_NAME, Arm, ArmRecord, Confirmation, same_settings
from autotune.decide.confirm import slug as slot_slug  # the rounds' folder names
from autotune.decide.scoring import score
from autotune.engine.argv import default_launcher, vllm_version
from autotune.measure.quality import AGREEMENT, numerics_note
from autotune.measure.result import TrialResult
from autotune.profiles.changelog import log_replacement
from autotune.profiles.confirmed import Breaks, Confirmed
from autotune.profiles.incumbent import Incumbent
from autotune.profiles.profile import (
    Profile,
    ProfileMeta,
    record_confirmation,
    served_as_measured,
    write_profile,
)
from autotune.space.goals import Objective
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
    breaks = None
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
        confirmation = _confirmation_summary(conf, inp.space.objective)
        breaks = breaks_of(record, inp.space.objective,
                           _rounds_read(cfg.runs_dir / name, record.name, conf.rounds))
    summary = _with_numerics(summary, inp.space, study, winner)
    if incumbent is not None and incumbent.params is not None and incumbent.comparable and (
            winner.role == "incumbent" or same_settings(winner.params, incumbent.params)):
        record_confirmation(path, Confirmed(
            date=_now(), autotune_version=__version__, vllm_version=vllm_version(),
            study=name, arm=winner.name, source="search" if conf is None else "confirmation",
            rounds=conf.rounds if conf is not None else 0,
            metrics=figures, gain=gain, verdict=summary, breaks=breaks,
            confirmation=confirmation))
        return Conclusion(False, True, f"kept {path}: {summary} (this run's figures are "
                                       "recorded in it beside those it was written with)")
    if incumbent is not None and not incumbent.comparable and not cfg.replace:
        return Conclusion(False, True, f"kept {path}: {incumbent.why}; this run's result "
                                       f"({winner.name}) was not written (pass --replace to "
                                       "replace it)")
    space, model = inp.space, inp.model
    meta = ProfileMeta(
        autotune_version=__version__,
        created=_now(),
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
        metrics=figures, gain=gain, verdict=summary, confirmation=confirmation, breaks=breaks,
        env=dict(winner.params.env), serve=serve_prefix(default_launcher()))
    settings = served_as_measured({"model": model.path, **model.args, **winner.params.args},
                                  meta.workload)
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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _shown(objective: Objective) -> list[str]:
    """The figures recorded per arm: the goals, the constrained metrics, peak memory."""
    return list(dict.fromkeys((*(g.metric for g in objective.goals()),
                               *objective.constraints, "peak_memory_bytes")))


def _confirmation_summary(conf: Confirmation, objective: Objective) -> dict[str, Any]:
    v = conf.verdict
    shown = _shown(objective)

    def dump(figures: dict[str, Any]) -> dict[str, Any]:
        return {m: figures[m].model_dump(mode="json") for m in shown if m in figures}

    return {
        "rounds": conf.rounds, "max_rounds": conf.max_rounds, "detect": conf.detect,
        "winner": v.winner,
        "settled": v.settled, "detectable": v.detectable, "more_rounds": v.more_rounds,
        "broken": v.broken, "choice": v.choice, "stopped": v.stopped,
        "reference": v.reference, "decision_level": round(v.level, 4), "min_gain": v.min_gain,
        "arms": [{"name": a.name, "role": a.role, "trial": a.trial,
                  conf.metric: a.figures[conf.metric].model_dump(mode="json")
                  if conf.metric in a.figures else None,
                  "vs_baseline": a.vs_baseline[conf.metric].model_dump(mode="json")
                  if conf.metric in a.vs_baseline else None,
                  "figures": dump(a.figures),
                  "ratios": {} if a.role == "baseline" else dump(a.vs_baseline),
                  "failure": a.failure,
                  "missed": sum(x is None for x in a.objective)} for a in conf.arms],
        "comparisons": [c.model_dump(mode="json") for c in v.comparisons],
    }


def _rounds_read(run_dir: Path, arm: str, rounds: int) -> list[TrialResult | None]:
    """The arm's result of each round, as the confirmation recorded it (None: not there)."""
    out: list[TrialResult | None] = []
    for r in range(rounds):
        where = run_dir / "confirm" / f"round-{r + 1:02d}-{slot_slug(arm)}" / "result.json"
        try:
            doc = json.loads(where.read_text(encoding="utf-8"))
            out.append(TrialResult.model_validate(
                {k: v for k, v in doc.items() if k in TrialResult.model_fields}))
        except (OSError, ValueError, AttributeError):
            out.append(None)
    return out


def breaks_of(record: ArmRecord, objective: Objective,
              results: list[TrialResult | None]) -> Breaks | None:
    """In how many rounds the arm failed or broke a constraint (None: it missed none). Which
    constraint: from each round's own result, scored as the confirmation scored it."""
    missed = [i for i, v in enumerate(record.objective) if v is None]
    if not missed:
        return None
    broken: dict[str, int] = {}
    failed = 0
    for i in missed:
        res = results[i] if i < len(results) else None
        if res is None:
            continue
        if res.status != "ok":
            failed += 1
            continue
        for key, excess in score(objective, res).constraints.items():
            name, _, side = key.rpartition("_")
            bound = objective.constraints.get(name)
            if excess > 0 and bound is not None:
                label = (f"{name} <= {bound.max:g}" if side == "max" and bound.max is not None
                         else f"{name} >= {bound.min:g}")
                broken[label] = broken.get(label, 0) + 1
    return Breaks(rounds=len(record.objective), missed=len(missed), broken=broken,
                  failed=failed, failure=record.failure)


def serve_prefix(launcher: tuple[str, ...]) -> str:
    """How to start vLLM with a config file on this kind of host."""
    if launcher[-1] == "serve":
        return "vllm serve"
    return "python -m " + launcher[-1]
