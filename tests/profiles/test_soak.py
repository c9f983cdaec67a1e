"""`autotune check --soak`: the statistics of drift and growth on known inputs, and a soak of
the stand-in server, steady and leaking."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from autotune.cli.main import main
from autotune.profiles.profile import Profile, write_profile
from autotune.profiles.soak import MIN_WINDOWS, Window, analyse, drift, slope, went_on
from tests.conftest import FAKE_LAUNCHER
from tests.profiles.test_profile import meta


def test_slope_recovers_a_known_growth_with_an_interval() -> None:
    ts = [float(i) for i in range(10)]
    exact = slope(ts, [100 + 3 * t for t in ts])
    assert exact is not None and exact.value == pytest.approx(3)
    assert exact.low == pytest.approx(3) and exact.high == pytest.approx(3)
    noisy = slope(ts, [100 + 3 * t + (1 if i % 2 else -1) for i, t in enumerate(ts)])
    assert noisy is not None and noisy.low is not None and noisy.high is not None
    assert noisy.low < 3 < noisy.high
    flat = slope(ts, [100 + (1 if i % 2 else -1) for i in range(10)])
    assert flat is not None and flat.low is not None and flat.high is not None
    assert flat.low < 0 < flat.high  # no growth: the interval holds 0
    assert slope([0.0, 1.0], [1.0, 2.0]) is None


def test_drift_compares_the_last_third_with_the_first() -> None:
    steady = drift([10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 10.0])
    assert steady is not None and steady.low is not None and steady.high is not None
    assert steady.low < 1 < steady.high
    worse = drift([10.0, 10.5, 10.0, 15, 16, 17, 20.0, 20.5, 20.0])
    assert worse is not None and worse.low is not None and worse.low > 1.5
    assert drift([1.0] * 5) is None


def window(t: float, mib: float, p99: float = 50.0) -> Window:
    return Window(t_s=t, p99_ttft_ms=10, p99_e2el_ms=p99, request_throughput=5,
                  request_goodput=5, output_throughput=100, memory_bytes=int(mib * 2**20), errors=0)


def test_a_soak_went_on_only_when_a_window_before_its_last_ended_past_its_duration() -> None:
    # 10 s windows, a 30 s soak: the third window ends it unless windows were still missing
    assert not went_on([window(10 * i, 1) for i in range(1, 4)], 30)
    # a last round that overran the duration is not going on
    assert not went_on([window(t, 1) for t in (10, 20, 37)], 30)
    assert went_on([window(10 * i, 1) for i in range(1, MIN_WINDOWS + 1)], 30)


def test_a_leak_breaks_the_threshold_a_steady_server_does_not() -> None:
    prof = Profile(settings={"model": "/m"}, meta=meta(check={
        "max_memory_growth_mib_per_h": 100}))
    # 60 s windows over 20 minutes; the first window's warm-up allocation is left out
    steady = [window(60 * i, 2000 + (i == 0) * 500 + (3 if i % 2 else -3)) for i in range(20)]
    assert analyse(steady, prof).breaches == []
    leaking = [window(60 * i, 2000 + 10 * i) for i in range(20)]  # 600 MiB per hour
    report = analyse(leaking, prof)
    assert report.memory_growth_mib_per_h is not None
    assert report.memory_growth_mib_per_h.value == pytest.approx(600)
    assert any("memory grows 600" in b for b in report.breaches)


def test_latency_drift_and_distance_from_the_record_break_thresholds() -> None:
    prof = Profile(settings={"model": "/m"}, meta=meta(metrics={
        "output_throughput": {"value": 100, "low": 95, "high": 105, "n": 3, "basis": "starts"},
        "p99_e2el_ms": {"value": 50, "low": 45, "high": 55, "n": 3, "basis": "starts"}}))
    drifting = [window(10 * i, 1000, p99=50 + 8 * i) for i in range(12)]
    b = analyse(drifting, prof).breaches
    assert any(x.startswith("P99 latency drifted x") for x in b)
    slow = [window(10 * i, 1000, p99=200) for i in range(12)]
    assert any("against 50 [45, 55] (3 starts) recorded" in x
               for x in analyse(slow, prof).breaches)


def standin_profile(tmp: Path, leak: bool = False, **check: float) -> Path:
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    path = tmp / "profiles" / "cpu" / "m.yaml"
    write_profile(Profile(settings={"model": str(ensure_builtin_model(TINY_QWEN3)),
                                    "fake-startup-s": 0.1, "max-num-seqs": 8,
                                    # 10 ms tokens: latency is the stand-in's clock,
                                    # not a busy machine's cores
                                    "fake-tpot-ms": 10, **({"fake-leak-kib-per-request": 512}
                                                          if leak else {})},
                          meta=meta(env={}, check=check, workload={
                              "num_requests": 8, "concurrency": 4, "input_tokens": 8,
                              "output_tokens": 16, "warmup_requests": 0,
                              "slo": {"ttft_ms": 0.001}})), path)
    return path


def test_a_soak_of_the_stand_in_reports_windows_and_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the server's memory is its tree's PSS, which moves by a MiB or two as neighbouring
    # processes sharing its libraries come and go: over a few seconds that reads as
    # thousands of MiB per hour, so this soak's threshold is set above it; likewise its P99
    # drift, judged on two windows of a second or so against two, which a busy minute over
    # the last ones can double (the rule itself is tested on recorded windows above)
    path = standin_profile(tmp_path, max_memory_growth_mib_per_h=1e5, max_latency_drift=1e3)
    # a soak too short for the windows every judgement needs goes on until it has them
    assert main(["check", str(path), "--soak", "1", "--window", "0.5", "--launcher",
                 shlex.join(FAKE_LAUNCHER), "--runs-dir", str(tmp_path / "runs"),
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert f"past the 1 s asked, to reach the {MIN_WINDOWS} windows" in err
    doc = json.loads(out)
    assert len(doc["windows"]) >= MIN_WINDOWS and doc["ok"] and doc["breaches"] == []
    assert all(w["memory_bytes"] > 10 * 2**20 and w["errors"] == 0 for w in doc["windows"])
    # an SLO no request of the stand-in can meet: goodput 0 while the throughput is not
    assert all(w["request_goodput"] == 0 < w["request_throughput"] for w in doc["windows"])
    # a busy minute makes the soak longer, never its verdict blind
    assert doc["latency_drift"] is not None and doc["memory_growth_mib_per_h"] is not None


def test_a_leaking_server_fails_the_check(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # half a MiB kept per request: hundreds of MiB per hour against a threshold of 10
    path = standin_profile(tmp_path, leak=True, max_memory_growth_mib_per_h=10)
    assert main(["check", str(path), "--soak", "4", "--window", "0.5", "--launcher",
                 shlex.join(FAKE_LAUNCHER), "--runs-dir", str(tmp_path / "runs")]) == 3
    out = capsys.readouterr().out
    assert "BROKEN:" in out and "memory grows" in out and "MiB per hour (threshold 10)" in out
