"""The live display of `autotune run` and `retune` on a terminal (rich).

Above it, the run's lines as they come (one per finished trial, as in a log); below, a panel
redrawn a few times a second: trials done of the budget, elapsed time and an ETA from the
trials' own durations, what the current server is doing (starting, with its log's last line;
warming up; measuring a load level, round by round, with its interval narrowing; confirming),
and the best candidates so far.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autotune.core.events import Phase
from autotune.report.tables import est
from autotune.study.tuner import TrialReport

BEST_ROWS = 5


def last_line(path: Path | None, width: int = 100) -> str:
    """The last non-empty line of a log that is being written (its last 4 KiB)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [x for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= width else line[:width - 1] + "…"


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class RunView:
    """What the panel shows; fed by the run's callbacks and the trials' phases."""

    def __init__(self, budget: int, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.left = budget  # counted trials the budget still allows
        self.metric = ""  # the watched metric, from the first finished trial
        self.started = now()
        self.done = 0
        self.durations: list[float] = []  # wall time of each finished search trial
        self.trial_started: float | None = None
        self.phase: Phase | None = None
        self.phase_since = self.started
        self.confirm_left = 0  # server starts still to come in the confirmation round
        self.best: list[tuple[float, str, str, str]] = []  # value, who, figure, params
        self.lock = threading.Lock()

    def on_phase(self, p: Phase) -> None:
        with self.lock:
            if p.stage == "starting" and p.trial.startswith("trial-"):
                self.trial_started = self.now()
            self.phase, self.phase_since = p, self.now()

    def on_trial(self, rep: TrialReport) -> None:
        with self.lock:
            self.done += 1
            if rep.left is not None:
                self.left = rep.left
            if self.trial_started is not None and rep.repeat_of is None:
                self.durations.append(self.now() - self.trial_started)
            self.trial_started = None
            r = rep.result
            if r.status != "ok" or not rep.feasible:
                return
            who = f"trial {rep.number}" + (" (vLLM defaults)" if rep.baseline else "")
            self.metric = self.metric or r.watched
            params = ", ".join(f"{k}={v}" for k, v in rep.params.items() if v is not None)
            self.best.append((rep.value, who, est(r.metrics.get(self.metric)), params or "-"))
            self.best.sort(key=lambda b: -b[0] if rep.maximize else b[0])
            del self.best[BEST_ROWS:]

    def on_confirm(self, starts: int) -> None:
        with self.lock:
            self.confirm_left = starts

    def on_round(self) -> None:
        with self.lock:
            self.confirm_left = max(0, self.confirm_left - 1)

    def eta(self) -> str:
        per = statistics.median(self.durations) if self.durations else None
        if per is None:
            return "ETA after the first trial"
        left = float(self.left + self.confirm_left)
        if self.trial_started is not None and left:
            left -= min(1.0, (self.now() - self.trial_started) / per)
        return f"ETA {clock(max(0.0, left) * per)} (median trial {clock(per)})"

    def render(self) -> RenderableType:
        with self.lock:
            head = Text(f"trials done {self.done}, {self.left} left of the budget · elapsed "
                        f"{clock(self.now() - self.started)} · {self.eta()}", style="bold")
            rows: list[RenderableType] = [head, self._phase_text()]
            if self.best:
                t = Table(title=f"best so far ({self.metric}, 95% over rounds)",
                          title_justify="left", box=None, pad_edge=False)
                for col in ("trial", self.metric, "settings"):
                    t.add_column(col)
                for _, who, figure, params in self.best:
                    t.add_row(who, figure, params)
                rows.append(t)
        return Group(*rows)

    def _phase_text(self) -> Text:
        p = self.phase
        if p is None:
            return Text("preparing: checking the inputs, the machine and the model")
        since = clock(self.now() - self.phase_since)
        who = _who(p.trial)
        if p.stage == "starting":
            line = last_line(p.log)
            return Text(f"{who}: starting the server ({since})" + (f"\n  log: {line}"
                                                                   if line else ""))
        if p.stage == "warming":
            return Text(f"{who}: server up, warming up ({since})")
        if p.stage == "measuring":
            figure = f": {p.metric} {est(p.interval)}" if p.interval is not None else ""
            return Text(f"{who}: measuring {p.level}, round {p.round}{figure}")
        return Text(f"{who}: stopping the server")


def _who(folder: str) -> str:
    """trial-0003 -> trial 3; round-02-vllm-defaults -> confirmation round 2, vllm-defaults."""
    kind, _, rest = folder.partition("-")
    number, _, name = rest.partition("-")
    if kind == "trial" and number.isdigit():
        return f"trial {int(number)}"
    if kind == "round" and number.isdigit():
        return f"confirmation round {int(number)}, {name}"
    return folder


class LiveDisplay:
    """The panel on a terminal while the run lasts (a context manager)."""

    def __init__(self, view: RunView, out: TextIO) -> None:
        self.view = view
        self.console = Console(file=out)
        self.live = Live(get_renderable=view.render, console=self.console,
                         refresh_per_second=4, transient=True, redirect_stdout=False,
                         redirect_stderr=False)

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)


__all__ = ["LiveDisplay", "RunView", "last_line"]
