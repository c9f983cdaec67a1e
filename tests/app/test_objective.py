from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from autotune.app.trial import TrialSetup, run_trial
from autotune.core.errors import EnvironmentFailure, FailureReason, WorkloadError
from autotune.core.stats import Estimate
from autotune.decide.scoring import OK_CONSTRAINT, score
from autotune.engine.memory import MemoryBaseline
from autotune.measure.metrics import RequestSample
from autotune.measure.plan import Plan
from autotune.measure.records import read_samples
from autotune.measure.result import TrialResult
from autotune.measure.server_api import prometheus_values
from autotune.measure.stopping import Measure, next_step
from autotune.measure.workload import Workload
from autotune.space.goals import Objective
from autotune.space.params import TrialParams
from autotune.space.search import EngineSettings
from autotune.testing.fake_probe import FakeProbe
from autotune.testing.fake_tokenizer import WordTokenizer
from tests.conftest import FAKE_LAUNCHER
from tests.measure.test_plan import TriTokenizer


def ok(**metrics: float) -> TrialResult:
    return TrialResult(status="ok", command=["x"], env={},
                       metrics={k: Estimate.single(v) for k, v in metrics.items()})


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


# one round per level unless a test asks for more
ONE_ROUND = {"min_rounds": 1, "max_rounds": 1, "min_s": 0}


def setup(tmp_path: Path, **workload: object) -> TrialSetup:
    w = Workload.model_validate({"num_requests": 8, "concurrency": 2, "input_tokens": 8,
                                 "output_tokens": 5, "warmup_requests": 1,
                                 "measure": ONE_ROUND, **workload})
    return TrialSetup(model="fake-model", launcher=FAKE_LAUNCHER, plan=Plan(w, WordTokenizer()),
                      engine=EngineSettings(startup_timeout_s=120, stop_timeout_s=5),
                      probe=FakeProbe(), api_key="k")


def v(r: TrialResult, name: str) -> float:
    value = r.value(name)
    assert value is not None, name
    return value


def most_in_flight(samples: Sequence[RequestSample]) -> int:
    """The most requests in flight at one instant (one ending as another starts: not both)."""
    events = sorted([(s.start, 1) for s in samples] + [(s.end, -1) for s in samples])
    return max(itertools.accumulate(d for _, d in events))


def test_run_trial_against_stand_in(tmp_path: Path) -> None:
    # slow enough (2 s) for the /metrics watcher (every 0.5 s) to see it running, even when
    # a busy machine's read takes a while
    r = run_trial(TrialParams(args={"max-num-seqs": 2, "fake-tpot-ms": 100}), setup(tmp_path),
                  tmp_path / "t0")
    assert r.status == "ok", r
    assert v(r, "completed") == 8 and v(r, "failed") == 0
    assert v(r, "total_output_tokens") == 8 * 5
    assert v(r, "total_input_tokens") == 8 * 8
    assert 0 < v(r, "median_ttft_ms") < v(r, "median_e2el_ms")
    assert v(r, "output_throughput") > 0
    # host memory is the tree's PSS; USS <= PSS <= RSS on any process
    assert 0 < v(r, "peak_host_uss_bytes") <= v(r, "peak_host_pss_bytes") \
        <= v(r, "peak_host_rss_bytes")
    assert v(r, "peak_memory_bytes") == v(r, "peak_host_pss_bytes")
    assert "peak_gpu_device_used_bytes" not in r.metrics  # no GPU watched: no GPU figure
    assert v(r, "kv_cache_tokens") > 0
    assert v(r, "kv_cache_bytes") == pytest.approx(v(r, "kv_cache_tokens") * 2**12, rel=0.01)
    assert v(r, "num_preemptions") == 0
    assert v(r, "peak_requests_running") >= 1
    assert "--api-key" not in " ".join(r.command)  # the key went in the server's environment
    # every request it measured is on disk beside the log, with what was planned for it
    rows = read_samples(tmp_path / "t0" / "samples.jsonl.gz")
    assert len(rows) == 8 and all(s.ok for _, _, s in rows)
    assert {(s.planned_prompt_tokens, s.prompt_tokens, s.max_tokens, s.output_tokens)
            for _, _, s in rows} == {(8, 8, 5, 5)}


def test_run_trial_records_startup_failure(tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"fake-crash": True}), setup(tmp_path), tmp_path / "t1")
    assert r.status == "failed"
    assert r.reason is FailureReason.STARTUP_CRASH
    assert "initialization failed" in r.log_tail


def test_requests_the_server_refuses_as_malformed_stop_the_run(tmp_path: Path) -> None:
    # prompts longer than the context are refused with HTTP 400 by every candidate alike:
    # the workload's fault, not this candidate's, and no other candidate is worth trying
    with pytest.raises(WorkloadError, match=r"refused 8 of 8 requests .* as malformed "
                                            r"\(http_400: prompt too long\)"):
        run_trial(TrialParams(args={"max-model-len": 10}), setup(tmp_path), tmp_path / "t2")


