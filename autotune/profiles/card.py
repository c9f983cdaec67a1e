"""Pure: a profile's baseline card, the figures people size a deployment by, each judged.

A card holds, for the profile's own settings on one fresh server: the P99 end-to-end latency
of one request at a time, the server's peak memory (its GPU processes on a GPU, its process
tree's PSS on the CPU engine), the capacity at an SLO (the highest load at which the SLO held,
as the bracket held..broke over rounds) and the memory growth per hour over a short soak. Each
line is judged against the thresholds of the space's `card:` section: `healthy` (its
conservative end is within the healthy bound), `warning` (its figure is past the warning
bound), `between`, or `unjudged` (no thresholds declared, or nothing measured).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune.core.stats import Estimate

Judgement = Literal["healthy", "warning", "between", "unjudged"]
Over = Literal["rate", "concurrency"]

LINES = ("p99_e2e_ms", "peak_memory_gib", "capacity", "growth_mib_per_h")
LOWER_IS_BETTER = {"p99_e2e_ms": True, "peak_memory_gib": True, "capacity": False,
                   "growth_mib_per_h": True}


class Threshold(BaseModel):
    """A line's bounds: `healthy` at or better than this, `warning` at or worse than that."""

    model_config = ConfigDict(extra="forbid")

    healthy: float | None = None
    warning: float | None = None


# The table this project's users size by (Qwen3-0.6B on an A10G): latency and growth apply to
# any model; memory and capacity depend on the model, the hardware and the SLO, and are judged
# only where the space declares them.
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "p99_e2e_ms": Threshold(healthy=1200, warning=2000),
    "growth_mib_per_h": Threshold(healthy=50, warning=200),
}


class CardSpec(BaseModel):
    """The space's `card:` section: whether a card is measured and how it is judged."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    slo: dict[str, float] = Field(default_factory=lambda: {"p95_e2el_ms": 1500.0},
                                  description="the capacity's SLO, unless the workload has one")
    over: Over = "rate"
    soak_s: float = Field(300.0, gt=0, description="the soak that measures memory growth")
    thresholds: dict[str, Threshold] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lines(self) -> CardSpec:
        for name, t in self.thresholds.items():
            if name not in LINES:
                raise ValueError(f"thresholds: unknown line {name!r} (one of {', '.join(LINES)})")
            if t.healthy is not None and t.warning is not None and (
                    t.healthy > t.warning if LOWER_IS_BETTER[name] else t.healthy < t.warning):
                better = "below" if LOWER_IS_BETTER[name] else "above"
                raise ValueError(f"thresholds.{name}: healthy ({t.healthy:g}) must be {better} "
                                 f"warning ({t.warning:g})")
        return self

    def threshold(self, line: str) -> Threshold | None:
        return self.thresholds.get(line) or DEFAULT_THRESHOLDS.get(line)


class CardCapacity(BaseModel):
    """The highest load at which the SLO held (mean over rounds, its interval over rounds) and
    the lowest at which it broke."""

    model_config = ConfigDict(extra="forbid")

    over: Over
    slo: dict[str, float]
    held: Estimate
    broke: Estimate | None = None


class CardLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    figure: Estimate | None
    judged: Judgement = "unjudged"
    threshold: Threshold | None = None


class Card(BaseModel):
    """What the card measured, how, and how each line was judged."""

    model_config = ConfigDict(extra="forbid")

    measured: str  # ISO time
    how: str  # rounds, requests, soak length: how every figure was taken
    memory_kind: Literal["gpu_process", "host_pss"]
    capacity: CardCapacity | None = None
    soak_s: float | None = None
    lines: dict[str, CardLine] = Field(default_factory=dict)

    def conservative_capacity(self) -> float | None:
        """The capacity a plan may count on: the low end of its interval over rounds."""
        if self.capacity is None:
            return None
        e = self.capacity.held
        return e.low if e.low is not None else e.value


def judge(line: str, figure: Estimate | None, t: Threshold | None) -> Judgement:
    """`healthy` when the figure's conservative end is within the healthy bound, `warning` when
    the figure is past the warning bound, else `between`."""
    if figure is None or t is None or (t.healthy is None and t.warning is None):
        return "unjudged"
    lower = LOWER_IS_BETTER[line]
    worst = (figure.high if lower else figure.low)
    worst = figure.value if worst is None else worst
    if t.healthy is not None and (worst <= t.healthy if lower else worst >= t.healthy):
        return "healthy"
    if t.warning is not None and (figure.value >= t.warning if lower
                                  else figure.value <= t.warning):
        return "warning"
    return "between"


def card_lines(figures: dict[str, Estimate | None], spec: CardSpec) -> dict[str, CardLine]:
    """Each line's figure with its judgement and the thresholds it was judged by."""
    out = {}
    for line in LINES:
        t = spec.threshold(line)
        f = figures.get(line)
        out[line] = CardLine(figure=f, judged=judge(line, f, t), threshold=t)
    return out




