"""What a trial is doing right now, for whoever watches (the live display).

The trial code calls `emit` at each phase; a listener installed with `listening` receives it.
Nothing flows back: with no listener, `emit` does nothing, and a listener that raises is
dropped from the event rather than let into the trial.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autotune.core.stats import Estimate

log = logging.getLogger(__name__)

Stage = Literal["starting", "warming", "measuring", "stopping"]


@dataclass(frozen=True)
class Phase:
    """One step of one server's life. `trial`: its run folder's name (trial-0003,
    round-02-vllm-defaults); `log`: the server's log, to show its last line while it starts."""

    trial: str
    stage: Stage
    log: Path | None = None
    level: str = ""  # the load level being measured
    round: int = 0  # rounds measured so far at that level
    interval: Estimate | None = None  # the watched metric over those rounds
    metric: str = ""


Listener = Callable[[Phase], None]
_listeners: list[Listener] = []


def emit(phase: Phase) -> None:
    for fn in list(_listeners):
        try:
            fn(phase)
        except Exception:  # a display's fault never ends a trial
            log.debug("a phase listener failed", exc_info=True)


@contextlib.contextmanager
def listening(fn: Listener) -> Iterator[None]:
    _listeners.append(fn)
    try:
        yield
    finally:
        _listeners.remove(fn)


__all__ = ["Phase", "emit", "listening"]