def test_other_errors_fail_the_candidate(tmp_path: Path) -> None:
    # requests that time out are the candidate's doing (too slow), not the workload's
    s = setup(tmp_path, request_timeout_s=0.3, output_tokens=20)
    r = run_trial(TrialParams(args={"fake-tpot-ms": 100}), s, tmp_path / "t2b")
    assert r.status == "failed"
    assert r.reason is FailureReason.TOO_MANY_ERRORS
    assert r.levels[0].rounds[0].errors == {"timeout": 8}
    assert "8/8 requests failed" in r.detail


def test_a_server_that_counts_other_tokens_stops_the_run(tmp_path: Path) -> None:
    # the plan's tokenizer reads trigrams; the stand-in counts words: the load is not the
    # one declared, whatever the candidate
    s = setup(tmp_path)
    s = TrialSetup(**{**s.__dict__, "plan": Plan(s.workload, TriTokenizer())})
    with pytest.raises(WorkloadError, match=r"counted .* prompt tokens where the plan built"):
        run_trial(TrialParams(), s, tmp_path / "t2c")


def test_sweep_measures_rounds_and_scores_the_chosen_level(tmp_path: Path) -> None:
    three = {"min_rounds": 3, "max_rounds": 3, "min_s": 0}
    s = setup(tmp_path, levels=[{"concurrency": 1}, {"concurrency": 4}], measure=three,
              num_requests=8)
    # 50 ms tokens: four in flight wait on the stand-in's clock, not on a busy machine's cores
    slow = {"max-num-seqs": 4, "fake-tpot-ms": 5, "fake-tpot-scale": 10}
    r = run_trial(TrialParams(args=slow), s, tmp_path / "t4")
    assert r.status == "ok", r
    assert [lv.label for lv in r.levels] == ["concurrency=1", "concurrency=4"]
    low, high = r.levels
    assert len(low.rounds) == len(high.rounds) == 3
    # each level drove its own concurrency, in every round: one request at a time, then four
    # (each takes 250 ms or more of the stand-in's clock: a stall lengthens requests, it
    # cannot pull them apart)
    rows = read_samples(tmp_path / "t4" / "samples.jsonl.gz")
    for level, want in enumerate((1, 4)):
        for i in range(3):
            assert most_in_flight([x for lv, rnd, x in rows if (lv, rnd) == (level, i)]) == want
    tput = high.metrics["output_throughput"]
    assert r.metrics["output_throughput"] == tput
    assert tput.n == 3 and tput.basis == "rounds"
    assert tput.low is not None and tput.high is not None and tput.low < tput.value < tput.high
    values = [rnd.output_throughput for rnd in high.rounds]
    assert min(values) <= tput.value <= max(values)
    assert r.round_values == pytest.approx(values)
    s1 = TrialSetup(**{**s.__dict__, "objective_level": 0})
    r1 = run_trial(TrialParams(args=slow), s1, tmp_path / "t5")
    # scored at the level it names: concurrency=1's figures, not the last level's
    assert r1.metrics["output_throughput"] == r1.levels[0].metrics["output_throughput"]
    assert r1.metrics["output_throughput"] != r1.levels[1].metrics["output_throughput"]


def test_rounds_go_on_until_the_interval_is_narrow(tmp_path: Path) -> None:
    # the stand-in's fixed timing gives rounds within a few per cent of each other: the rule
    # stops after its minimum; a target it cannot reach runs to the round cap
    # (a target of 99%: a loaded machine's stall in one of 3 rounds left 50% out of reach)
    easy = {"min_rounds": 3, "max_rounds": 12, "min_s": 0, "target_ci": 0.99}
    hard = {"min_rounds": 3, "max_rounds": 6, "min_s": 0, "target_ci": 1e-6}
    r = run_trial(TrialParams(args={"fake-tpot-ms": 2}), setup(tmp_path, measure=easy),
                  tmp_path / "ta")
    # it stopped at the first round whose interval met the target, well before the cap (the
    # rule on the rounds it measured: a stall in one round may cost a round, never the verdict)
    values = [rnd.output_throughput for rnd in r.levels[0].rounds]
    durations = [rnd.duration_s for rnd in r.levels[0].rounds]
    m = Measure(**easy)
    assert 3 <= len(values) < 12, values
    assert [next_step(values[:k], durations[:k], m) for k in range(1, len(values) + 1)] == (
        ["continue"] * (len(values) - 1) + ["done"]), values
    r = run_trial(TrialParams(args={"fake-tpot-ms": 2}), setup(tmp_path, measure=hard),
                  tmp_path / "tb")
    assert len(r.levels[0].rounds) == 6
    rel = r.metrics["output_throughput"].relative_half_width
    assert rel is not None and rel > 1e-6


