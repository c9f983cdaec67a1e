from __future__ import annotations

import time
from pathlib import Path

import pytest

from autotune.client import prometheus_values
from autotune.errors import EnvironmentFailure, FailureReason
from autotune.objective import (
    OK_CONSTRAINT,
    TrialResult,
    TrialSetup,
    run_trial,
    score,
)
from autotune.probes import MemoryBaseline
from autotune.space import EngineSettings, Objective, TrialParams
from autotune.testing.fake_probe import FakeProbe
from autotune.workload import Workload
from tests.conftest import FAKE_LAUNCHER


def ok(**metrics: float) -> TrialResult:
    return TrialResult(status="ok", command=["x"], env={}, metrics=metrics)


def test_score_value_and_normalized_constraints() -> None:
    obj = Objective.model_validate({"metric": "output_throughput", "constraints": {
        "p95_ttft_ms": {"max": 1000}, "error_rate": {"max": 0.0},
        "request_throughput": {"min": 2}}})
    s = score(obj, ok(output_throughput=500.0, p95_ttft_ms=1500.0, error_rate=0.0,
                      request_throughput=4.0))
    assert s.value == 500.0
    assert s.constraints[OK_CONSTRAINT] == 0.0
    assert s.constraints["p95_ttft_ms_max"] == pytest.approx(0.5)
    assert s.constraints["error_rate_max"] == 0.0
    assert s.constraints["request_throughput_min"] == pytest.approx(-1.0)
    assert not s.feasible
    assert score(obj, ok(output_throughput=1.0, p95_ttft_ms=10.0, error_rate=0.0,
                         request_throughput=3.0)).feasible


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_failure_scores_as_worst_and_infeasible(direction: str) -> None:
    obj = Objective.model_validate({"metric": "p95_e2el_ms", "direction": direction,
                                    "constraints": {"p95_ttft_ms": {"max": 1}}})
    failed = TrialResult(status="failed", reason=FailureReason.OOM_AT_STARTUP, command=[],
                         env={})
    s = score(obj, failed)
    good = score(obj, ok(p95_e2el_ms=100.0, p95_ttft_ms=0.5))
    assert not s.feasible and good.feasible
    assert set(s.constraints) == set(good.constraints), "same keys for every trial"
    assert (s.value <= good.value) if direction == "maximize" else (s.value >= good.value)


def test_missing_metric_is_infeasible() -> None:
    s = score(Objective(), ok(p95_ttft_ms=3.0))
    assert not s.feasible


def test_prometheus_values() -> None:
    text = ('# HELP x\nvllm:num_preemptions_total{engine="0"} 3.0\n'
            'vllm:num_preemptions_total{engine="1"} 2\nvllm:other 9\n'
            'vllm:kv_cache_usage_perc{engine="0",model_name="a b"} 0.25\n')
    v = prometheus_values(text, ["vllm:num_preemptions_total", "vllm:kv_cache_usage_perc",
                                 "vllm:absent"])
    assert v == {"vllm:num_preemptions_total": 5.0, "vllm:kv_cache_usage_perc": 0.25}


def setup(tmp_path: Path, **workload: object) -> TrialSetup:
    w = Workload.model_validate({"num_requests": 8, "concurrency": 2, "input_tokens": 8,
                                 "output_tokens": 5, "warmup_requests": 1, **workload})
    return TrialSetup(model="fake-model", launcher=FAKE_LAUNCHER, workload=w,
                      engine=EngineSettings(startup_timeout_s=15, stop_timeout_s=5),
                      probe=FakeProbe(), api_key="k")


def test_run_trial_against_stand_in(tmp_path: Path) -> None:
    # slow enough (1 s) for the /metrics watcher (every 0.5 s) to see it running
    r = run_trial(TrialParams(args={"max-num-seqs": 2, "fake-tpot-ms": 50}), setup(tmp_path),
                  tmp_path / "t0")
    assert r.status == "ok", r
    m = r.metrics
    assert m["completed"] == 8 and m["failed"] == 0
    assert m["total_output_tokens"] == 8 * 5
    assert m["total_input_tokens"] == 8 * 8
    assert 0 < m["median_ttft_ms"] < m["median_e2el_ms"]
    assert m["output_throughput"] > 0
    assert m["peak_rss_bytes"] > 0 and m["peak_memory_bytes"] == m["peak_rss_bytes"]
    assert m["kv_cache_tokens"] > 0
    assert m["num_preemptions"] == 0
    assert m["peak_requests_running"] >= 1
    assert "--api-key=***" in r.command and "--api-key=k" not in r.command


def test_run_trial_records_startup_failure(tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"fake-crash": True}), setup(tmp_path), tmp_path / "t1")
    assert r.status == "failed"
    assert r.reason is FailureReason.STARTUP_CRASH
    assert "initialization failed" in r.log_tail


