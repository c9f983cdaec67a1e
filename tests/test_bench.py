"""The benchmarks keep running: they drive vLLM's own client through its internals (its random
dataset, its `benchmark` coroutine), which can move between vLLM releases. One short round of
each against the stand-in server; the figures themselves are the benchmarks' job, but on the
stand-in's fixed timing (5 ms per token) both clients must read the same TPOT."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^(median_ttft_ms|median_tpot_ms|output_throughput)\s+([\d.]+)\s+([\d.]+)"
                 r"\s+([\d.]+)", re.M)


def run_bench(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


def test_fidelity_bench_compares_both_clients_on_the_stand_in() -> None:
    out = run_bench("bench.fidelity", "--server", "stand-in", "--rounds", "1",
                    "--requests", "16")
    table = {m: (float(v), float(a), float(ratio)) for m, v, a, ratio in ROW.findall(out)}
    assert set(table) == {"median_ttft_ms", "median_tpot_ms", "output_throughput"}, out
    for vllm, ours, ratio in table.values():
        assert vllm > 0 and ours > 0
        assert ratio == pytest.approx(ours / vllm, abs=0.002)
    vllm_tpot, our_tpot, _ = table["median_tpot_ms"]
    assert vllm_tpot == pytest.approx(5.0, rel=0.3)
    assert our_tpot == pytest.approx(vllm_tpot, rel=0.1)
    assert "largest deviation" in out
    # the same load: autotune sent vLLM's prompts and output lengths
    load = re.search(r"^load per round.*: completed (\d+) / (\d+), total_input_tokens (\d+) / "
                     r"(\d+), total_output_tokens (\d+) / (\d+)$", out, re.M)
    assert load, out
    assert load[1] == load[2] == "16"
    assert int(load[3]) > 0 and load[3] == load[4]
    assert int(load[5]) > 0 and load[5] == load[6]


def test_capacity_bench_reports_both_rates() -> None:
    out = run_bench("bench.capacity", "--rounds", "1", "--requests", "200")
    rates = re.findall(r"^(vllm bench|autotune) client:\s+(\d+) req/s", out, re.M)
    assert [who for who, _ in rates] == ["vllm bench", "autotune"], out
    assert all(int(rate) > 0 for _, rate in rates)
    assert re.search(r"^ratio autotune/vllm:\s+[\d.]+", out, re.M), out
