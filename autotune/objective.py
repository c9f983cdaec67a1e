"""One trial: params -> server -> load -> metrics -> score, or a classified failure."""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autotune.client import LevelRun, ServerGone, Target, run_workload
from autotune.engine import (
    ServerSpec,
    VllmServer,
    build_command,
    classify_startup_failure,
    kv_cache_tokens,
    redact,
)
from autotune.errors import EnvironmentFailure, FailureReason, TrialFailure
from autotune.metrics import LevelResult, aggregate, summarize
from autotune.probes import MemoryBaseline, MemorySampler, Probe, wait_for_memory
from autotune.space import EngineSettings, Objective, TrialParams
from autotune.workload import Workload, plan

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
    levels: list[LevelResult] = []
    log_tail: str = ""


@dataclass(frozen=True)
class TrialSetup:
    """What stays the same for every trial of a run."""

    model: str
    launcher: tuple[str, ...]
    workload: Workload
    engine: EngineSettings
    probe: Probe
    base_args: dict[str, Any] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)
    gpu_indices: tuple[int, ...] = ()
    api_key: str | None = None
    host: str = "127.0.0.1"
    # which load level's metrics the objective reads (a sweep's last, heaviest, by default)
    objective_level: int = -1
    # memory as it was before the first server; None: do not check between trials
    baseline: MemoryBaseline | None = None


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


def level_results(w: Workload, runs: list[LevelRun]) -> list[LevelResult]:
    """Group repeats by level and aggregate them (pure)."""
    out: list[LevelResult] = []
    for level in w.load_levels():
        mine = [r for r in runs if r.plan.level == level]
        out.append(aggregate(
            level.label, level.model_dump(mode="json", exclude_none=True),
            [summarize(r.samples, {str(k): v for k, v in w.slo.items()}) for r in mine],
            [{"peak_kv_cache_usage": r.server.peak_kv_cache_usage,
              "peak_requests_waiting": r.server.peak_requests_waiting,
              "peak_requests_running": r.server.peak_requests_running,
              "num_preemptions": r.server.preemptions} for r in mine]))
    return out


def run_trial(params: TrialParams, setup: TrialSetup, trial_dir: Path) -> TrialResult:
    """Start a server with `params`, drive the workload, stop it. Never raises TrialFailure.

    Raises EnvironmentFailure, before starting anything, when the memory of an earlier server
    has not come back: that would measure a polluted machine, not this candidate.
    """
    if setup.baseline is not None:
        why = wait_for_memory(setup.probe, setup.baseline, setup.gpu_indices,
                              setup.engine.settle_timeout_s)
        if why:
            raise EnvironmentFailure(f"machine not back to its baseline: {why}")
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec = server_spec(params, setup, free_port(setup.host))
    command = redact(build_command(spec))
    w = setup.workload
    the_plan = plan(w)
    server = VllmServer(spec, trial_dir / "server.log",
                        startup_timeout_s=setup.engine.startup_timeout_s,
                        stop_timeout_s=setup.engine.stop_timeout_s)
    try:
        with server:
            assert server.pid is not None
            try:
                with MemorySampler(setup.probe, server.pid, setup.gpu_indices) as mem:
                    runs = run_workload(Target(server.base_url, setup.api_key), w, the_plan,
                                        alive=server.alive)
            except ServerGone:
                runs = None
            any_failed = runs is not None and any(not s.ok for r in runs for s in r.samples)
            if runs is None or not server.alive() or (any_failed and not server.healthy()):
                text = server.log_tail()
                oom = classify_startup_failure(text) is FailureReason.OOM_AT_STARTUP
                raise TrialFailure(
                    FailureReason.OOM_UNDER_LOAD if oom else FailureReason.DIED_DURING_BENCHMARK,
                    "server exited while the workload ran"
                    + (" (out of memory)" if oom else ""), text)
            log_text = server.log_head()
            startup_s = server.startup_s or 0.0
    except TrialFailure as f:
        log.info("trial failed: %s", f)
        return TrialResult(status="failed", reason=f.reason, detail=f.detail, command=command,
                           env=dict(params.env), log_tail=f.log_tail[-4000:])

    levels = level_results(w, runs)
    chosen = levels[setup.objective_level]
    metrics = dict(chosen.metrics)
    metrics.update(chosen.server)
    metrics["startup_s"] = startup_s
    metrics["peak_rss_bytes"] = float(mem.peaks.rss_bytes)
    metrics["peak_gpu_memory_bytes"] = float(mem.peaks.gpu_bytes)
    for i, used in sorted(mem.peaks.per_gpu.items()):
        metrics[f"peak_gpu{i}_memory_bytes"] = float(used)
    metrics["peak_memory_bytes"] = float(mem.peaks.gpu_bytes if setup.gpu_indices
                                         else mem.peaks.rss_bytes)
    kv = kv_cache_tokens(log_text)
    if kv is not None:
        metrics["kv_cache_tokens"] = float(kv)
    for lv in levels:
        completed = max(1.0, lv.metrics["completed"] * len(lv.repeats))
        storm = lv.server.get("num_preemptions", 0.0) / completed
        if storm > w.max_preemptions_per_request:
            return TrialResult(status="failed", reason=FailureReason.OOM_UNDER_LOAD,
                               detail=f"preemption storm at {lv.label}: {storm:.1f} "
                                      "preemptions per request (KV cache too small)",
                               command=command, env=dict(params.env), metrics=metrics,
                               levels=levels)
    worst = max(levels, key=lambda lv: lv.metrics["error_rate"])
    if worst.metrics["error_rate"] > w.max_error_rate:
        errors: dict[str, int] = {}
        for rep in worst.repeats:
            for k, v in rep.errors.items():
                errors[k] = errors.get(k, 0) + v
        failed = sum(r.failed for r in worst.repeats)
        total = failed + sum(r.completed for r in worst.repeats)
        return TrialResult(status="failed", reason=FailureReason.TOO_MANY_ERRORS,
                           detail=f"{failed}/{total} requests failed at {worst.label} {errors}",
                           command=command, env=dict(params.env), metrics=metrics,
                           levels=levels)
    return TrialResult(status="ok", command=command, env=dict(params.env), metrics=metrics,
                       levels=levels)


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
