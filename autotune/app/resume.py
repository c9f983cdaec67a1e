"""What a confirmation leaves on disk between its rounds, so an interrupted one resumes.

`confirm/plan.json` names the arms (and their settings) before the first round; each slot's
`result.json` is written as it is measured. A run that finds a plan for the same arms and no
`confirmation.json` (the mark of a finished confirmation) takes the slots already measured
instead of measuring them again. Any other `confirm/` folder (a finished confirmation, or one
for other arms) is kept, renamed with the time it was set aside, and a new one is begun.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from autotune.decide.confirm import Arm
from autotune.measure.records import write_json
from autotune.measure.result import TrialResult
from autotune.study import confirmations

log = logging.getLogger(__name__)

PLAN = "plan.json"
DONE = "confirmation.json"


def _plan(arms: Sequence[Arm]) -> list[dict[str, Any]]:
    return [{"name": a.name, "role": a.role, "args": dict(a.params.args),
             "env": dict(a.params.env)} for a in arms]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def begin(run_dir: Path, arms: Sequence[Arm]) -> Callable[[str], TrialResult | None]:
    """Set up `run_dir/confirm` for these arms; returns the slots already measured there."""
    folder = run_dir / "confirm"
    plan = json.loads(json.dumps(_plan(arms)))  # as it reads back from JSON
    resumable = (folder / PLAN).is_file() and not (folder / DONE).exists() and _read(
        folder / PLAN) == {"arms": plan}
    if folder.exists() and not resumable:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        folder.rename(run_dir / f"confirm.{stamp}")
    if not resumable:
        write_json(folder / PLAN, {"arms": plan})

    def previous(where: str) -> TrialResult | None:
        doc = _read(run_dir / where / "result.json")
        if not isinstance(doc, dict):
            return None
        fields = {k: v for k, v in doc.items() if k in TrialResult.model_fields}
        try:
            result = TrialResult.model_validate(fields)
        except ValueError:
            return None
        log.info("%s: measured before the run was interrupted: taken as it is", where)
        return result
    return previous


def finish(run_dir: Path, doc: Any, study: optuna.Study | None = None) -> None:
    """The mark of a finished confirmation, beside its rounds and in the study's storage."""
    write_json(run_dir / "confirm" / DONE, doc)
    if study is not None:  # and in the study's storage (study.confirmations)
        confirmations.keep(study, doc)
