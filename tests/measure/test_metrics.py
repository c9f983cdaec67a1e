from __future__ import annotations

import math

import pytest

from autotune.measure.metrics import (
    RequestSample,
    aggregate,
    load_mismatch,
    metric_names,
    summarize,
)


def req(start: float, ttft: float, gaps: list[float], out: int, prompt: int = 10
        ) -> RequestSample:
    end = start + ttft + sum(gaps)
    return RequestSample(start=start, end=end, ok=True, ttft=ttft, itl=tuple(gaps),
                         prompt_tokens=prompt, output_tokens=out)


def test_known_samples() -> None:
    a = req(0.0, 0.1, [0.02] * 4, out=5)  # e2e 0.18, tpot 0.02
    b = req(0.05, 0.3, [0.05] * 4, out=5)  # e2e 0.5 ends 0.55, tpot 0.05
    bad = RequestSample(start=0.1, end=0.2, ok=False, error="http_500")
    m = summarize([a, b, bad])
    assert m.completed == 2 and m.failed == 1
    assert m.errors == {"http_500": 1}
    assert m.error_rate == pytest.approx(1 / 3)
    assert m.duration_s == pytest.approx(0.55)
    assert m.total_output_tokens == 10 and m.total_input_tokens == 20
    assert m.output_throughput == pytest.approx(10 / 0.55)
    assert m.request_throughput == pytest.approx(2 / 0.55)
    assert m.request_goodput == m.request_throughput  # no SLO: every success counts
    slo = summarize([a, b, bad], {"ttft_ms": 150})
    assert slo.request_goodput == pytest.approx(1 / 0.55)
    assert summarize([a, b], {"tpot_ms": 30, "e2el_ms": 1000}).request_goodput == \
        pytest.approx(1 / 0.55)
    assert m.ttft_ms.mean == pytest.approx(200.0)
    assert m.ttft_ms.median == pytest.approx(200.0)
    assert m.ttft_ms.p99 == pytest.approx(100 + 0.99 * 200)
    assert m.tpot_ms.mean == pytest.approx(35.0)
    assert m.itl_ms.median == pytest.approx(35.0)
    assert m.e2el_ms.p95 == pytest.approx(180 + 0.95 * 320)


def test_tpot_follows_vllm_definition() -> None:
    s = req(0.0, 0.5, [0.1, 0.1, 0.1], out=4)
    assert s.tpot == pytest.approx(0.1)
    assert req(0.0, 0.5, [], out=1).tpot is None


def test_flat_names_match_vllm_bench_and_are_known_to_objectives() -> None:
    flat = summarize([req(0, 0.1, [0.01], out=2)]).flat()
    for name in ("mean_ttft_ms", "median_tpot_ms", "p99_itl_ms", "p95_e2el_ms",
                 "output_throughput", "request_throughput", "total_token_throughput"):
        assert name in flat
    assert set(flat) <= set(metric_names())


def test_no_successes_gives_nan_latencies_not_zero() -> None:
    m = summarize([RequestSample(start=0, end=1, ok=False, error="timeout")])
    assert math.isnan(m.ttft_ms.p95)
    assert m.output_throughput == 0
    assert m.error_rate == 1.0


def test_aggregate_rounds_and_server_stats() -> None:
    runs = [summarize([req(0, 0.1, [0.01], out=2)]), summarize([req(0, 0.3, [0.01], out=2)])]
    lv = aggregate("concurrency=1", {"concurrency": 1}, runs,
                   [{"peak_kv_cache_usage": 0.2, "num_preemptions": 1},
                    {"peak_kv_cache_usage": 0.5, "num_preemptions": 2,
                     "peak_requests_waiting": None}])
    e = lv.metrics["mean_ttft_ms"]
    assert e.value == pytest.approx(200.0)
    # rounds of 100 and 300 ms: s = 141.4, half-width = t(1) * s / sqrt(2) = 12.706 * 100,
    # and a latency's interval stops at 0
    assert e.high == pytest.approx(200.0 + 1270.6, rel=1e-3)
    assert e.low == 0.0
    assert e.n == 2 and e.basis == "rounds"
    assert len(lv.rounds) == 2
    assert lv.server == {"peak_kv_cache_usage": 0.5, "num_preemptions": 3.0}


def test_load_mismatch_names_the_first_difference() -> None:
    good = RequestSample(0, 1, ok=True, ttft=0.1, prompt_tokens=128, output_tokens=64,
                         planned_prompt_tokens=128, max_tokens=64)
    assert load_mismatch([good], ignore_eos=True) is None
    longer = RequestSample(0, 1, ok=True, ttft=0.1, prompt_tokens=371, output_tokens=64,
                           planned_prompt_tokens=128, max_tokens=64)
    assert "counted 371 prompt tokens where the plan built 128" in (
        load_mismatch([good, longer], ignore_eos=True) or "")
    short = RequestSample(0, 1, ok=True, ttft=0.1, prompt_tokens=128, output_tokens=10,
                          planned_prompt_tokens=128, max_tokens=64)
    assert "returned 10 tokens where 64" in (load_mismatch([short], ignore_eos=True) or "")
    assert load_mismatch([short], ignore_eos=False) is None  # EOS may end it early
    unknown = RequestSample(0, 1, ok=True, ttft=0.1, prompt_tokens=999, output_tokens=64,
                            max_tokens=64)
    failed = RequestSample(0, 1, ok=False, error="http_400", planned_prompt_tokens=5)
    assert load_mismatch([unknown, failed], ignore_eos=True) is None
