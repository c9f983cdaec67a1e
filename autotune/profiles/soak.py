"""`autotune check PROFILE --soak 30m`: start a profile, hold its declared load, watch it age.

The load is the profile's own workload, in back-to-back windows (one round of it each) on one
server. Per window: P99 latencies, throughput and the memory in use (the server's process
tree, PSS, and on a GPU the memory NVML counts for it). What users track by hand becomes:

- latency drift: the P99 end-to-end latency of the last third of the windows over the first
  third (a ratio of means with its 95% interval);
- memory growth per hour: the least-squares slope of memory over time after the first
  window (warm-up allocations), with its 95% interval: a leak is a slope whose interval stays
  above the threshold, not one high reading;
- QPS at the SLO: requests per second within the workload's `slo` bounds (goodput);
- figures against the profile's record: throughput and P99 latency over the windows, with
  intervals, beside those recorded when it was confirmed. These were measured in another run
  (another day, perhaps a busier machine): the thresholds are loose, meant to catch a broken
  deployment, not a few percent.

Thresholds are the profile's own (`check:` in its metadata; `profile.DEFAULT_CHECK` for
what it does not set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.core.stats import Estimate, mean_interval, t_quantile
from autotune.core.units import plural
from autotune.engine.argv import ServerSpec
from autotune.engine.probes import Probe
from autotune.engine.server import VllmServer, free_port
from autotune.measure.client import LevelRun, Next, run_workload
from autotune.measure.metrics import RequestSample, summarize
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target
from autotune.measure.workload import Workload
from autotune.model.tokens import load_tokenizer
from autotune.profiles.profile import DEFAULT_CHECK, Profile


@dataclass(frozen=True)
class Window:
    t_s: float  # end of the window, seconds since the load began
    p99_ttft_ms: float
    p99_e2el_ms: float
    request_throughput: float
    request_goodput: float  # QPS within the workload's SLO (all requests without one)
    output_throughput: float
    memory_bytes: int
    errors: int


@dataclass
class SoakReport:
    windows: list[Window]
    latency_drift: Estimate | None  # last third / first third of P99 e2e latency
    memory_growth_mib_per_h: Estimate | None
    figures: dict[str, Estimate]  # over the windows (basis: windows)
    recorded: dict[str, Estimate]
    breaches: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def dump(e: Estimate | None) -> Any:
            return None if e is None else e.model_dump(mode="json")
        return {"windows": [w.__dict__ for w in self.windows],
                "latency_drift": dump(self.latency_drift),
                "memory_growth_mib_per_h": dump(self.memory_growth_mib_per_h),
                "figures": {k: dump(v) for k, v in self.figures.items()},
                "recorded": {k: dump(v) for k, v in self.recorded.items()},
                "breaches": self.breaches, "ok": not self.breaches}


def slope(ts: Sequence[float], ys: Sequence[float], level: float = 0.95) -> Estimate | None:
    """Least-squares slope of ys over ts with its t interval (None under 3 points)."""
    n = len(ts)
    if n < 3:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    if sxx <= 0:
        return None
    b = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / sxx
    resid = sum((y - my - b * (t - mt)) ** 2 for t, y in zip(ts, ys, strict=True))
    se = math.sqrt(resid / (n - 2) / sxx)
    h = t_quantile(0.5 + level / 2, n - 2) * se
    return Estimate(value=b, low=b - h, high=b + h, n=n, basis="windows")


def drift(values: Sequence[float]) -> Estimate | None:
    """Mean of the last third over the mean of the first third, its interval from the two
    means' intervals by the delta method (None under 6 windows)."""
    k = len(values) // 3
    if k < 2:
        return None
    first, last = mean_interval(values[:k], "windows"), mean_interval(values[-k:], "windows")
    if first.value <= 0 or last.value <= 0 or first.high is None or last.high is None:
        return None
    r = last.value / first.value
    h = r * math.hypot((first.high - first.value) / first.value,
                       (last.high - last.value) / last.value)
    return Estimate(value=r, low=max(r - h, 0.0), high=r + h, n=2 * k, basis="windows")


