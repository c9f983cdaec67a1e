"""The report as one self-contained HTML page: plotly's script and every figure inline, so it
opens offline and asks the network for nothing. Every plotted figure carries its interval."""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autotune.core.stats import Estimate
from autotune.core.units import axis_title, figure, plural, ratio, scale
from autotune.report.gather import LATENCY, MEMORY, ReportData, TrialRow, trial_table
from autotune.report.tables import confirmation_rows

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
.note { color: #555; font-size: 0.9em; }
"""
CONFIG = {"displaylogo": False, "responsive": True}


def _err(estimates: list[Estimate], factor: float = 1.0) -> dict[str, Any]:
    """Plotly error bars from the intervals (none where a figure has none)."""
    up = [(e.high - e.value) * factor if e.high is not None else 0.0 for e in estimates]
    down = [(e.value - e.low) * factor if e.low is not None else 0.0 for e in estimates]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down}


def _front(points: list[tuple[float, float, int]], maximize: bool) -> list[int]:
    """Trials no other beats on both the metric and p95 TTFT (lower is better)."""
    sign = 1 if maximize else -1
    out = []
    for y, x, n in points:
        if not any(sign * y2 >= sign * y and x2 <= x and (y2, x2) != (y, x)
                   for y2, x2, _ in points):
            out.append(n)
    return out


def _settings(t: TrialRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in t.params.items() if v is not None) or (
        "vLLM's defaults")


def _hover(t: TrialRow, *metrics: str) -> str:
    """A point's hover text: the trial, its settings, its figures with their intervals."""
    return "<br>".join([html.escape(t.label, quote=False),
                        html.escape(_settings(t), quote=False),
                        *(f"{m}: {figure(m, t.metrics.get(m))}" for m in metrics)])


def _scatter(data: ReportData, x_metric: str) -> go.Figure:
    """The metric against another figure, every trial by its kind, the front outlined."""
    fig = go.Figure()
    xs_scale, ys_scale = scale(x_metric), scale(data.metric)
    rows = [t for t in data.measured if t.metrics.get(x_metric) is not None]
    kinds: list[tuple[str, list[TrialRow], dict[str, Any]]] = [
        ("feasible", [t for t in rows if t.feasible], {"symbol": "circle", "size": 10}),
        ("misses a constraint", [t for t in rows if t.missed],
         {"symbol": "x", "size": 10, "color": "#d62728"}),
        ("pruned (fewer rounds)", [t for t in rows if t.status == "pruned"],
         {"symbol": "circle-open", "size": 10, "color": "#999"}),
    ]
    for name, group, marker in kinds:
        if not group:
            continue
        xs = [t.metrics[x_metric] for t in group]
        ys = [t.metrics[data.metric] for t in group]
        fig.add_trace(go.Scatter(
            x=[e.value * xs_scale for e in xs], y=[e.value * ys_scale for e in ys],
            mode="markers", name=name, marker=marker,
            text=[_hover(t, data.metric, x_metric) for t in group],
            error_y=_err(ys, ys_scale), error_x=_err(xs, xs_scale),
            hovertemplate="%{text}<extra></extra>"))
    ok = [t for t in rows if t.feasible]
    front = set(_front([(t.metrics[data.metric].value, t.metrics[x_metric].value, t.number)
                        for t in ok], data.maximize))
    on = sorted((t for t in ok if t.number in front), key=lambda t: t.metrics[x_metric].value)
    if on:
        fig.add_trace(go.Scatter(
            x=[t.metrics[x_metric].value * xs_scale for t in on],
            y=[t.metrics[data.metric].value * ys_scale for t in on], mode="lines",
            line={"dash": "dot", "color": "#2ca02c"}, name="Pareto front", hoverinfo="skip"))
    failed = len(data.failed)
    title = f"{data.metric} against {axis_title(x_metric)}" + (
        f" ({plural(failed, 'failed trial')} {'has' if failed == 1 else 'have'} no figures: "
        "see the table below)" if failed else "")
    fig.update_layout(title=title, xaxis_title=axis_title(x_metric),
                      yaxis_title=axis_title(data.metric), height=450)
    return fig


def _history(data: ReportData) -> go.Figure:
    rows = sorted(data.measured, key=lambda t: t.number)
    ys = [t.metrics[data.metric] for t in rows]
    k = scale(data.metric)
    fig = go.Figure(go.Scatter(
        x=[t.number for t in rows], y=[e.value * k for e in ys], mode="markers", name="trial",
        error_y=_err(ys, k), text=[_hover(t, data.metric) for t in rows],
        hovertemplate="%{text}<extra></extra>"))
    best: list[float] = []
    for t in rows:
        v = t.metrics[data.metric].value * k if t.feasible else None
        prev = best[-1] if best else None
        if v is None:
            best.append(prev if prev is not None else float("nan"))
        elif prev is None or prev != prev or (v > prev if data.maximize else v < prev):
            best.append(v)
        else:
            best.append(prev)
    fig.add_trace(go.Scatter(x=[t.number for t in rows], y=best, mode="lines",
                             name="best feasible so far", line={"shape": "hv"}))
    fig.update_layout(title="Optimisation history (95% over each trial's rounds)",
                      xaxis_title="trial", yaxis_title=axis_title(data.metric), height=400)
    # trials are whole numbers: ticks at whole steps (plotly's own pick: 0.5 for a few trials)
    span = (rows[-1].number - rows[0].number) if rows else 0
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=_step(span), tickformat="d")
    return fig


