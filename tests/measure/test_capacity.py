"""Capacity at an SLO: the search's arithmetic, and one trial on the stand-in server whose
scheduler admits max-num-seqs requests at a time (the rest queue, so TTFT jumps above it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.app.trial import TrialSetup, run_trial
from autotune.core.errors import ConfigError
from autotune.measure.capacity import Capacity, CapacitySearch
from autotune.measure.plan import Plan
from autotune.measure.workload import Workload
from autotune.space.params import TrialParams
from autotune.space.search import EngineSettings, parse_space
from autotune.testing.fake_probe import FakeProbe
from autotune.testing.fake_tokenizer import WordTokenizer
from tests.conftest import FAKE_LAUNCHER


def search(over: str, true_capacity: float, **kw: float) -> CapacitySearch:
    s = CapacitySearch(Capacity(over=over, slo={"p95_ttft_ms": 100}, **kw))  # type: ignore[arg-type]
    level: float | None = s.first()
    while level is not None:
        s.record(level, {"p95_ttft_ms": 50 if level <= true_capacity else 500})
        level = s.next()
    return s


@pytest.mark.parametrize("true_capacity", [1, 7, 8, 13, 40, 64])
def test_concurrency_search_brackets_the_true_capacity(true_capacity: int) -> None:
    s = search("concurrency", true_capacity, low=1, high=64)
    est = s.estimate()
    assert est.basis == "bracket" and est.low == est.value
    assert est.low is not None and est.high is not None
    # the interval is the bracket: the level that held and the one above that broke, within
    # the resolution (10%) or adjacent
    if true_capacity < 64:
        assert est.low <= true_capacity < est.high
        assert est.high - est.low <= 1 or est.high / est.low - 1 <= 0.1
    else:
        assert est.value == est.high == 64
    if true_capacity <= 10:
        assert est.value == true_capacity  # adjacent integers: exact
    assert len(s.probes) <= 12
    levels = [p.level for p in s.probes]
    assert len(set(levels)) == len(levels)  # no level measured twice


def test_rate_search_stops_within_its_resolution() -> None:
    s = search("rate", 13.3, low=1, high=100, resolution=0.05)
    est = s.estimate()
    assert est.low is not None and est.high is not None
    assert est.low <= 13.3 < est.high and est.high / est.low - 1 <= 0.05
    assert "capacity" in s.summary() and "p95_ttft_ms <= 100" in s.summary()


def test_a_server_that_breaks_the_slo_at_the_lowest_level_has_no_capacity() -> None:
    s = search("concurrency", 0.5, low=1, high=64)
    assert s.estimate().value == 0 and len(s.probes) == 1
    assert "capacity below 1" in s.summary() and "p95_ttft_ms 500 > 100" in s.summary()


def test_capacity_settings_are_checked() -> None:
    base = {"name": "c", "args": {"max-num-seqs": {"type": "categorical", "choices": [1]}}}
    with pytest.raises(ConfigError, match="unknown per-round metric 'p95_ttft'"):
        parse_space({**base, "workload": {"capacity": {"high": 8, "slo": {"p95_ttft": 1}}}})
    with pytest.raises(ConfigError, match="whole numbers"):
        parse_space({**base, "workload": {"capacity": {"high": 8.5, "slo": {"error_rate": 0}}}})
    with pytest.raises(ConfigError, match="capacity or levels, not both"):
        parse_space({**base, "workload": {"capacity": {"high": 8, "slo": {"error_rate": 0}},
                                          "levels": [{"concurrency": 2}]}})
    with pytest.raises(ConfigError, match=r"objective\.metric capacity needs workload\.capacity"):
        parse_space({**base, "objective": {"metric": "capacity"}})


def test_one_trial_finds_the_stand_ins_capacity_and_its_latencies_agree(tmp_path: Path) -> None:
    """Up to max-num-seqs (8) requests run at once and TTFT is one token (100 ms); above it
    requests queue behind a whole request (8 tokens x 100 ms: 800 ms). The SLO (450 ms) sits
    350 ms from both (a 20 ms token under a 160 ms SLO was not: CI saw 4 in flight break it).
    Above 8 every level breaks it, whatever the load; below, a long enough stall still could,
    so the trial must report a capacity near or under 8 (0 when stalls broke the lowest level)
    that agrees with the latencies it measured at it and just above it, on one server
    (bench.capacity prints where it lands)."""
    w = Workload(input_tokens=8, output_tokens=8, num_requests=40, warmup_requests=4,
                 capacity=Capacity(over="concurrency", low=2, high=16,
                                   slo={"p95_ttft_ms": 450.0}))
    setup = TrialSetup(model="fake-model", launcher=FAKE_LAUNCHER, plan=Plan(w, WordTokenizer()),
                       engine=EngineSettings(startup_timeout_s=120, stop_timeout_s=5),
                       probe=FakeProbe(), api_key="k", objective_metric="capacity")
    r = run_trial(TrialParams(args={"max-num-seqs": 8, "fake-tpot-ms": 100}), setup, tmp_path)
    assert r.status == "ok", r.detail
    cap = r.metrics["capacity"]
    assert cap.basis == "bracket" and cap.low == cap.value
    assert cap.value <= 10, r.detail  # never above what the stand-in can hold
    by_level = {lv.level["concurrency"]: lv for lv in r.levels}
    broke = by_level[cap.high]
    if cap.value == 0:
        # stalls broke even the lowest level (two requests at once, 40 of them: three first
        # tokens 350 ms late): said so, and agreeing with what was measured there
        assert "capacity below 2 sessions in flight" in r.detail
        assert broke.metrics["p95_ttft_ms"].value > 450.0
        return
    assert len(by_level) == len(r.levels) >= 3  # several levels, one server start
    held = by_level[cap.value]
    # the reported capacity agrees with the latencies measured at it and just above it
    assert held.metrics["p95_ttft_ms"].value <= 450.0
    assert broke.metrics["p95_ttft_ms"].value > 450.0
    # the trial's figures are those of the level at capacity
    assert r.metrics["p95_ttft_ms"] == held.metrics["p95_ttft_ms"]
    assert "capacity" in r.detail and "levels on one server" in r.detail
    # the shared plan keeps the workload's own levels for the next trial
    assert len(setup.plan.levels) == 1


@pytest.mark.engine
def test_a_capacity_trial_on_the_real_engine_agrees_with_its_own_latencies(
        tiny_model: Path, tmp_path: Path) -> None:
    """The real CPU engine admitting 2 sequences at a time: above that, requests queue behind
    whole requests and TTFT climbs with the concurrency. One trial, one server, several levels;
    the capacity it reports is checked against the p95 TTFT measured at it and just above.

    The load is sized so that the SLO breaks inside the range on any machine: at 32 in flight
    (all 24 requests) the last waits for 11 waves of 96 decode steps, over 1 s even at 1 ms
    a step, while one or two in flight wait for none."""
    from autotune.model.tokens import ModelTokenizer
    from tests.conftest import REAL_LAUNCHER

    slo = 1000.0
    w = Workload(input_tokens=24, output_tokens=96, num_requests=24, warmup_requests=2,
                 capacity=Capacity(over="concurrency", low=1, high=32,
                                   slo={"p95_ttft_ms": slo}))
    setup = TrialSetup(model=str(tiny_model), launcher=REAL_LAUNCHER,
                       plan=Plan(w, ModelTokenizer(str(tiny_model))),
                       engine=EngineSettings(startup_timeout_s=300, stop_timeout_s=20),
                       probe=FakeProbe(), api_key="k", objective_metric="capacity",
                       base_args={"load-format": "dummy", "enforce-eager": True,
                                  "max-model-len": 512, "gpu-memory-utilization": 0.3})
    r = run_trial(TrialParams(args={"max-num-seqs": 2}), setup, tmp_path)
    assert r.status == "ok", (r.detail, r.log_tail[-2000:])
    cap = r.metrics["capacity"]
    assert cap.basis == "bracket" and cap.low == cap.value >= 1
    assert cap.high is not None and cap.high > cap.value, r.detail  # a level broke the SLO
    by_level = {lv.level["concurrency"]: lv for lv in r.levels}
    held, above = by_level[cap.value], by_level[cap.high]
    assert held.metrics["p95_ttft_ms"].value <= slo < above.metrics["p95_ttft_ms"].value
    # every level that held is at or below the capacity, every one that broke above it
    for level, lv in by_level.items():
        assert (lv.metrics["p95_ttft_ms"].value <= slo) == (level <= cap.value), (level, r.detail)
    assert r.metrics["p95_ttft_ms"] == held.metrics["p95_ttft_ms"]
    assert "levels on one server" in r.detail