def analyse(windows: Sequence[Window], profile: Profile) -> SoakReport:
    check = {**DEFAULT_CHECK, **profile.meta.check}
    names = ("output_throughput", "p99_e2el_ms", "p99_ttft_ms", "peak_memory_bytes")
    recorded = {k: profile.meta.metrics[k] for k in names if k in profile.meta.metrics}
    lat = [w.p99_e2el_ms for w in windows]
    figures = {"output_throughput": mean_interval([w.output_throughput for w in windows],
                                                  "windows"),
               "request_throughput": mean_interval([w.request_throughput for w in windows],
                                                   "windows"),
               "request_goodput": mean_interval([w.request_goodput for w in windows],
                                                "windows"),
               "p99_e2el_ms": mean_interval(lat, "windows"),
               "p99_ttft_ms": mean_interval([w.p99_ttft_ms for w in windows], "windows"),
               "memory_bytes": mean_interval([float(w.memory_bytes) for w in windows],
                                             "windows")}
    later = list(windows[1:])
    growth = slope([w.t_s / 3600 for w in later], [w.memory_bytes / 2**20 for w in later])
    report = SoakReport(list(windows), drift(lat), growth, figures, recorded)
    b = report.breaches
    if sum(w.errors for w in windows):
        b.append(f"{plural(sum(w.errors for w in windows), 'request')} failed during the soak")
    d = report.latency_drift
    if d is not None and d.low is not None and d.low > 1 + check["max_latency_drift"]:
        b.append(f"P99 latency drifted x{d.describe(3)} from the first third of the soak to "
                 f"the last (threshold x{1 + check['max_latency_drift']:g})")
    g = report.memory_growth_mib_per_h
    if g is not None and g.low is not None and g.low > check["max_memory_growth_mib_per_h"]:
        b.append(f"memory grows {g.describe(3)} MiB per hour (threshold "
                 f"{check['max_memory_growth_mib_per_h']:g})")
    rec, now = recorded.get("p99_e2el_ms"), figures["p99_e2el_ms"]
    if rec is not None and now.low is not None and now.low > check[
            "max_latency_vs_record"] * (rec.high or rec.value):
        b.append(f"P99 latency {now.describe()} ms against {rec.describe()} recorded "
                 f"(threshold x{check['max_latency_vs_record']:g} its top)")
    rec, now = recorded.get("output_throughput"), figures["output_throughput"]
    if rec is not None and now.high is not None and now.high < check[
            "min_throughput_vs_record"] * (rec.low or rec.value):
        b.append(f"output throughput {now.describe()} against {rec.describe()} recorded "
                 f"(threshold x{check['min_throughput_vs_record']:g} its bottom)")
    return report


# The fewest windows every judgement is made on (the drift compares two thirds of at least two
# windows each; the growth's slope needs a few windows after the first): a soak goes on past its
# duration until it has them, so a slow machine gets a later verdict, not a blind one.
MIN_WINDOWS = 6


def went_on(windows: Sequence[Window], duration_s: float) -> bool:
    """Whether the soak went on past its duration for MIN_WINDOWS: a window before the last
    had already ended at the duration (a soak that has its windows stops at the first)."""
    return len(windows) >= 2 and windows[-2].t_s >= duration_s


def soak(path: Path, profile: Profile, duration_s: float, launcher: tuple[str, ...],
         probe: Probe, log_path: Path, startup_timeout_s: float = 600.0,
         gpu_indices: Sequence[int] = (), on_window: Any = None,
         window_s: float | None = None) -> list[Window]:
    """Start the profile's server (its file as `--config`, its environment) and hold its
    workload for `duration_s`, in rounds back to back, summed up in windows of `window_s`
    (default: a twentieth of the soak, 5 to 60 s), and on until there are MIN_WINDOWS."""
    workload = Workload.model_validate(profile.meta.workload)
    plan = Plan(workload, load_tokenizer(str(profile.settings["model"])))
    spec = ServerSpec(model=None, args={"config": str(path)}, env=dict(profile.meta.env),
                      port=free_port(), launcher=launcher)
    with VllmServer(spec, log_path, startup_timeout_s=startup_timeout_s) as server:
        return hold(server, plan, duration_s, probe, gpu_indices, on_window, window_s)


def hold(server: VllmServer, plan: Plan, duration_s: float, probe: Probe,
         gpu_indices: Sequence[int] = (), on_window: Any = None,
         window_s: float | None = None) -> list[Window]:
    """Hold the plan's load on a running server for `duration_s`, in rounds back to back,
    summed up in windows of `window_s` (default: a twentieth of the soak, 5 to 60 s), and on
    until there are MIN_WINDOWS; the server's memory read at the end of each window."""
    window_s = window_s if window_s is not None else min(max(duration_s / 20, 5.0), 60.0)
    workload = plan.workload
    windows: list[Window] = []
    start = time.monotonic()
    pending: list[RequestSample] = []

    def after(run: LevelRun) -> Next:
        pending.extend(run.samples)
        now = time.monotonic() - start
        done = now >= duration_s and len(windows) + 1 >= MIN_WINDOWS
        if now < (windows[-1].t_s if windows else 0.0) + window_s and not done:
            return "continue"  # rounds until the window is long enough
        m = summarize(pending, {str(k): v for k, v in workload.slo.items()})
        pending.clear()
        pid = server.pid
        mem = 0
        if gpu_indices and pid is not None:
            mem = probe.gpu_process_memory([pid], gpu_indices) or 0
        if not mem and pid is not None:
            mem = probe.process_tree_memory(pid).pss
        w = Window(t_s=now, p99_ttft_ms=m.ttft_ms.p99, p99_e2el_ms=m.e2el_ms.p99,
                   request_throughput=m.request_throughput,
                   request_goodput=m.request_goodput,
                   output_throughput=m.output_throughput, memory_bytes=int(mem),
                   errors=m.failed)
        windows.append(w)
        if on_window is not None:
            on_window(w)
        return "stop" if done else "continue"

    run_workload(Target(server.base_url), plan, None, server.alive, after)
    return windows