def _step(span: int, ticks: int = 12) -> int:
    """A whole, round tick step (1, 2, 5, 10, 20, ...) that puts at most `ticks` on `span`."""
    power = 1
    while True:
        for m in (1, 2, 5):
            if span / (m * power) <= ticks:
                return m * power
        power *= 10


def _importance(imp: dict[str, float]) -> go.Figure:
    names = list(imp)[::-1]
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h"))
    fig.update_layout(title="Parameter importance (Optuna's default evaluator, over the "
                      "measured trials and the settings that took two values or more)",
                      xaxis_title="importance", height=120 + 40 * len(names))
    return fig


def _latency(data: ReportData) -> go.Figure:
    fig = go.Figure()
    for name, series in data.latencies.items():
        for kind, values in series.items():
            fig.add_trace(go.Box(y=values, name=f"{kind}: {name}", boxpoints="outliers"))
    fig.update_layout(title="Per-request latency (ms) of vLLM's defaults and the chosen "
                      "settings, as measured in the search", yaxis_title="ms", height=420)
    return fig


def _memory(data: ReportData) -> go.Figure:
    rows = [t for t in data.measured if t.metrics.get(MEMORY) is not None]
    fig = go.Figure(go.Bar(x=[t.label for t in rows],
                           y=[t.metrics[MEMORY].value * scale(MEMORY) for t in rows],
                           text=[_hover(t, MEMORY) for t in rows], textposition="none",
                           hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title="Peak memory per trial (the server's process tree, GiB)",
                      yaxis_title=axis_title(MEMORY), height=380)
    return fig


def _gain(data: ReportData) -> go.Figure | None:
    conf = data.confirmation
    if conf is None:
        return None
    arms = [a for a in conf.arms if conf.metric in a.vs_baseline]
    if not arms:
        return None
    ratios = [a.vs_baseline[conf.metric] for a in arms]
    # each arm's interval written under its bar, with the digits that say which side of 1 a
    # bound is on: a bound of 1.0002 is drawn a hair above the line, too close to see
    labels = [ratio(r) for r in ratios]
    fig = go.Figure(go.Bar(x=[f"{html.escape(a.name, quote=False)}<br>{t}"
                              for a, t in zip(arms, labels, strict=True)],
                           y=[r.value for r in ratios], error_y=_err(ratios), text=labels,
                           textposition="none", hovertemplate="%{text}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot")
    fig.update_layout(title=f"Confirmation: {conf.metric} against vLLM's defaults, paired over "
                      f"{conf.rounds} interleaved rounds (95%)", yaxis_title="ratio",
                      height=400)
    return fig


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _header(data: ReportData) -> str:
    """Hardware, vLLM, the profile and its deploy command: a table at the top of the page."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>"
                   + (f"<code>{html.escape(v)}</code>" if k == "deploy" and data.deploy
                      else html.escape(v)) + "</td></tr>" for k, v in data.header())
    return f"<table id=header>{rows}</table>"


def page(data: ReportData) -> str:
    figures: list[tuple[str, go.Figure | None, str]] = [
        ("Confirmation round", _gain(data), ""),
        ("Pareto front", _scatter(data, LATENCY), ""),
        ("Memory", _scatter(data, MEMORY), ""),
        ("Optimisation history", _history(data), ""),
        ("Parameter importance", _importance(data.importances)
         if isinstance(data.importances, dict) else None,
         "" if isinstance(data.importances, dict) else f"Not computed: {data.importances}."),
        ("Latency distributions", _latency(data) if data.latencies else None,
         "" if data.latencies else "no per-request samples found beside the study"),
        ("Memory per trial", _memory(data), ""),
    ]
    parts = [f"<h1>autotune report: {html.escape(data.study)}</h1>", _header(data),
             f"<p><b>Verdict:</b> {html.escape(data.verdict)}</p>"]
    if data.note:
        parts.append(f"<p id=note><b>Note:</b> {html.escape(data.note)}</p>")
    if data.card:
        parts += ["<h2>Baseline card</h2>", "<ul id=card>", *(
            f"<li>{html.escape(line)}</li>" for line in data.card), "</ul>"]
    if data.confirmation is not None:
        parts += [f"<p class=note>Confirmation: {data.confirmation.rounds} interleaved rounds, "
                  "a fresh server each; figures are means over starts, ratios paired by "
                  "round (95%).</p>", _table(*confirmation_rows(data.confirmation))]
    for i, (title, fig, note) in enumerate(figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if fig is None:
            parts.append(f"<p class=note>{html.escape(note or 'nothing to show')}</p>")
            continue
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                 div_id=f"plot-{i}", config=CONFIG))
    parts += ["<h2>Trials</h2>", "<p class=note>One server start per trial; intervals over "
              "its rounds (95%).</p>", _table(*trial_table(data))]
    if data.queued:
        parts.append(f"<p class=note>{html.escape(data.queued)}.</p>")
    parts.append("<h2>Failed trials</h2>")
    if not data.failed:
        parts.append("<p class=note>none</p>")
    for t in data.failed:
        parts.append(f"<h3>{html.escape(t.label)}: {html.escape(t.reason)}</h3>"
                     f"<p>{html.escape(t.detail)}</p><pre>{html.escape(t.log_tail)}</pre>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>autotune report: {html.escape(data.study)}</title>"
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")


__all__ = ["page"]
