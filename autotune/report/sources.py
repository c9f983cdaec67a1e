"""What a report reads beside its study that is not there: the run folder, the confirmation
round's record, the chosen and baseline trials' folders (moved, deleted, another --runs-dir).

A study is in its storage; the figures a page draws beyond it are in the run folder the run
wrote (`autotune-runs/STUDY`). When that is gone the report says which paths it looked for,
rather than a verdict that reads as if no confirmation round was ever run.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autotune.scale.lease import DONE
from autotune.study.trials import REPEAT_OF


def confirmed_in_storage(study: optuna.Study) -> bool:
    """Whether the storage records a finished confirmation round of this study (its lease)."""
    prefix = f"{study.study_name}:confirm:"
    return any(s.study_name.startswith(prefix) and DONE in s.user_attrs
               for s in study._storage.get_all_studies())


def missing_sources(study: optuna.Study, runs_dir: Path, trials: list[int | None],
                    confirmed: bool) -> list[Path]:
    """The paths the report needs and could not find: the run folder itself when it is not
    there; else the confirmation's record when the storage says a round ran (`confirmed`),
    and the folders of `trials` (vLLM's defaults, the chosen one) that measured a server."""
    run_dir = runs_dir / study.study_name
    if not run_dir.is_dir():
        return [run_dir]
    out = []
    record = run_dir / "confirm" / "confirmation.json"
    if confirmed and not record.is_file():
        out.append(record)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in dict.fromkeys(n for n in trials if n is not None):
        t = by_number.get(number)
        if t is None or t.user_attrs.get(REPEAT_OF) is not None:
            continue  # answered from another trial's measurement: no folder of its own
        folder = run_dir / f"trial-{number:04d}"
        if not folder.is_dir():
            out.append(folder)
    return out


def missing_note(missing: list[Path], verdict: str, confirmation_shown: bool,
                 profile_named: bool) -> str:
    """The verdict, saying what could not be found (and, without a profile or a confirmation
    to quote, that the round's outcome is unknown rather than absent)."""
    if not missing:
        return verdict
    paths = ", ".join(str(p) for p in missing)
    found = (f"could not find {paths} (--runs-dir names the folder the run wrote them under, "
             "autotune-runs by default)")
    if confirmation_shown or profile_named:
        return f"{verdict}; {found}"
    return f"no confirmation round found: {found}"


__all__ = ["confirmed_in_storage", "missing_note", "missing_sources"]
