"""A multi-objective study's Pareto front: as a record, and exported as profiles.

Everything here is read back from the study (its trials' figures and settings, the run's
attrs), so a front can be listed and exported long after the run, from any machine that
reaches the storage. An exported point carries its search figures (one server start, the
interval over its rounds) and says that it was not confirmed side by side.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune import __version__
from autotune.core.errors import UserError
from autotune.decide.pareto import Point, knee_distance
from autotune.profiles.profile import Profile, ProfileMeta, model_slug, write_profile
from autotune.space.goals import Objective
from autotune.study.trials import is_baseline, metrics_of, pareto_trials


def study_objective(study: optuna.Study) -> Objective:
    raw = study.user_attrs.get("objective")
    if raw is None:
        raise UserError(f"study {study.study_name!r} does not record its objective (made by "
                        "an older autotune): run it again under a new --study")
    return Objective.model_validate(raw)


def front_record(study: optuna.Study, objective: Objective) -> dict[str, Any]:
    """The front as JSON: each point's settings and every goal with its interval."""
    pts = pareto_trials(study, objective)
    goals = objective.goals()
    return {
        "study": study.study_name,
        "goals": [g.model_dump() for g in goals],
        "choose": objective.choose,
        "points": [{
            "trial": t.number, "vllm_defaults": is_baseline(t), "chosen": i == 0,
            "args": t.user_attrs.get("args", {}), "env": t.user_attrs.get("env", {}),
            "figures": {g.metric: metrics_of(t)[g.metric].model_dump(mode="json")
                        for g in goals if g.metric in metrics_of(t)},
            "knee_distance": round(knee_distance(_point(t), [_point(p) for p in pts], goals),
                                   4),
        } for i, t in enumerate(pts)],
    }


def _point(t: FrozenTrial) -> Point:
    return Point(t.number, tuple(t.values))


def export_front(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Every point of the front as a profile file under `out_dir`, named by its trial."""
    objective = study_objective(study)
    if not objective.multi:
        raise UserError(f"study {study.study_name!r} has one objective: it has no Pareto "
                        "front (its best trial is the run's profile)")
    a = study.user_attrs
    identity = a.get("identity") or {}
    written = []
    pts = pareto_trials(study, objective)
    for i, t in enumerate(pts):
        metrics = metrics_of(t)
        role = "vLLM's defaults" if is_baseline(t) else f"trial {t.number}"
        meta = ProfileMeta(
            autotune_version=__version__,
            created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            target=a.get("target", "?"), model=a.get("model", "?"),
            model_revision=identity.get("model_revision", "unknown"),
            hardware=a.get("hardware") or {}, vllm_version=a.get("vllm_version", "unknown"),
            space=a.get("space", "?"), space_fingerprint=identity.get("space", ""),
            workload=a.get("workload") or {}, study=study.study_name, trial=t.number,
            objective={**objective.model_dump(mode="json"), "front_rank": i},
            metrics=metrics,
            verdict=f"{role}: point {i + 1} of {len(pts)} on the Pareto front "
                    f"({objective.choose} rule order); search figures from one server "
                    "start, not confirmed side by side",
            env=t.user_attrs.get("env") or {})
        settings = {"model": a.get("model_path", a.get("model")), **(a.get("model_args") or {}),
                    **(t.user_attrs.get("args") or {})}
        path = out_dir / f"{model_slug(str(a.get('model', 'model')))}.front-{i + 1:02d}-" \
                         f"trial-{t.number:04d}.yaml"
        write_profile(Profile(settings=settings, meta=meta), path)
        written.append(path)
    return written


__all__ = ["export_front", "front_record", "study_objective"]
