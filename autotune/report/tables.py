"""Text tables the CLI prints: the search's trials, the confirmation round, a Pareto front.
Pure: studies and records in, strings out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autotune.core.stats import Estimate
from autotune.core.units import axis_title, est, plural, ratio, scale, scaled


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cell(metric: str, e: Estimate | None, digits: int = 4) -> str:
    """A figure in its column's unit (memory in GiB) with its 95% interval, or marked as one
    reading where it has none (a peak is the highest seen in one server's life)."""
    if e is None:
        return "-"
    text = est(scaled(e, scale(metric)), digits)
    return text if text == "-" or e.low is not None else f"{text} (1 reading)"


def settings_text(t: Any) -> str:
    from autotune.study.trials import is_baseline

    return "vLLM's defaults" if is_baseline(t) else " ".join(
        f"{k}={_fmt(v, 3)}" for k, v in t.params.items() if v is not None) or (
        "vLLM's defaults (drawn)")


def summary_rows(study: Any, metric: str) -> tuple[list[str], list[list[str]]]:
    """The search's trials: each one's standing (ok, infeasible with the constraint it
    missed, failed with its reason, pruned), figures and settings."""
    from autotune.study.standing import standing, study_objective_or_none
    from autotune.study.trials import STALLS, metrics_of, shown

    objective = study_objective_or_none(study.user_attrs)
    header = ["trial", "status", f"{axis_title(metric)} [95%]", "rounds", "p95 TTFT (ms)",
              "median TPOT (ms)", "peak memory (GiB)", "settings / why"]
    rows = []
    for t in study.trials:
        if not shown(t):
            continue  # queued, never measured (start-up screens beyond the budget, say)
        m = metrics_of(t)
        s = standing(t, objective, m)
        obj = m.get(metric)
        why = f"{s.reason}: {t.user_attrs.get('detail', '')}" if s.status == "failed" \
            else f"{settings_text(t)}; misses {s.reason}" if s.missed else settings_text(t)
        if t.user_attrs.get(STALLS):
            why += f"; {t.user_attrs[STALLS]}"
        rows.append([
            str(t.number), s.status, cell(metric, obj), str(obj.n) if obj else "-",
            cell("p95_ttft_ms", m.get("p95_ttft_ms")),
            cell("median_tpot_ms", m.get("median_tpot_ms"), 3),
            cell("peak_memory_bytes", m.get("peak_memory_bytes"), 3), why,
        ])
    return header, rows


def confirmation_rows(conf: Any) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "role", f"{axis_title(conf.metric)} [95%]", "vs vLLM defaults",
              "p95 TTFT", "median TPOT", "peak memory", "failure"]
    rows = []
    for a in conf.arms:
        g = a.vs_baseline
        rows.append([a.name, a.role, cell(conf.metric, a.figures.get(conf.metric)),
                     ratio(g.get(conf.metric)), ratio(g.get("p95_ttft_ms")),
                     ratio(g.get("median_tpot_ms")), ratio(g.get("peak_memory_bytes")),
                     a.failure or ""])
    return header, rows


def front_rows(study: Any) -> tuple[list[str], list[list[str]]]:
    from autotune.study.front import study_objective
    from autotune.study.trials import metrics_of, pareto_trials

    objective = study_objective(study)
    goals = objective.goals()
    header = ["rank", "trial", *(f"{axis_title(g.metric)}, {g.direction[:3]} [95%]"
                                 for g in goals), "settings"]
    rows = []
    for i, t in enumerate(pareto_trials(study, objective)):
        m = metrics_of(t)
        rows.append([str(i + 1) + (" (chosen)" if i == 0 else ""), str(t.number),
                     *(cell(g.metric, m.get(g.metric)) for g in goals), settings_text(t)])
    return header, rows


def front_text(study: Any, choose: str) -> str:
    header, rows = front_rows(study)
    return (f"Pareto front: {plural(len(rows), 'point')} no other feasible trial beats on "
            f"every goal (search figures, one server start each; ranked by the {choose} rule)\n"
            + table(rows, header))




# `est` lives in autotune.core.units (with the other figure formatting); the tables' callers take it
# from here too
__all__ = ["cell", "confirmation_rows", "est", "front_rows", "front_text", "settings_text",
           "summary_rows", "table"]
