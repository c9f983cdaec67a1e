"""What measuring costs what it measures: the memory sampler and the /metrics watcher, on and
off, interleaved on one real CPU server.

One server (the built-in tiny model, the shipped CPU space's fixed settings and vLLM's defaults
otherwise, `--enforce-eager` to start quickly), the CPU space's workload (48 requests, 16 in
flight, 128 in / 64 out). Each block measures one round in each condition, in a shuffled order:

- `bare`: nothing watches the server (the reference);
- `pss-every-1s`: PSS and USS of the server's tree read every second (autotune's sampler
  before issue 33);
- `sampler`: autotune's memory sampler as a trial runs it (RSS every second, PSS where it can
  have moved, engine/memory.py);
- `metrics`: the server's /metrics read every 0.5 s, as a trial's rounds do;
- `trial`: the sampler and the watcher together (what a trial measures under).

Each condition's round is divided by the same block's `bare` round: the geometric mean of those
ratios over the blocks with its 95% Student t interval (scipy.stats), for output throughput and
p95 TTFT. Also the CPU time one reading takes on the live tree (its thread's user and system
time; PSS walks every process's page tables).

    .venv/bin/python -m bench.sampler_cost [--blocks 12]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scipy import stats

from autotune.engine.memory import MemorySampler
from autotune.engine.probes import SystemProbe, process_tree_memory, process_tree_rss
from autotune.measure.client import run_workload
from autotune.measure.metrics import summarize
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target
from autotune.measure.workload import Workload
from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
from autotune.model.tokens import ModelTokenizer
from bench._common import FAKE, KEY, REAL, server

CONDITIONS = ("bare", "pss-every-1s", "sampler", "metrics", "trial")
FIGURES = ("output_throughput", "p95_ttft_ms")


@contextmanager
def every_second(pid: int) -> Iterator[None]:
    """PSS and USS of the tree every second: the sampler as it was."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0):
            process_tree_memory(pid)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@contextmanager
def sampling(pid: int) -> Iterator[None]:
    with MemorySampler(SystemProbe(), pid):
        yield


@contextmanager
def nothing() -> Iterator[None]:
    yield


def cpu_per_call(read: Callable[[int], Any], pid: int, n: int = 10) -> float:
    """Seconds of this thread's CPU time (user and system) one reading takes."""
    t0 = time.thread_time()
    for _ in range(n):
        read(pid)
    return (time.thread_time() - t0) / n


def interval(ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    m = sum(logs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (n - 1))
    h = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return math.exp(m), math.exp(m - h), math.exp(m + h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=12, help="rounds of each condition")
    ap.add_argument("--seed", type=int, default=0, help="the conditions' order in each block")
    ap.add_argument("--server", choices=["real", "stand-in"], default="real",
                    help="stand-in: the fake server (checks the bench, measures nothing)")
    ns = ap.parse_args()
    model = str(ensure_builtin_model(TINY_QWEN3))
    w = Workload.model_validate({"num_requests": 48, "levels": [{"concurrency": 16}],
                                 "input_tokens": 128, "output_tokens": 64,
                                 "warmup_requests": 0, "ignore_eos": True, "seed": 0})
    tok = ModelTokenizer(model)
    plan = Plan(w, tok)
    args: dict[str, Any] = {"max-model-len": 1024, "gpu-memory-utilization": 0.3,
                            "enforce-eager": True}
    launcher = REAL
    if ns.server == "stand-in":
        launcher, args = FAKE, {"max-num-seqs": 16, "fake-tpot-ms": 2, "max-model-len": 4096}
    log = Path(tempfile.mkdtemp(prefix="sampler-cost-")) / "server.log"
    rng = random.Random(ns.seed)
    got: dict[str, list[dict[str, float]]] = {c: [] for c in CONDITIONS}
    with server(launcher, args, {}, log) as (s, _):
        assert s.pid is not None
        pid = s.pid
        target = Target(s.base_url, KEY)
        run_workload(target, Plan(w.model_copy(update={"num_requests": 32}), tok),
                     watch_metrics_s=None)  # warm-up
        tree = process_tree_rss(pid)
        cost = {"PSS and USS (memory_full_info)": cpu_per_call(process_tree_memory, pid),
                "RSS (memory_info)": cpu_per_call(process_tree_rss, pid)}
        for b in range(ns.blocks):
            order = list(CONDITIONS)
            rng.shuffle(order)
            for c in order:
                watch = 0.5 if c in ("metrics", "trial") else None
                ctx = (every_second(pid) if c == "pss-every-1s" else
                       sampling(pid) if c in ("sampler", "trial") else nothing())
                with ctx:
                    (run,) = run_workload(target, plan, watch_metrics_s=watch)
                got[c].append(summarize(run.samples).flat())
            print(f"block {b + 1}: " + ", ".join(
                f"{c} {got[c][-1]['output_throughput']:.0f}" for c in CONDITIONS), flush=True)
    settings = ", ".join(f"{k} {v}" for k, v in args.items())
    print(f"\n{ns.server} CPU server, built-in tiny model, {settings}"
          f"; {len(tree.pids)} processes in its tree; 48 requests x 16 in flight, 128 in / 64 "
          f"out a round; {ns.blocks} blocks of one round per condition, shuffled; ratios to "
          "the same block's bare round, geometric mean [95% t interval over blocks]")
    print("\nCPU time of one reading of the server's tree (user + system, this thread):")
    for k, v in cost.items():
        print(f"  {k:32} {v * 1000:8.1f} ms")
    print(f"\n{'condition':14}" + "".join(f"{f:>30}" for f in FIGURES))
    for c in CONDITIONS[1:]:
        cells = []
        for f in FIGURES:
            g, lo, hi = interval([x[f] / y[f] for x, y in zip(got[c], got["bare"], strict=True)])
            cells.append(f"x{g:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"{c:14}" + "".join(f"{cell:>30}" for cell in cells))


if __name__ == "__main__":
    main()
