"""Kill the tuner at random moments of a trial and count what it leaves behind.

Runs `autotune run --gpu cpu --model builtin:tiny-qwen3` on the shipped CPU space (compiled and
eager servers, as the search draws them), each in a fresh directory, and sends it SIGINT,
SIGTERM or SIGKILL after a random delay that falls in the server's start-up, its compilation,
its warm-up or the load. For each kill it prints the phase the trial was in (from its server
log), how long the tuner took to exit, the processes it started still alive 30 s later (any
process whose working directory is the run's: servers, engines, workers and their children)
with their memory, and how far the host's available memory stayed below what it was before
the run (other processes on a shared host move this figure; leftover processes do not).

    .venv/bin/python -m bench.kills --per-signal 10

Target: 0 processes and 0 bytes left in all kills.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def server_processes(work: Path) -> list[psutil.Process]:
    """Live processes started under `work` (the tuner's directory, which its servers and their
    children inherit): whatever else runs on the host is not counted, nor touched."""
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if (p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE
                    and Path(p.cwd()).is_relative_to(work)):
                out.append(p)
    return out


def phase(work: Path) -> str:
    """Where the newest trial was, from its server log."""
    logs = sorted(work.glob("autotune-runs/*/*/server.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "before any server"
    text = logs[-1].read_text(errors="replace")
    if "Application startup complete" in text or "Starting vLLM server" in text:
        return "serving (load)"
    if "Warming up model for the compilation" in text and "Warming up done" not in text:
        return "compile"
    return "start-up"


def rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


@dataclass
class Kill:
    signal: str
    delay_s: float
    phase: str
    exit_code: int
    exit_s: float
    left: int
    left_mib: float
    available_short_mib: float
    said: str = ""  # the tuner's last line on standard error


def one_kill(name: str, delay_s: float, launcher: str | None, trials: int) -> Kill:
    with tempfile.TemporaryDirectory(prefix="autotune-kill-") as tmp:
        work = Path(tmp)
        before = psutil.virtual_memory().available
        argv = [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
                "builtin:tiny-qwen3", "--trials", str(trials)]
        if launcher:
            argv += ["--launcher", launcher, "--no-verify-options"]
        # SIGINT as at a terminal, even when this bench runs in the background (where the
        # shell makes it ignored, and children inherit that)
        with (work / "stderr.txt").open("w") as err:
            proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                     signal.SIG_DFL))
            time.sleep(delay_s)
            where = phase(work)
            t0 = time.monotonic()
            if proc.poll() is None:
                os.kill(proc.pid, SIGNALS[name])
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            exit_s = time.monotonic() - t0
        lines = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()
        deadline = time.monotonic() + 30
        left = server_processes(work)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = server_processes(work)
        left_mib = rss_mib(left)
        for p in left:  # leave the next kill a clean machine
            with contextlib.suppress(psutil.Error):
                p.kill()
        time.sleep(2)
        short_mib = max(0.0, (before - psutil.virtual_memory().available) / 2**20)
    return Kill(name, delay_s, where, code, exit_s, len(left), left_mib, short_mib,
                lines[-1][:160] if lines else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-signal", type=int, default=10)
    ap.add_argument("--min-delay", type=float, default=5.0)
    ap.add_argument("--max-delay", type=float, default=110.0)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--launcher", help="start this instead of vLLM (the stand-in, for tests)")
    ns = ap.parse_args()
    rng = random.Random(ns.seed)
    plan = [name for name in SIGNALS for _ in range(ns.per_signal)]
    rng.shuffle(plan)
    print(f"{'#':>3}  {'signal':7}  {'delay s':>7}  {'phase':17}  {'exit':>4}  {'exit s':>6}  "
          f"{'left':>4}  {'left MiB':>8}  {'avail short MiB':>15}", flush=True)
    rows = []
    for i, name in enumerate(plan):
        r = one_kill(name, rng.uniform(ns.min_delay, ns.max_delay), ns.launcher, ns.trials)
        rows.append(r)
        print(f"{i:>3}  {name:7}  {r.delay_s:>7.1f}  {r.phase:17}  {r.exit_code:>4}  "
              f"{r.exit_s:>6.1f}  {r.left:>4}  {r.left_mib:>8.0f}  "
              f"{r.available_short_mib:>15.0f}", flush=True)
    print()
    for name in SIGNALS:
        mine = [r for r in rows if r.signal == name]
        if not mine:
            continue
        exits = sorted(r.exit_s for r in mine)
        print(f"{name}: {len(mine)} kills, processes left {sum(r.left for r in mine)}, "
              f"memory left {sum(r.left_mib for r in mine):.0f} MiB, exit in "
              f"{exits[len(exits) // 2]:.1f} s median, {exits[-1]:.1f} s max")
    print(f"phases hit: {', '.join(sorted({r.phase for r in rows}))}")
    # an exit other than the interrupt's own (130; 0: the run had ended; -9: SIGKILL): what
    # the tuner said last
    for i, r in enumerate(rows):
        if r.exit_code not in (130, 0, -9):
            print(f"kill {i} ({r.signal}) exit {r.exit_code}, the tuner's last line: {r.said!r}")
    total = sum(r.left for r in rows)
    print(f"total: {len(rows)} kills, {total} server processes left, "
          f"{sum(r.left_mib for r in rows):.0f} MiB of them")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
