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


@pytest.mark.engine  # vLLM's own client
@pytest.mark.alone  # both clients' timings, compared
def test_fidelity_bench_compares_both_clients_on_the_stand_in() -> None:
    out = run_bench("bench.fidelity", "--server", "stand-in", "--rounds", "1",
                    "--requests", "16")
    table = {m: (float(v), float(a), float(ratio)) for m, v, a, ratio in ROW.findall(out)}
    assert set(table) == {"median_ttft_ms", "median_tpot_ms", "output_throughput"}, out
    for vllm, ours, ratio in table.values():
        assert vllm > 0 and ours > 0
        # the figures are printed to 2 decimals and the ratio to 3: allow their rounding
        rounding = (ours / vllm) * (0.005 / vllm + 0.005 / ours) + 0.0005
        assert ratio == pytest.approx(ours / vllm, abs=rounding * 1.01)
    vllm_tpot, our_tpot, _ = table["median_tpot_ms"]
    # the stand-in sleeps 5 ms a token: never faster, and slower only by what a busy machine
    # adds to its event loop (7.1 ms seen on a noisy one)
    assert 4.5 <= vllm_tpot < 10.0
    assert our_tpot == pytest.approx(vllm_tpot, rel=0.1)
    assert "largest deviation" in out
    # the same load: autotune sent vLLM's prompts and output lengths
    load = re.search(r"^load per round.*: completed (\d+) / (\d+), total_input_tokens (\d+) / "
                     r"(\d+), total_output_tokens (\d+) / (\d+)$", out, re.M)
    assert load, out
    assert load[1] == load[2] == "16"
    assert int(load[3]) > 0 and load[3] == load[4]
    assert int(load[5]) > 0 and load[5] == load[6]


@pytest.mark.engine  # vLLM's own client
def test_capacity_bench_reports_both_rates() -> None:
    out = run_bench("bench.capacity", "--rounds", "1", "--requests", "200")
    rates = re.findall(r"^(vllm bench|autotune) client:\s+(\d+) req/s", out, re.M)
    assert [who for who, _ in rates] == ["vllm bench", "autotune"], out
    assert all(int(rate) > 0 for _, rate in rates)
    assert re.search(r"^ratio autotune/vllm:\s+[\d.]+", out, re.M), out


def test_verdicts_bench_replays_the_recorded_starts() -> None:
    from autotune.measure import Measure
    from bench.verdicts import DATA, Recording, simulate

    rec = Recording(DATA)
    assert len(rec.rounds) >= 20 and all(len(r) >= 3 for r in rec.rounds)
    m = Measure(min_rounds=3, min_s=0, max_s=1e9, max_rounds=3)
    same, secs, rounds = simulate(rec, m, 3, 2, 1.0, 300, seed=1)
    doubled, _, _ = simulate(rec, m, 3, 2, 2.0, 300, seed=1)
    halved, _, _ = simulate(rec, m, 3, 2, 0.5, 300, seed=1)
    assert same < 0.1 and doubled > 0.9 and halved == 0.0
    assert rounds == 3 and secs > 0


def test_kill_bench_counts_what_each_kill_leaves_on_the_stand_in() -> None:
    import shlex

    from tests.conftest import FAKE_LAUNCHER

    out = run_bench("bench.kills", "--per-signal", "1", "--launcher", shlex.join(FAKE_LAUNCHER),
                    "--min-delay", "2", "--max-delay", "4", "--trials", "2")
    rows = re.findall(r"^\s+\d+\s+(SIGINT|SIGTERM|SIGKILL)\s+[\d.]+\s+(.+?)\s+(-?\d+)\s+"
                      r"([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert sorted(r[0] for r in rows) == ["SIGINT", "SIGKILL", "SIGTERM"], out
    codes = {r[0]: int(r[2]) for r in rows}
    assert codes["SIGKILL"] == -9 and codes["SIGTERM"] in (130, 0) and codes["SIGINT"] in (130, 0)
    assert all(r[4] == "0" and r[5] == "0" for r in rows), out
    assert "total: 3 kills, 0 server processes left, 0 MiB of them" in out


@pytest.mark.engine  # vLLM's own client
def test_unseen_bench_searches_then_measures_every_point_on_the_stand_in(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bench.unseen", "--server", "stand-in",
                        "--trials", "4", "--rounds", "2", "--work", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = r.stdout
    # exit 1 is a FAIL verdict (points of the stand-in tie within its small noise)
    assert r.returncode in (0, 1), (out[-3000:], r.stderr[-3000:])
    rows = re.findall(r"^  (.+?)\s+([\d.]+) tok/s \[([\d.]+), ([\d.]+)\]$", out, re.M)
    assert len(rows) == 12, out  # every point of the space, measured by vLLM's client
    assert len({r[0] for r in rows}) == 12
    for _, v, lo, hi in rows:
        assert float(lo) <= float(v) <= float(hi)
    # the stand-in serves at most max-num-seqs at once: 4 in flight is the slowest point
    by = {r[0]: float(r[1]) for r in rows}
    assert by["max-num-seqs=4"] < by["vLLM's defaults"]
    chosen = re.search(r"^the run's profile \(4 trials\): (.+): [\d.]+ tok/s .+x the best$",
                       out, re.M)
    assert chosen and chosen[1] != "max-num-seqs=4", out
    assert out.splitlines()[-1].startswith(("PASS", "FAIL")) and r.returncode == (
        out.splitlines()[-1].startswith("FAIL")), out


def test_workers_bench_reports_the_speed_up_and_checks_eight_workers(postgres_url: str) -> None:
    out = run_bench("bench.workers", "--rounds", "1", "--budget", "4", "--trial-s", "0.1",
                    "--workers", "1,2", "--storage", postgres_url)
    assert re.search(r"^2\s+[\d.]+ \[[\d.]+, [\d.]+\]\s+x[\d.]+", out, re.M), out
    assert "8 workers, 32 trials" in out and "budget exact, no duplicate, no lost result" in out
