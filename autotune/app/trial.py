"""One trial: params -> server -> load -> metrics -> score, or a classified failure."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.core.errors import EnvironmentFailure, FailureReason, TrialFailure, WorkloadError
from autotune.core.events import Phase, emit
from autotune.core.stats import Estimate, mean_interval
from autotune.engine.argv import ServerSpec, build_command, redact
from autotune.engine.logs import classify_startup_failure, kv_cache_bytes, kv_cache_tokens
from autotune.engine.memory import MemoryBaseline, MemorySampler, memory_metrics, wait_for_memory
from autotune.engine.probes import Probe
from autotune.engine.server import VllmServer, free_port
from autotune.engine.slots import Slot
from autotune.measure.capacity import CAPACITY, CapacitySearch
from autotune.measure.client import (
    LevelRun,
    Liveness,
    Next,
    ServerGone,
    ServerHung,
    run_workload,
)
from autotune.measure.metrics import LevelResult, RequestSample, aggregate, load_mismatch, summarize
from autotune.measure.plan import Plan
from autotune.measure.records import write_samples
from autotune.measure.result import PruneCheck, TrialResult, watched_metric
from autotune.measure.server_api import Target, greedy_outputs
from autotune.measure.stopping import next_step, time_to_finish
from autotune.measure.workload import Level, Workload, capacity_level
from autotune.space.params import TrialParams
from autotune.space.search import EngineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSetup:
    """What stays the same for every trial of a run."""

    model: str
    launcher: tuple[str, ...]
    plan: Plan
    engine: EngineSettings
    probe: Probe
    base_args: dict[str, Any] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)
    gpu_indices: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()  # the cores the server is pinned to (empty: all)
    api_key: str | None = None
    host: str = "127.0.0.1"
    # which load level's metrics the objective reads (a sweep's last, heaviest, by default)
    objective_level: int = -1
    objective_metric: str = "output_throughput"
    # memory as it was before the first server; None: do not check between trials
    baseline: MemoryBaseline | None = None
    # the quality guard's fixed prompts, asked greedily after the load (empty: not asked)
    quality_prompts: tuple[str, ...] = ()
    quality_max_tokens: int = 16

    @property
    def workload(self) -> Workload:
        return self.plan.workload


def server_spec(params: TrialParams, setup: TrialSetup, port: int) -> ServerSpec:
    # the run's share of the machine wins over a candidate's own binding
    env = {**setup.base_env, **params.env, **Slot(setup.gpu_indices, setup.cpus).env()}
    return ServerSpec(model=setup.model, args={**setup.base_args, **params.args}, env=env,
                      host=setup.host, port=port, api_key=setup.api_key,
                      launcher=setup.launcher, cpus=setup.cpus)


def level_results(w: Workload, runs: list[LevelRun],
                  levels: Sequence[Level] | None = None) -> list[LevelResult]:
    """Group rounds by level and aggregate them (pure). `levels`: those measured, when a
    capacity search chose them (default: the workload's)."""
    out: list[LevelResult] = []
    for index, level in enumerate(levels if levels is not None else w.load_levels()):
        mine = [r for r in runs if r.plan.index == index]
        if not mine:
            continue  # a pruned candidate stops before its later levels
        out.append(aggregate(
            level.label, level.model_dump(mode="json", exclude_none=True),
            [summarize(r.samples, {str(k): v for k, v in w.slo.items()}) for r in mine],
            [{"peak_kv_cache_usage": r.server.peak_kv_cache_usage,
              "peak_requests_waiting": r.server.peak_requests_waiting,
              "peak_requests_running": r.server.peak_requests_running,
              "num_preemptions": r.server.preemptions} for r in mine]))
    return out


@dataclass
class _Rounds:
    """The measuring loop's state: decides after each round whether to measure another."""

    setup: TrialSetup
    prune: PruneCheck | None
    watched: str
    trial: str = ""  # the trial's folder name, for the phase it emits
    values: dict[int, list[float]] = field(default_factory=dict)
    durations: dict[int, list[float]] = field(default_factory=dict)
    pruned: bool = False
    saved_s: float = 0.0

    @property
    def objective_index(self) -> int:
        return self.setup.objective_level % len(self.setup.plan.levels)

    def after(self, run: LevelRun) -> Next:
        w = self.setup.workload
        m = summarize(run.samples, {str(k): v for k, v in w.slo.items()}).flat()
        i = run.plan.index
        values = self.values.setdefault(i, [])
        durations = self.durations.setdefault(i, [])
        values.append(m[self.watched])
        durations.append(m["duration_s"])
        emit(Phase(self.trial, "measuring", level=run.plan.level.label, round=len(values),
                   interval=mean_interval(values), metric=self.watched))
        if m["error_rate"] > w.max_error_rate:
            return "stop"  # the trial fails as too_many_errors: no point measuring more
        if i == self.objective_index and self.prune is not None and self.prune(
                run.plan.round, m[self.watched]):
            self.pruned = True
            self.saved_s = time_to_finish(values, durations, w.measure)
            return "stop"
        return "continue" if next_step(values, durations, w.measure) == "continue" else "next"


def capacity_step(cap: CapacitySearch, plan: Plan, rounds: _Rounds) -> Callable[[LevelRun],
                                                                                  Next]:
    """After each round of a capacity search: record whether the level held its SLOs, and
    add the next level to the plan (or stop)."""
    w = plan.workload

    def after(run: LevelRun) -> Next:
        m = summarize(run.samples, {str(k): v for k, v in w.slo.items()}).flat()
        rounds.durations.setdefault(run.plan.index, []).append(m["duration_s"])
        level = plan.levels[run.plan.index]
        emit(Phase(rounds.trial, "measuring", level=f"{level.label} (capacity search)",
                   round=len(rounds.durations[run.plan.index])))
        cap.record(float(level.concurrency or level.rate or 0), m)
        nxt = cap.next()
        if nxt is None:
            return "stop"
        plan.add_level(capacity_level(cap.spec.over, nxt))
        return "next"
    return after


def _greedy(setup: TrialSetup, base_url: str) -> list[list[int]]:
    """The quality guard's greedy outputs (none asked, or the server would not answer: [])."""
    if not setup.quality_prompts:
        return []
    try:
        return greedy_outputs(base_url, setup.api_key, setup.quality_prompts,
                              setup.quality_max_tokens)
    except Exception as exc:  # judged as missing by the guard, never a crash of the trial
        log.warning("greedy outputs for the quality guard failed: %s", exc)
        return []


def run_trial(params: TrialParams, setup: TrialSetup, trial_dir: Path,
              prune: PruneCheck | None = None) -> TrialResult:
    """Start a server with `params`, measure the workload, stop it. Never raises TrialFailure.

    Each level is measured in rounds until the watched metric's interval is narrow enough
    (the workload's `measure`); `prune` may stop a hopeless candidate early. Per-request
    samples are written to `samples.jsonl.gz` beside the server log.

    Raises EnvironmentFailure, before starting anything, when the memory of an earlier server
    has not come back: that would measure a polluted machine, not this candidate. Raises
    WorkloadError when the workload, not the candidate, is at fault.
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
    rounds = _Rounds(setup, prune, watched_metric(setup.objective_metric), trial_dir.name)
    plan = setup.plan.fresh()  # a capacity search adds this trial's own levels to it
    cap = CapacitySearch(w.capacity) if w.capacity is not None else None
    after = rounds.after if cap is None else capacity_step(cap, plan, rounds)
    # memory is sampled from the server's spawn to its stop: start-up and compilation too
    mem = MemorySampler(setup.probe, None, setup.gpu_indices)
    server = VllmServer(spec, trial_dir / "server.log",
                        startup_timeout_s=setup.engine.startup_timeout_s,
                        stop_timeout_s=setup.engine.stop_timeout_s, on_start=mem.watch)
    emit(Phase(trial_dir.name, "starting", log=trial_dir / "server.log"))
    try:
        with mem, server:
            command = redact(server.argv)  # its port may have changed (a port was taken)
            emit(Phase(trial_dir.name, "warming"))
            live = Liveness(server.alive, lambda: server.healthy(wait_s=2.0),
                            setup.engine.stall_s)
            try:
                runs = run_workload(Target(server.base_url, setup.api_key), plan,
                                    alive=live, after_round=after)
            except ServerGone:
                runs = None
            except ServerHung as exc:
                raise TrialFailure(FailureReason.HUNG_UNDER_LOAD, str(exc),
                                   server.log_tail()) from None
            except Exception as exc:  # anything else the load met ends the trial, classified
                log.warning("the load generator failed", exc_info=True)
                raise TrialFailure(FailureReason.LOAD_ERROR, "the load generator failed: "
                                   f"{type(exc).__name__}: {exc}"[:500],
                                   server.log_tail()) from None
            mem.sample_quietly(full=True)  # PSS too at the end of the load, whatever the rate
            outputs = _greedy(setup, server.base_url) if runs is not None else []
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
            cores = server.cores()
            emit(Phase(trial_dir.name, "stopping"))
    except TrialFailure as f:
        log.info("trial failed: %s", f)
        return TrialResult(status="failed", reason=f.reason, detail=f.detail, command=command,
                           env=dict(params.env), log_tail=f.log_tail[-4000:])

    write_samples(trial_dir / "samples.jsonl.gz", runs)
    samples = [s for r in runs for s in r.samples]
    mismatch = load_mismatch(samples, w.ignore_eos)
    if mismatch:
        raise WorkloadError(f"workload: {mismatch}")
    levels = level_results(w, runs, plan.levels)
    if cap is not None:
        # the figures of the highest level that held its SLOs (or the first, if none did)
        held = cap.held
        objective_label = next((lv.label for lv in plan.levels if held is not None
                                and (lv.concurrency or lv.rate) == held), plan.levels[0].label)
    else:
        objective_label = plan.levels[rounds.objective_index].label
    chosen = next((lv for lv in levels if lv.label == objective_label), levels[-1])
    metrics: dict[str, Estimate] = dict(chosen.metrics)
    metrics.update({k: Estimate.single(v) for k, v in chosen.server.items()})
    extras = {"startup_s": startup_s, **memory_metrics(mem.peaks, bool(setup.gpu_indices))}
    kv, kv_bytes = kv_cache_tokens(log_text), kv_cache_bytes(log_text)
    if kv is not None:
        extras["kv_cache_tokens"] = float(kv)
    if kv_bytes is not None:
        extras["kv_cache_bytes"] = float(kv_bytes)
    metrics.update({k: Estimate.single(v) for k, v in extras.items()})
    if cap is not None:
        metrics[CAPACITY] = cap.estimate()
        # levels above the capacity are overloaded on purpose: their errors and preemptions
        # are what broke the SLOs, not a failure of the candidate
        levels_checked = [chosen]
    else:
        levels_checked = levels
    round_values = rounds.values.get(rounds.objective_index, [])
    common: dict[str, Any] = {
        "command": command, "env": dict(params.env), "metrics": metrics, "levels": levels,
        "watched": rounds.watched, "round_values": round_values,
        "measure_s": sum(sum(d) for d in rounds.durations.values()),
        "quality_outputs": outputs, "cores": cores}
    if cap is not None:
        common["detail"] = cap.summary()
    if rounds.pruned:
        est = mean_interval(round_values)
        return TrialResult(status="pruned", detail=f"stopped after {est.n} rounds: "
                           f"{rounds.watched} {est.describe()} cannot reach the best so far",
                           saved_s=rounds.saved_s, **common)
    for lv in levels_checked:
        completed = max(1.0, sum(r.completed for r in lv.rounds))
        storm = lv.server.get("num_preemptions", 0.0) / completed
        if storm > w.max_preemptions_per_request:
            return TrialResult(status="failed", reason=FailureReason.OOM_UNDER_LOAD,
                               detail=f"preemption storm at {lv.label}: {storm:.1f} "
                                      "preemptions per request (KV cache too small)", **common)
    worst = max(levels_checked, key=lambda lv: lv.metrics["error_rate"].value)
    if worst.metrics["error_rate"].value > w.max_error_rate:
        errors: dict[str, int] = {}
        for rnd in worst.rounds:
            for k, v in rnd.errors.items():
                errors[k] = errors.get(k, 0) + v
        failed = sum(r.failed for r in worst.rounds)
        total = failed + sum(r.completed for r in worst.rounds)
        refused = client_refusal(samples)
        if refused:
            raise WorkloadError(f"workload: the server refused {failed} of {total} requests "
                                f"at {worst.label} as malformed ({refused}); every candidate "
                                "would fail alike")
        return TrialResult(status="failed", reason=FailureReason.TOO_MANY_ERRORS,
                           detail=f"{failed}/{total} requests failed at {worst.label} {errors}",
                           **common)
    return TrialResult(status="ok", **common)


# HTTP statuses that mean the request itself is wrong (its length, the model name, the key),
# whatever the settings: the workload's fault, not the candidate's.
_CLIENT_FAULTS = frozenset({"http_400", "http_401", "http_403", "http_404", "http_413",
                            "http_422"})


def client_refusal(samples: Sequence[RequestSample]) -> str | None:
    """'http_400: <server's message>' when every failed request was refused as malformed."""
    failed = [s for s in samples if not s.ok and s.error != "session_aborted"]
    if not failed or any(s.error not in _CLIENT_FAULTS for s in failed):
        return None
    first = failed[0]
    return f"{first.error}: {first.detail}" if first.detail else str(first.error)
