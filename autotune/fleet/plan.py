"""Pure: profiles into a fleet plan: per hardware, the capacity at the asked SLO from its card,
the replicas a load needs, and with prices the cost per hour and per million output tokens.

Capacity is the card's conservative bound (the low end of its interval over rounds): the
replicas are `ceil(load / that)`, and their interval runs from the load over the interval's
high end to the load over its low end. A card measured at another SLO is used only where it
is as strict or stricter on the same metric (a capacity that held at p95 <= 1000 ms holds at
p95 <= 1500 ms), and the row says so; otherwise it is listed, not used.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from autotune.core.errors import UserError
from autotune.core.stats import Estimate
from autotune.measure.metrics import ROUND_METRICS
from autotune.profiles.card import Card, Over

# units of a load: a rate (requests or sessions started per second) or a concurrency
UNITS: dict[str, tuple[Over, float]] = {"rps": ("rate", 1.0), "rpm": ("rate", 1 / 60),
                                        "rph": ("rate", 1 / 3600),
                                        "sessions": ("concurrency", 1.0),
                                        "concurrent": ("concurrency", 1.0)}


@dataclass(frozen=True)
class Load:
    over: Over
    value: float  # per second for a rate
    text: str


def parse_load(text: str) -> Load:
    """`40rps`, `600rpm`, `12sessions` (in flight at once)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]+)\s*", text.lower())
    if m is None or m.group(2) not in UNITS:
        raise UserError(f"--load: {text!r} is not a load: a number and a unit, one of "
                        f"{', '.join(UNITS)} (e.g. 40rps)")
    over, factor = UNITS[m.group(2)]
    value = float(m.group(1)) * factor
    if value <= 0:
        raise UserError(f"--load: {text!r} must be above zero")
    return Load(over, value, text.strip())


def parse_slo(items: list[str]) -> dict[str, float]:
    """`p95_e2el_ms=1500` (one or more): per-round metrics' upper bounds."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise UserError(f"--slo: {item!r} is not METRIC=BOUND (e.g. p95_e2el_ms=1500)")
        if name not in ROUND_METRICS:
            close = difflib.get_close_matches(name, ROUND_METRICS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"--slo: unknown metric {name!r} ({hint}per-round metrics such "
                            "as p95_e2el_ms, p95_ttft_ms, p99_tpot_ms)")
        try:
            bound = float(value)
        except ValueError:
            raise UserError(f"--slo: {name}'s bound {value!r} is not a number") from None
        if not math.isfinite(bound) or bound < 0:
            raise UserError(f"--slo: {name}'s bound must be a finite number, not below zero")
        out[name] = bound
    if not out:
        raise UserError("--slo: give at least one METRIC=BOUND")
    return out


@dataclass
class Row:
    hardware: str
    path: str
    held: Estimate | None = None  # the card's capacity, its 95% interval over rounds
    counted: float | None = None  # what the plan counts on: the interval's low end
    replicas: int | None = None
    replicas_range: tuple[int, int] | None = None
    price_per_h: float | None = None
    cost_per_h: float | None = None
    cost_per_h_range: tuple[float, float] | None = None
    cost_per_m_tokens: float | None = None
    cost_per_m_tokens_range: tuple[float, float] | None = None
    note: str = ""
    usable: bool = False


def slo_fits(measured: dict[str, float], asked: dict[str, float]) -> str | None:
    """None when a capacity that held at `measured` holds at `asked` (every asked bound is
    measured, as strict or stricter); else why not."""
    for name, bound in asked.items():
        if name not in measured:
            return f"its card was measured at {_slo_text(measured)}, not on {name}"
        if measured[name] > bound:
            return f"its card was measured at {_slo_text(measured)}, looser than asked"
    return None


def _slo_text(slo: dict[str, float]) -> str:
    return ", ".join(f"{k} <= {v:g}" for k, v in slo.items())


def output_tokens(workload: dict[str, Any]) -> float | None:
    """The mean output tokens of a request of the workload the card was measured under."""
    out = workload.get("output_tokens")
    if isinstance(out, (int, float)):
        return float(out)
    if isinstance(out, dict):
        if "low" in out and "high" in out:
            return (float(out["low"]) + float(out["high"])) / 2
        if "mean" in out:
            return float(out["mean"])
    return None


@dataclass(frozen=True)
class Source:
    """What a plan reads of one profile."""

    hardware: str  # its hardware key
    target: str  # cpu, a10g, h100...
    path: str
    card: Card | None
    workload: dict[str, Any]  # the workload its card was measured under


def plan_row(src: Source, load: Load, slo: dict[str, float], prices: dict[str, float]) -> Row:
    row = Row(hardware=src.hardware, path=src.path)
    card = src.card
    if card is None or card.capacity is None:
        row.note = "no card: `autotune check PROFILE --card` measures one"
        return row
    cap = card.capacity
    if cap.over != load.over:
        row.note = (f"its card's capacity is over {cap.over}, the load is over {load.over}")
        return row
    why = slo_fits(cap.slo, slo)
    if why is not None:
        row.note = why + ": not used"
        return row
    held = cap.held
    low = held.low if held.low is not None else held.value
    high = held.high if held.high is not None else held.value
    if low <= 0:
        row.note = "its card's capacity interval reaches zero: no replica count holds"
        return row
    row.usable = True
    row.held, row.counted = held, low
    row.replicas = math.ceil(load.value / low)
    row.replicas_range = (math.ceil(load.value / high), row.replicas)
    if cap.slo != slo:
        row.note = f"measured at {_slo_text(cap.slo)}, stricter than asked"
    price = prices.get(src.hardware, prices.get(src.target))
    if price is not None:
        row.price_per_h = price
        row.cost_per_h = price * row.replicas
        row.cost_per_h_range = (price * row.replicas_range[0], row.cost_per_h)
        tokens = output_tokens(src.workload)
        if load.over == "rate" and tokens:
            per_h = load.value * tokens * 3600 / 1e6  # million output tokens an hour
            row.cost_per_m_tokens = row.cost_per_h / per_h
            row.cost_per_m_tokens_range = (row.cost_per_h_range[0] / per_h,
                                           row.cost_per_m_tokens)
    return row


def order(rows: list[Row]) -> list[Row]:
    """Usable rows cheapest first (by cost, else by replicas), then the rest."""
    def key(r: Row) -> tuple[int, float, float, str]:
        if not r.usable:
            return (2, 0.0, 0.0, r.hardware)
        if r.cost_per_h is not None:
            return (0, r.cost_per_h, r.replicas or 0, r.hardware)
        return (1, float(r.replicas or 0), 0.0, r.hardware)
    return sorted(rows, key=key)


__all__ = ["Load", "Row", "Source", "order", "output_tokens", "parse_load", "parse_slo", "plan_row",
           "slo_fits"]