def test_a_hopeless_candidate_is_stopped_and_its_time_saved_counted(tmp_path: Path) -> None:
    many = {"min_rounds": 2, "max_rounds": 8, "min_s": 0, "max_s": 60, "target_ci": 1e-6}
    seen: list[tuple[int, float]] = []

    def prune(step: int, value: float) -> bool:
        seen.append((step, value))
        return step == 2

    r = run_trial(TrialParams(args={"fake-tpot-ms": 2}), setup(tmp_path, measure=many),
                  tmp_path / "tp", prune)
    assert r.status == "pruned"
    assert [s for s, _ in seen] == [0, 1, 2] and len(r.levels[0].rounds) == 3
    assert r.round_values == pytest.approx([x for _, x in seen])
    assert "stopped after 3 rounds" in r.detail
    assert r.saved_s > 0
    assert r.metrics["output_throughput"].n == 3


def test_gpu_memory_comes_from_the_probe_when_gpus_are_used(tmp_path: Path) -> None:
    # the card is 7 GiB used, 3 of them by the server's processes (the stand-in's pid)
    seen: list[tuple[int, ...]] = []

    def own(pids: Sequence[int], idx: Sequence[int]) -> int:
        seen.append(tuple(pids))
        return 3 * 2**30

    s = setup(tmp_path)
    s = TrialSetup(**{**s.__dict__, "gpu_indices": (0,),
                      "probe": FakeProbe(gpu_used=lambda idx: 7 * 2**30, gpu_process=own)})
    r = run_trial(TrialParams(), s, tmp_path / "t3")
    assert r.status == "ok"
    assert v(r, "peak_gpu_device_used_bytes") == 7 * 2**30
    assert v(r, "peak_gpu0_device_used_bytes") == 7 * 2**30
    assert v(r, "peak_gpu_process_bytes") == 3 * 2**30
    assert v(r, "peak_memory_bytes") == 3 * 2**30  # the server's own, not the whole card
    assert seen and all(len(pids) >= 1 for pids in seen)


def test_server_death_mid_benchmark_is_detected_at_once(tmp_path: Path) -> None:
    s = setup(tmp_path, num_requests=200, concurrency=2, output_tokens=50)
    t0 = time.monotonic()
    r = run_trial(TrialParams(args={"fake-die-after": 5, "fake-tpot-ms": 20}), s,
                  tmp_path / "t6")
    assert r.status == "failed"
    assert r.reason is FailureReason.DIED_DURING_BENCHMARK
    assert "fatal error" in r.log_tail
    # 200 requests x 50 tokens x 20 ms would take minutes: the death stopped the load
    assert time.monotonic() - t0 < 75


def test_preemption_storm_is_oom_under_load(tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"fake-preemptions-per-request": 3}), setup(tmp_path),
                  tmp_path / "t7")
    assert r.status == "failed"
    assert r.reason is FailureReason.OOM_UNDER_LOAD
    assert "preemption storm" in r.detail
    assert v(r, "num_preemptions") >= 8 * 3


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


def test_memory_is_sampled_from_the_server_start_not_only_under_load(tmp_path: Path) -> None:
    # the stand-in holds 400 MiB while it starts (as compilation does), then frees it; for
    # 4 s, so a sampler a second late on a busy machine still sees it
    r = run_trial(TrialParams(args={"fake-startup-mib": 400, "fake-startup-s": 4}),
                  setup(tmp_path), tmp_path / "t0")
    assert r.status == "ok", r
    assert v(r, "peak_host_pss_bytes") > 400 * 2**20
    quiet = run_trial(TrialParams(args={"fake-startup-s": 1.5}), setup(tmp_path),
                      tmp_path / "t1")
    assert v(quiet, "peak_host_pss_bytes") < 300 * 2**20


def test_a_server_that_hangs_under_load_is_noticed_in_seconds(tmp_path: Path) -> None:
    s = setup(tmp_path, num_requests=40, concurrency=2, output_tokens=20)
    s = TrialSetup(**{**s.__dict__, "engine": EngineSettings(stall_s=1.0)})
    t0 = time.monotonic()
    r = run_trial(TrialParams(args={"fake-hang-after": 6}), s, tmp_path / "t0")
    took = time.monotonic() - t0
    assert r.status == "failed" and r.reason is FailureReason.HUNG_UNDER_LOAD, (r.reason,
                                                                              r.detail)
    assert "no answer to /health" in (r.detail or "")
    assert took < 60  # not the 120 s request timeout


@pytest.mark.parametrize(("args", "said"), [
    ({"fake-models-status": 502}, "the load generator failed: ClientResponseError"),
])
def test_an_error_inside_the_load_generator_ends_the_trial_classified(
        tmp_path: Path, args: dict[str, object], said: str) -> None:
    r = run_trial(TrialParams(args=args), setup(tmp_path), tmp_path / "t0")
    assert r.status == "failed" and r.reason is FailureReason.LOAD_ERROR, r
    assert said in (r.detail or "")


def test_a_malformed_chunk_is_a_classified_request_error(tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"fake-garbage-chunk": True}), setup(tmp_path),
                  tmp_path / "t0")
    assert r.status == "failed" and r.reason is FailureReason.TOO_MANY_ERRORS, r
    assert "protocol:not_an_object" in (r.detail or "")
