"""One trial: params -> server -> load -> metrics -> score, or a classified failure."""

from __future__ import annotations

import logging
import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autotune.client import Target, run_load, scrape_metrics
from autotune.engine import ServerSpec, VllmServer, build_command, kv_cache_tokens, redact
from autotune.errors import FailureReason, TrialFailure
from autotune.metrics import LoadMetrics, summarize
from autotune.probes import MemorySampler, Probe
from autotune.space import EngineSettings, Objective, TrialParams
from autotune.workload import Workload, plan_requests

log = logging.getLogger(__name__)


class TrialResult(BaseModel):
    """What a trial measured, success or failure. Saved as JSON beside the server log."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "failed"]
    reason: FailureReason | None = None
    detail: str = ""
    command: list[str]
    env: dict[str, str]
    metrics: dict[str, float] = {}
    load: LoadMetrics | None = None
    log_tail: str = ""


@dataclass(frozen=True)
class TrialSetup:
    """What stays the same for every trial of a run."""

    model: str
    launcher: tuple[str, ...]
    workload: Workload
    engine: EngineSettings
    probe: Probe
    out_dir: Path
    base_args: dict[str, Any] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)
    gpu_indices: tuple[int, ...] = ()
    api_key: str | None = None
    host: str = "127.0.0.1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_spec(params: TrialParams, setup: TrialSetup, port: int) -> ServerSpec:
    env = {**setup.base_env, **params.env}
    if setup.gpu_indices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in setup.gpu_indices)
    return ServerSpec(model=setup.model, args={**setup.base_args, **params.args}, env=env,
                      host=setup.host, port=port, api_key=setup.api_key,
                      launcher=setup.launcher)


_PROM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def prometheus_sum(text: str, name: str) -> float | None:
    """Sum of a metric over all its label sets in Prometheus text, None when absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        m = _PROM_LINE.match(line)
        if m and m.group(1) == name:
            try:
                total += float(m.group(3))
                seen = True
            except ValueError:
                continue
    return total if seen else None


def run_trial(params: TrialParams, setup: TrialSetup, trial_dir: Path) -> TrialResult:
    """Start a server with `params`, drive the workload, stop it. Never raises TrialFailure."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec = server_spec(params, setup, free_port(setup.host))
    command = redact(build_command(spec))
    w = setup.workload
    server = VllmServer(spec, trial_dir / "server.log",
                        startup_timeout_s=setup.engine.startup_timeout_s,
                        stop_timeout_s=setup.engine.stop_timeout_s)
    try:
        with server:
            assert server.pid is not None
            with MemorySampler(setup.probe, server.pid, setup.gpu_indices) as mem:
                samples = run_load(Target(server.base_url, setup.api_key), w.endpoint,
                                   plan_requests(w), w.concurrency, w.request_timeout_s)
            if not server.alive():
                raise TrialFailure(FailureReason.DIED_DURING_BENCHMARK,
                                   "server exited while the workload ran", server.log_tail())
            prom = scrape_metrics(server.base_url, setup.api_key)
            log_text = server.log_tail(200_000)
            startup_s = server.startup_s or 0.0
    except TrialFailure as f:
        log.info("trial failed: %s", f)
        return TrialResult(status="failed", reason=f.reason, detail=f.detail, command=command,
                           env=dict(params.env), log_tail=f.log_tail[-4000:])

    load = summarize(samples)
    metrics = load.flat()
    metrics["startup_s"] = startup_s
    metrics["peak_rss_bytes"] = float(mem.peaks.rss_bytes)
    metrics["peak_gpu_memory_bytes"] = float(mem.peaks.gpu_bytes)
    metrics["peak_memory_bytes"] = float(mem.peaks.gpu_bytes if setup.gpu_indices
                                         else mem.peaks.rss_bytes)
    kv = kv_cache_tokens(log_text)
    if kv is not None:
        metrics["kv_cache_tokens"] = float(kv)
    preempt = prometheus_sum(prom, "vllm:num_preemptions_total")
    if preempt is not None:
        metrics["num_preemptions"] = preempt
    if load.error_rate > w.max_error_rate:
        return TrialResult(status="failed", reason=FailureReason.TOO_MANY_ERRORS,
                           detail=f"{load.failed}/{load.failed + load.completed} requests failed "
                                  f"({load.errors})",
                           command=command, env=dict(params.env), metrics=metrics, load=load)
    return TrialResult(status="ok", command=command, env=dict(params.env), metrics=metrics,
                       load=load)


@dataclass(frozen=True)
class Score:
    """The value Optuna optimizes and the constraints (<= 0 is feasible) it learns from."""

    value: float
    constraints: dict[str, float]

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


# Every trial carries the same constraint keys, failed or not, so the sampler compares like
# with like. A failed trial violates `trial_ok`, so it can never be chosen as best.
OK_CONSTRAINT = "trial_ok"


def _violation(value: float, bound: float, upper: bool) -> float:
    scale = abs(bound) if bound else 1.0
    excess = (value - bound) if upper else (bound - value)
    return excess / scale


def score(objective: Objective, result: TrialResult) -> Score:
    """Pure: a trial's metrics -> value and normalized constraint violations."""
    keys = [f"{name}_{side}" for name, b in objective.constraints.items()
            for side, v in (("max", b.max), ("min", b.min)) if v is not None]
    worst = 0.0 if objective.direction == "maximize" else 1e18
    value = result.metrics.get(objective.metric)
    if result.status != "ok" or value is None or math.isnan(value):
        return Score(worst, {OK_CONSTRAINT: 1.0, **dict.fromkeys(keys, 1.0)})
    constraints = {OK_CONSTRAINT: 0.0}
    for name, b in objective.constraints.items():
        m = result.metrics.get(name, math.nan)
        for side, bound in (("max", b.max), ("min", b.min)):
            if bound is None:
                continue
            v = 1.0 if math.isnan(m) else _violation(m, bound, upper=side == "max")
            constraints[f"{name}_{side}"] = v
    return Score(value, constraints)
