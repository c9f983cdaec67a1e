"""What one confirmation recorded of a profile's settings: its figures, verdict and misses.

A profile is written with the confirmation that chose it. A later run that measures the same
settings again and keeps them appends its own record (`Confirmed`) beside that first one, so
the file always carries the result of the last run that looked at it, and what it was first
written with stays. `Breaks` says in how many rounds the settings failed or broke one of the
space's constraints (an SLO): a profile kept or chosen all the same says so in its header.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.core.stats import Estimate
from autotune.core.units import figure

Source = Literal["confirmation", "search"]


class Breaks(BaseModel):
    """The rounds of a confirmation in which these settings did not count: failed outright,
    or served and broke a constraint."""

    model_config = ConfigDict(extra="forbid")

    rounds: int  # rounds measured
    missed: int  # rounds that failed or broke a constraint
    # each constraint broken ("p95_ttft_ms <= 1000") and in how many rounds; empty when the
    # rounds' own records could not be read back (then only `missed` is known)
    broken: dict[str, int] = Field(default_factory=dict)
    failed: int = 0  # rounds in which the server failed outright (of those read back)
    failure: str | None = None  # the first round's reason


def breaks_text(b: Breaks, metrics: dict[str, Estimate]) -> str:
    """'broke p95_ttft_ms <= 1000 in 1 of 3 rounds (p95_ttft_ms 599 [0, 1607] over the
    rounds that served)'."""
    parts = []
    for label, k in b.broken.items():
        metric = label.split()[0]
        fig = metrics.get(metric)
        parts.append(f"broke {label} in {k} of {b.rounds} rounds"
                     + (f" ({metric} {figure(metric, fig)} over the rounds that served)"
                        if fig is not None else ""))
    if b.failed:
        parts.append(f"failed {b.failed} of {b.rounds} rounds ({b.failure or 'failed'})")
    if not parts:
        parts.append(f"failed or broke a constraint in {b.missed} of {b.rounds} rounds "
                     f"({b.failure or 'failed'})")
    return "; ".join(parts)


class Confirmed(BaseModel):
    """A later run's confirmation that measured the profile's settings again and kept them."""

    model_config = ConfigDict(extra="forbid")

    date: str
    autotune_version: str
    vllm_version: str
    study: str
    arm: str  # the name its settings were measured under ("vLLM defaults", "current profile")
    source: Source = "confirmation"  # "search": one server start, nothing to confirm against
    rounds: int = 0
    metrics: dict[str, Estimate]
    gain: dict[str, Estimate] = Field(default_factory=dict)  # paired ratios to vLLM's defaults
    verdict: str = ""
    breaks: Breaks | None = None
    confirmation: dict[str, Any] = Field(default_factory=dict)


def describe_when(date: str, source: Source, rounds: int) -> str:
    """'confirmed 2026-12-05 over 6 interleaved rounds', or the search's one start."""
    if source == "search":
        return f"search figures of {date[:10]} (one server start, not confirmed side by side)"
    return f"confirmed {date[:10]} over {rounds} interleaved rounds"