UNITS = {"p99_e2e_ms": " ms", "peak_memory_gib": " GiB", "growth_mib_per_h": " MiB/h"}
TITLES = {"p99_e2e_ms": "P99 latency of one request at a time",
          "peak_memory_gib": "memory of the server",
          "capacity": "capacity", "growth_mib_per_h": "memory growth"}


def line_text(card: Card, line: str) -> str:
    """'P99 latency of one request at a time: 850 [800, 900] ms (3 rounds): healthy'."""
    cl = card.lines.get(line)
    fig = None if cl is None else cl.figure
    title = TITLES[line]
    if line == "capacity" and card.capacity is not None:
        unit = "/s" if card.capacity.over == "rate" else " in flight"
        slo = ", ".join(f"{k} <= {v:g}" for k, v in card.capacity.slo.items())
        title = f"capacity at {slo}"
        shown = "-" if fig is None else fig.describe(3, unit)
    else:
        shown = "not measured" if fig is None else fig.describe(3, UNITS.get(line, ""))
    judged = "" if cl is None or cl.judged == "unjudged" else f": {cl.judged}"
    return f"{title}: {shown}{judged}"


def card_text(card: Card) -> list[str]:
    """The card's lines, then how and when it was measured."""
    return [*(line_text(card, line) for line in LINES),
            f"(measured {card.measured[:10]}: {card.how})"]


# The recorded card was measured in another run (another day, perhaps a busier machine: the
# same settings measure 20-44% apart between starts here), so its intervals, over rounds of
# one run, say nothing of the spread between runs: a line is worse only when its conservative
# end is past the recorded one's by this factor (growth: twice it, plus the healthy 50 MiB/h).
TOLERANCE = {"p99_e2e_ms": 1.5, "peak_memory_gib": 1.25, "capacity": 1.5,
             "growth_mib_per_h": 2.0}


def regressions(recorded: Card, now: Card) -> list[str]:
    """Lines measured worse than the recorded card beyond what another run's noise allows:
    the new figure's interval wholly past the recorded interval's worse end by `TOLERANCE`."""
    out = []
    for line in LINES:
        a = recorded.lines.get(line)
        b = now.lines.get(line)
        if a is None or b is None or a.figure is None or b.figure is None:
            continue
        old, new = a.figure, b.figure
        tol = TOLERANCE[line]
        if LOWER_IS_BETTER[line]:
            bound = (old.high if old.high is not None else old.value) * tol
            if line == "growth_mib_per_h":
                bound = max(bound, 0.0) + 50.0
            worse = (new.low if new.low is not None else new.value) > bound
        else:
            worse = (new.high if new.high is not None else new.value) < (
                old.low if old.low is not None else old.value) / tol
        if worse:
            out.append(f"{TITLES[line]}: {new.describe(3)} now against {old.describe(3)} "
                       "recorded")
    return out


__all__ = ["DEFAULT_THRESHOLDS", "LINES", "Card", "CardCapacity", "CardLine", "CardSpec",
           "Threshold", "card_lines", "card_text", "judge", "line_text", "regressions"]