def test_run_trial_fails_on_error_rate(tmp_path: Path) -> None:
    # prompts longer than the context are rejected by the server with HTTP 400
    r = run_trial(TrialParams(args={"max-model-len": 10}), setup(tmp_path), tmp_path / "t2")
    assert r.status == "failed"
    assert r.reason is FailureReason.TOO_MANY_ERRORS
    assert r.levels[0].repeats[0].errors == {"http_400": 8}
    assert "8/8 requests failed" in r.detail


def test_sweep_with_repeats_scores_the_chosen_level(tmp_path: Path) -> None:
    s = setup(tmp_path, levels=[{"concurrency": 1}, {"concurrency": 4}], repeats=3,
              num_requests=8)
    r = run_trial(TrialParams(args={"max-num-seqs": 4, "fake-tpot-ms": 5}), s, tmp_path / "t4")
    assert r.status == "ok", r
    assert [lv.label for lv in r.levels] == ["concurrency=1", "concurrency=4"]
    low, high = r.levels
    assert len(low.repeats) == len(high.repeats) == 3
    # a batching engine: four in flight deliver more than one at a time
    assert high.metrics["output_throughput"] > 2 * low.metrics["output_throughput"]
    assert r.metrics["output_throughput"] == high.metrics["output_throughput"]
    ci = high.ci95["output_throughput"]
    assert 0 < ci < high.metrics["output_throughput"]
    values = [rep.output_throughput for rep in high.repeats]
    assert min(values) <= high.metrics["output_throughput"] <= max(values)
    s1 = TrialSetup(**{**s.__dict__, "objective_level": 0})
    r1 = run_trial(TrialParams(args={"max-num-seqs": 4, "fake-tpot-ms": 5}), s1,
                   tmp_path / "t5")
    assert r1.metrics["output_throughput"] < r.metrics["output_throughput"]


def test_gpu_memory_comes_from_the_probe_when_gpus_are_used(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s = TrialSetup(**{**s.__dict__, "gpu_indices": (0,),
                      "probe": FakeProbe(gpu_used=lambda idx: 7 * 2**30)})
    r = run_trial(TrialParams(), s, tmp_path / "t3")
    assert r.status == "ok"
    assert r.metrics["peak_gpu_memory_bytes"] == 7 * 2**30
    assert r.metrics["peak_gpu0_memory_bytes"] == 7 * 2**30
    assert r.metrics["peak_memory_bytes"] == 7 * 2**30


def test_server_death_mid_benchmark_is_detected_at_once(tmp_path: Path) -> None:
    s = setup(tmp_path, num_requests=200, concurrency=2, output_tokens=50)
    t0 = time.monotonic()
    r = run_trial(TrialParams(args={"fake-die-after": 5, "fake-tpot-ms": 20}), s,
                  tmp_path / "t6")
    assert r.status == "failed"
    assert r.reason is FailureReason.DIED_DURING_BENCHMARK
    assert "fatal error" in r.log_tail
    # 200 requests x 50 tokens x 20 ms would take minutes: the death stopped the load
    assert time.monotonic() - t0 < 15


def test_preemption_storm_is_oom_under_load(tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"fake-preemptions-per-request": 3}), setup(tmp_path),
                  tmp_path / "t7")
    assert r.status == "failed"
    assert r.reason is FailureReason.OOM_UNDER_LOAD
    assert "preemption storm" in r.detail
    assert r.metrics["num_preemptions"] >= 8 * 3


def test_memory_not_back_is_an_environment_failure(tmp_path: Path) -> None:
    s = setup(tmp_path)
    baseline = MemoryBaseline(gpu_used=0, host_available=16 * 2**30, gpu_tolerance=0,
                              host_tolerance=2**30)
    leaky = FakeProbe(host_available=lambda: 10 * 2**30)  # 6 GiB still held by someone
    dirty = TrialSetup(**{**s.__dict__, "probe": leaky, "baseline": baseline,
                          "engine": EngineSettings(settle_timeout_s=0.3)})
    with pytest.raises(EnvironmentFailure, match=r"6\.0 GiB below the baseline"):
        run_trial(TrialParams(), dirty, tmp_path / "t8")
    assert not (tmp_path / "t8").exists(), "nothing was started"
    readings = iter([10 * 2**30, 12 * 2**30] + [16 * 2**30] * 1000)
    settling = FakeProbe(host_available=lambda: next(readings))
    ok = TrialSetup(**{**dirty.__dict__, "probe": settling,
                       "engine": EngineSettings(settle_timeout_s=5)})
    assert run_trial(TrialParams(), ok, tmp_path / "t9").status == "ok"
