"""Which confirmation a report shows: every record of one the study holds (in its storage,
and in its run folder, the current one and those set aside by later runs), and for a
profile, the one that made it.

A study goes on after a profile is written (a re-run, a re-tune): its latest confirmation may
be another run's. A profile's report shows the profile's own confirmation when one of the
records is it, else says plainly that the study holds another run and which one it shows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autotune.decide.confirm import Confirmation
from autotune.profiles.profile import Profile
from autotune.study.confirmations import kept

DONE = "confirmation.json"  # a finished confirmation's record in its folder (app.resume)


@dataclass(frozen=True)
class Record:
    finished: str  # when (UTC, ISO 8601)
    confirmation: Confirmation
    where: str  # "the study's storage" or the record's path


def _parse(doc: Any) -> Confirmation | None:
    try:
        return Confirmation.model_validate(doc)
    except (ValidationError, TypeError):
        return None  # a record of an older autotune: not shown rather than misread


def records(attrs: dict[str, Any], run_dir: Path) -> list[Record]:
    """Every confirmation record of the study, oldest first, each once (the storage's copy of
    a record in the run folder is the same record)."""
    found: list[Record] = []
    for when, doc in kept(attrs):
        conf = _parse(doc)
        if conf is not None:
            found.append(Record(when, conf, "the study's storage"))
    folders = [run_dir / "confirm", *sorted(run_dir.glob("confirm.*"))] \
        if run_dir.is_dir() else []
    for folder in folders:
        path = folder / DONE
        try:
            text = path.read_text(encoding="utf-8")
            mtime = path.stat().st_mtime
        except OSError:
            continue
        try:
            conf = _parse(json.loads(text))
        except ValueError:
            conf = None
        if conf is None or any(r.confirmation == conf for r in found):
            continue
        when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        found.append(Record(when, conf, str(path)))
    return sorted(found, key=lambda r: r.finished)


def made(profile: Profile, conf: Confirmation) -> bool:
    """Whether this confirmation is the one that wrote the profile: its verdict, rounds and
    every arm's figure as the profile recorded them."""
    mine = profile.meta.confirmation
    if not mine or mine.get("rounds") != conf.rounds:
        return False
    if not profile.meta.verdict.startswith(conf.verdict.summary):
        return False
    arms = mine.get("arms") or []
    if [(a.get("name"), a.get("trial")) for a in arms] != [(a.name, a.trial)
                                                           for a in conf.arms]:
        return False
    for a, rec in zip(arms, conf.arms, strict=True):
        fig = rec.figures.get(conf.metric)
        theirs = a.get(conf.metric) or {}
        # the profile keeps each figure to 6 significant digits
        if (fig is None) != (not theirs) or (fig is not None and not _same(
                theirs.get("value"), fig.model_dump(mode="json")["value"])):
            return False
    return True


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)
    return a == b


def pick(found: list[Record], profile: Profile | None) -> tuple[Record | None, str | None]:
    """The record to show, and a note when it is not the named profile's own."""
    latest = found[-1] if found else None
    if profile is None:
        return latest, None
    own = next((r for r in reversed(found) if made(profile, r.confirmation)), None)
    if own is not None:
        return own, None
    written = f"this profile was written on {profile.meta.created[:10]}"
    if latest is None:
        if not profile.meta.confirmation:
            return None, None  # made without a confirmation (nothing to confirm against)
        return None, (f"{written}; its confirmation round is not in the study any more "
                      "(its verdict above is the profile's own record)")
    if not profile.meta.confirmation:
        own_line = "without a confirmation round"
    else:
        own_line = "from a confirmation round the study no longer holds"
    return latest, (f"{written} {own_line}; the study {profile.meta.study!r} now holds "
                    f"another run: the confirmation shown is the one finished on "
                    f"{latest.finished[:10]} ({latest.where}), whose verdict was: "
                    f"{latest.confirmation.verdict.summary}")


__all__ = ["Record", "made", "pick", "records"]
