"""The confirmation records a study keeps in its own storage (user attrs), so that what a
verdict rests on travels with the study: a copy of the database without its run folder still
reports it, and a profile's report finds its own run among later ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

import optuna

PREFIX = "confirmation:"  # + the UTC time the confirmation finished: one attr per record


def keep(study: optuna.Study, doc: dict[str, Any], now: dt.datetime | None = None) -> str:
    """Store a finished confirmation's record (Confirmation as JSON); returns its key."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    study.set_user_attr(PREFIX + stamp, doc)
    return PREFIX + stamp


def kept(attrs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(finished at, record) of every confirmation the study holds, oldest first."""
    return sorted((k.removeprefix(PREFIX), v) for k, v in attrs.items()
                  if k.startswith(PREFIX) and isinstance(v, dict))


__all__ = ["PREFIX", "keep", "kept"]
