"""Fidelity: autotune's client vs vLLM's own client on the same real CPU server and load.

Runs both clients against one real vLLM CPU server with the built-in tiny model, and prints
median TTFT, median TPOT and output throughput of each, and the ratios (autotune / vLLM). The
target is agreement within 5%.

--mode side-by-side (default) runs both at the same time, each in its own process with half
the concurrency, so they measure the same server state: on a 2-core machine the server's own
round-to-round swings (+-40% seen) are far larger than 5%, and only a side-by-side run cancels
them. --mode alternate runs them one after the other (ABBA) for comparison.

    .venv/bin/python -m bench.fidelity [--rounds 8] [--requests 128] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any

from bench._common import FAKE, REAL, autotune_client, median, server, vllm_client

METRICS = ("median_ttft_ms", "median_tpot_ms", "output_throughput")


def _client_process(who: str, base_url: str, model: str, ns: argparse.Namespace,
                    start: Any, out: Any) -> None:
    """One client in a process of its own (no GIL shared with the other), started by a barrier
    so both begin together."""
    c = ns.concurrency // 2
    if who == "vllm":
        import vllm.benchmarks.serve  # noqa: F401  (import before the barrier)
    start.wait()
    if who == "vllm":
        out.put((who, vllm_client(base_url, model, ns.requests, c, ns.input_len, ns.output_len)))
    else:
        out.put((who, autotune_client(base_url, ns.requests, c, ns.input_len, ns.output_len)))


def side_by_side(base_url: str, model: str, ns: argparse.Namespace, r: int
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(who, base_url, model, ns, start, out))
             for who in ("vllm", "autotune")]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
    return got["vllm"], got["autotune"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--mode", choices=["side-by-side", "alternate"], default="side-by-side")
    ap.add_argument("--server", choices=["real", "stand-in"], default="real",
                    help="stand-in: the fake server with fixed timing (5 ms/token, 4 at a "
                         "time), which checks the two clients' definitions without the real "
                         "server's noise")
    ap.add_argument("--bind", default="nobind",
                    help="VLLM_CPU_OMP_THREADS_BIND of the server (see the closing note)")
    ns = ap.parse_args()
    log = Path(tempfile.mkdtemp(prefix="fidelity-")) / "server.log"
    args = {"load-format": "dummy", "enforce-eager": True, "max-model-len": 1024,
            "gpu-memory-utilization": 0.3, "max-num-seqs": 16}
    ours: dict[str, list[float]] = {m: [] for m in METRICS}
    theirs: dict[str, list[float]] = {m: [] for m in METRICS}
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": ns.bind}
    launcher = REAL
    if ns.server == "stand-in":
        launcher, env = FAKE, {}
        args = {"max-num-seqs": 4, "fake-tpot-ms": 5, "max-model-len": 4096}
    with server(launcher, args, env, log) as (s, model):
        # one unrecorded pass of each, so neither pays for the server's first requests
        vllm_client(s.base_url, model, 16, ns.concurrency, ns.input_len, ns.output_len)
        autotune_client(s.base_url, 16, ns.concurrency, ns.input_len, ns.output_len)
        for r in range(ns.rounds):
            if ns.mode == "side-by-side":
                v, a = side_by_side(s.base_url, model, ns, r)
            else:
                # ABBA order: slow drift of the server hits both clients alike
                order = ("vllm", "autotune") if r % 2 == 0 else ("autotune", "vllm")
                got: dict[str, dict[str, Any]] = {}
                for who in order:
                    if who == "vllm":
                        got[who] = vllm_client(s.base_url, model, ns.requests, ns.concurrency,
                                               ns.input_len, ns.output_len)
                    else:
                        got[who] = autotune_client(s.base_url, ns.requests, ns.concurrency,
                                                   ns.input_len, ns.output_len)
                v, a = got["vllm"], got["autotune"]
            for m in METRICS:
                theirs[m].append(float(v[m]))
                ours[m].append(float(a[m]))
            print(f"round {r + 1}: " + ", ".join(
                f"{m} vllm {v[m]:.2f} autotune {a[m]:.2f}" for m in METRICS), flush=True)
    print()
    print(f"{ns.server} server, built-in tiny model, {ns.mode}, {ns.requests} requests x "
          f"{ns.rounds} rounds, concurrency {ns.concurrency} in all, {ns.input_len} in / "
          f"{ns.output_len} out, VLLM_CPU_OMP_THREADS_BIND={ns.bind}")
    print(f"{'metric':<20}{'vllm bench':>12}{'autotune':>12}{'ratio':>8}")
    worst = 0.0
    for m in METRICS:
        v, a = median(theirs[m]), median(ours[m])
        worst = max(worst, abs(a / v - 1))
        print(f"{m:<20}{v:>12.2f}{a:>12.2f}{a / v:>8.3f}")
    print(f"largest deviation: {worst:.1%} ({'within' if worst <= 0.05 else 'OUTSIDE'} 5%)")


if __name__ == "__main__":
    main()
