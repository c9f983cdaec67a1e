"""Pure: first-token stalls, found in a round's requests and said, not hidden in an interval.

vLLM's CPU engine on a small machine admits new requests in waves: in a round whose median
TTFT is tens of milliseconds, runs of consecutive requests (by the time they were sent) wait a
second or more for their first token, while their tokens after it come at the usual pace
(issue 33, docs/measurements.md). A round with such a wave measures the wave as much as the
settings, and its figures widen the interval of the trial without saying why.

A request is *slow to its first token* when its TTFT is above both `STALL_MIN_S` and
`STALL_FACTOR` times the round's median TTFT; a *stall* is a run of at least `STALL_RUN`
consecutive slow requests, and its size is the median TTFT of the requests in its longest run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Protocol

STALL_MIN_S = 0.5
STALL_FACTOR = 5.0
STALL_RUN = 4


class _Sample(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def ttft(self) -> float | None: ...


def first_token_stall(samples: Sequence[_Sample]) -> float | None:
    """Seconds of the round's longest first-token stall (its requests' median TTFT), or None
    when the round had none."""
    seen = sorted((s for s in samples if s.ok and s.ttft is not None), key=lambda s: s.start)
    ttfts = [float(s.ttft) for s in seen if s.ttft is not None]
    if len(ttfts) < STALL_RUN:
        return None
    bar = max(STALL_MIN_S, STALL_FACTOR * statistics.median(ttfts))
    best: list[float] = []
    run: list[float] = []
    for t in ttfts:
        if t > bar:
            run.append(t)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return statistics.median(best) if len(best) >= STALL_RUN else None


def stall_note(stalls: Sequence[float | None]) -> str | None:
    """'2 of 6 rounds had a first-token stall of about 1.2 s' (None: no round had one)."""
    found = [s for s in stalls if s is not None]
    if not found:
        return None
    size = statistics.median(found)
    return (f"{len(found)} of {len(stalls)} rounds had a first-token stall of about "
            f"{size:.1f} s")


__all__ = ["STALL_FACTOR", "STALL_MIN_S", "STALL_RUN", "first_token_stall", "stall_note"]
