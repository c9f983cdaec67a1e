"""Record the noise of one setting on the real CPU engine, for bench.verdicts to replay.

Starts a fresh real vLLM server (the built-in tiny model, vLLM's defaults plus the shipped CPU
space's fixed settings) again and again, and in each start runs the shipped CPU workload's
warm-up and then many consecutive rounds of its requests, keeping every request's timings
and token counts. Start after start is the noise a verdict must cover: the same settings
differ between server starts (seen here: up to 22%) by more than within one start.

    .venv/bin/python -m bench.record_noise --starts 20 --rounds 10 \
        --out bench/data/noise-cpu-avx512.json.gz

The file is the input of `python -m bench.verdicts`; it is committed, so the verdict
benchmark replays real measurements in seconds. It is rewritten after every start, so an
interrupted recording keeps what it has.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from autotune.engine.argv import vllm_version
from autotune.engine.probes import cpu_flags, cpu_name
from autotune.measure.client import LevelRun, Next, run_workload
from autotune.measure.plan import Plan
from autotune.measure.records import atomic_write
from autotune.measure.server_api import Target
from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
from autotune.model.tokens import ModelTokenizer
from autotune.space.search import baseline_params, load_space
from bench._common import KEY, REAL, server

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "cpu.yaml"


def bound_cores(pid: int) -> set[int]:
    """The cores the server's threads are bound to one by one (its OpenMP threads): threads
    whose affinity is narrower than the machine's."""
    every = os.sched_getaffinity(0)
    out: set[int] = set()
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for t in p.threads():
                with contextlib.suppress(OSError):
                    mask = os.sched_getaffinity(t.id)
                    if mask < every:
                        out |= mask
    return out


@contextlib.contextmanager
def client_on(cores: set[int] | None) -> Iterator[None]:
    """Run the load generator (this thread) on `cores` (None: wherever the OS puts it)."""
    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def record_start(plan: Plan, args: dict[str, Any], rounds: int, log: Path,
                 pin_client: bool = False) -> dict[str, Any]:
    def until(run: LevelRun) -> Next:
        return "continue" if run.plan.round + 1 < rounds else "next"

    t0 = time.monotonic()
    with server(REAL, args, {}, log) as (s, _model):
        startup = time.monotonic() - t0
        assert s.pid is not None
        bound = bound_cores(s.pid)
        spare = (os.sched_getaffinity(0) - bound) if pin_client else None
        with client_on(spare):
            runs = run_workload(Target(s.base_url, KEY), plan, watch_metrics_s=None,
                                after_round=until)
    out = []
    for run in runs:
        t_base = min(x.start for x in run.samples)
        out.append([[round(x.start - t_base, 6), round(x.end - t_base, 6),
                     None if x.ttft is None else round(x.ttft, 6), round(x.e2el, 6),
                     x.prompt_tokens, x.output_tokens, x.ok] for x in run.samples])
    return {"startup_s": round(startup, 2), "warmup_requests": plan.workload.warmup_requests,
            "engine_bound_cores": sorted(bound),
            "client_cores": sorted(spare) if spare else "any",
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S"), "rounds": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10, help="rounds of requests per start")
    ap.add_argument("--out", type=Path, default=Path("bench/data/noise-cpu.json.gz"))
    ap.add_argument("--append", action="store_true", help="add to the starts already in --out")
    ap.add_argument("--pin-client", choices=("never", "always", "alternate"), default="never",
                    help="run the load generator on the cores the engine's OpenMP threads are "
                         "not bound to (alternate: every other start, to compare)")
    ns = ap.parse_args()
    space = load_space(SPACE)
    plan = Plan(space.workload, ModelTokenizer(str(ensure_builtin_model(TINY_QWEN3))))
    # vLLM's defaults: the space's fixed settings and none of its tuned ones
    args = {"load-format": "dummy", **baseline_params(space).args}
    starts: list[dict[str, Any]] = []
    if ns.append and ns.out.exists():
        with gzip.open(ns.out, "rt") as f:
            starts = json.load(f)["starts"]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ns.starts):
            pin = ns.pin_client == "always" or (ns.pin_client == "alternate" and i % 2 == 1)
            rec = record_start(plan, args, ns.rounds, Path(tmp) / f"server-{i}.log", pin)
            starts.append(rec)
            save(ns.out, space, args, starts)
            tputs = []
            for r in rec["rounds"]:
                toks = sum(x[5] for x in r if x[6])
                span = max(x[1] for x in r) - min(x[0] for x in r)
                tputs.append(toks / span)
            print(f"start {len(starts) - 1} (client on {rec['client_cores']}, engine bound to "
                  f"{rec['engine_bound_cores']}): startup {rec['startup_s']} s, "
                  f"output tok/s per round "
                  f"{min(tputs):.0f}-{max(tputs):.0f}, mean {sum(tputs) / len(tputs):.0f}",
                  flush=True)


def save(out: Path, space: Any, args: dict[str, Any], starts: list[dict[str, Any]]) -> None:
    doc = {
        "what": "per-request samples of one setting, many fresh server starts",
        "fields": ["start_s", "end_s", "ttft_s", "e2el_s", "prompt_tokens", "output_tokens",
                   "ok"],
        "server_args": args,
        "workload": space.workload.model_dump(mode="json"),
        "machine": {"cpu": cpu_name(), "flags": sorted(cpu_flags()),
                    "python": platform.python_version(), "vllm": vllm_version()},
        "recorded": time.strftime("%Y-%m-%d"),
        "starts": starts,
    }
    atomic_write(out, gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0))


if __name__ == "__main__":
    main()
