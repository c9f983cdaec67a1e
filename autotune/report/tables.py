"""Text tables the CLI prints: the search's trials, the confirmation round, a Pareto front.
Pure: studies and records in, strings out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autotune.core.units import est, figure, ratio


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


def summary_rows(study: Any, metric: str) -> tuple[list[str], list[list[str]]]:
    from autotune.study.trials import is_baseline, metrics_of, shown

    header = ["trial", "status", f"{metric} [95%]", "rounds", "p95 ttft ms",
              "median tpot ms", "peak mem GiB", "params / reason"]
    rows = []
    for t in study.trials:
        if not shown(t):
            continue  # queued, never measured (start-up screens beyond the budget, say)
        m = metrics_of(t)
        status = t.user_attrs.get("status") or t.state.name.lower()
        reason = t.user_attrs.get("reason")
        params = "vLLM defaults" if is_baseline(t) else " ".join(
            f"{k}={_fmt(v, 3)}" for k, v in t.params.items() if v is not None) or (
            "vLLM defaults (drawn)")
        mem = m.get("peak_memory_bytes")
        obj = m.get(metric)
        rows.append([
            str(t.number), status, est(obj), str(obj.n) if obj else "-",
            est(m.get("p95_ttft_ms")), est(m.get("median_tpot_ms"), 3),
            f"{mem.value / 2**30:.2f}" if mem else "-",
            f"{reason}: {t.user_attrs.get('detail', '')}" if reason else params,
        ])
    return header, rows


def confirmation_rows(conf: Any) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "role", f"{conf.metric} [95%]", "vs vLLM defaults", "p95 ttft",
              "median tpot", "peak memory", "failure"]
    rows = []
    for a in conf.arms:
        g = a.vs_baseline
        rows.append([a.name, a.role, est(a.figures.get(conf.metric)),
                     ratio(g.get(conf.metric)), ratio(g.get("p95_ttft_ms")),
                     ratio(g.get("median_tpot_ms")), ratio(g.get("peak_memory_bytes")),
                     a.failure or ""])
    return header, rows


def front_rows(study: Any) -> tuple[list[str], list[list[str]]]:
    from autotune.study.front import study_objective
    from autotune.study.trials import is_baseline, metrics_of, pareto_trials

    objective = study_objective(study)
    goals = objective.goals()
    header = ["rank", "trial", *(f"{g.metric} ({g.direction[:3]}) [95%]" for g in goals),
              "settings"]
    rows = []
    for i, t in enumerate(pareto_trials(study, objective)):
        m = metrics_of(t)
        settings = "vLLM defaults" if is_baseline(t) else " ".join(
            f"{k}={_fmt(v, 3)}" for k, v in t.params.items() if v is not None) or (
            "vLLM defaults (drawn)")
        rows.append([str(i + 1) + (" (chosen)" if i == 0 else ""), str(t.number),
                     *(figure(g.metric, m.get(g.metric)) for g in goals), settings])
    return header, rows


def front_text(study: Any, choose: str) -> str:
    header, rows = front_rows(study)
    return (f"Pareto front: {len(rows)} point(s) no other feasible trial beats on every goal "
            f"(search figures, one server start each; ranked by the {choose} rule)\n"
            + table(rows, header))




# `est` lives in autotune.core.units (with the other figure formatting); the tables' callers take it
# from here too
__all__ = ["confirmation_rows", "est", "front_rows", "front_text", "summary_rows", "table"]
