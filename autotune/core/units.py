"""Figures as people read them: each metric's unit, bytes as GiB, intervals whose bounds show
which side of 1 they are on. Pure: estimates in, strings out."""

from __future__ import annotations

import math

from autotune.core.stats import Estimate, significant

GiB = 2**30

# throughputs by name (the rest carry their unit in their name: _ms, _s, _bytes)
_UNITS = {"output_throughput": "tok/s", "total_token_throughput": "tok/s",
          "request_throughput": "req/s", "request_goodput": "req/s"}


def unit(metric: str) -> str:
    """The unit a metric is shown in ('' where it has none, or it depends: capacity)."""
    if metric in _UNITS:
        return _UNITS[metric]
    for suffix, name in (("_bytes", "GiB"), ("_ms", "ms"), ("_s", "s")):
        if metric.endswith(suffix):
            return name
    return ""


def scale(metric: str) -> float:
    """What a metric's recorded value is multiplied by to read in `unit(metric)`."""
    return 1 / GiB if metric.endswith("_bytes") else 1.0


def axis_title(metric: str) -> str:
    """'output_throughput (tok/s)', 'peak memory (GiB)': a plot's axis."""
    name = metric.removesuffix("_bytes").replace("_", " ") if metric.endswith("_bytes") \
        else metric
    u = unit(metric)
    return f"{name} ({u})" if u else name


def scaled(e: Estimate, factor: float) -> Estimate:
    if factor == 1.0:
        return e
    return e.model_copy(update={
        "value": e.value * factor,
        "low": None if e.low is None else e.low * factor,
        "high": None if e.high is None else e.high * factor})


def est(e: Estimate | None, digits: int = 4) -> str:
    """'866 [850, 880]': a figure with its 95% interval (no interval: the bare figure). A bound
    near 1 keeps the digits that say which side of 1 it is on: [1.0002, 1.72], never [1, 1.72]."""
    if e is None or math.isnan(e.value):
        return "-"
    if e.low is None or e.high is None:
        return significant(e.value, digits)
    return (f"{significant(e.value, digits)} [{significant(e.low, digits)}, "
            f"{significant(e.high, digits)}]")


def ratio(e: Estimate | None, digits: int = 3) -> str:
    """'x1.36 [1.0002, 1.72]': a paired ratio and its interval."""
    return "-" if e is None or math.isnan(e.value) else "x" + est(e, digits)


def figure(metric: str, e: Estimate | None, digits: int = 4) -> str:
    """A metric's figure with its interval; memory in GiB ('5.98 GiB [5.9, 6.06]'), not
    bytes ('6.421e+09'). Other figures are shown bare: their names carry their unit."""
    if e is None or not metric.endswith("_bytes"):
        return est(e, digits)
    text = est(scaled(e, scale(metric)), digits)
    if text == "-":
        return text
    value, _, rest = text.partition(" ")
    return f"{value} GiB" + (f" {rest}" if rest else "")


def describe(metric: str, e: Estimate, digits: int = 4) -> str:
    """`Estimate.describe`, memory in GiB: '5.98 GiB [5.9, 6.06] (4 starts)'."""
    if not metric.endswith("_bytes"):
        return e.describe(digits)
    return scaled(e, scale(metric)).describe(digits, unit=" GiB")


__all__ = ["GiB", "axis_title", "describe", "est", "figure", "ratio", "scale", "scaled",
           "unit"]


def plural(n: int, word: str, many: str = "") -> str:
    """'1 trial', '2 trials' ('1 core', '2 cores'): a count as it is read."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
