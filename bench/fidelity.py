"""Fidelity: autotune's client vs vLLM's own client on the same real CPU server and load.

Runs both clients against one real vLLM CPU server with the built-in tiny model, and prints
median TTFT, median TPOT and output throughput of each, and the ratios (autotune / vLLM). The
target is agreement within 5%.

The same load: by default autotune sends the very prompts and output lengths vLLM's client
sends (its random dataset, seed 0, exported as an autotune JSONL dataset), and the totals each
client sent are printed. Lengths vary by +-50% (--range-ratio): with fixed lengths, requests
that start together finish together, each client's requests move in lock-step waves, and side
by side one client's waves can keep arriving at a worse moment of the server's step cycle
than the other's for a whole round. Seen with --range-ratio 0: TTFT ratio 0.79 (0.65-0.96 per
round) while TPOT and throughput agreed within 3.5%.

--mode side-by-side (default) runs both at the same time, each in its own process with half
the concurrency, so they measure the same server state: on a 2-core machine the server's
round-to-round swings are larger than 5%, and only a side-by-side run cancels them.
--mode alternate runs them one after the other (ABBA).

The load generators must not compete with the server for CPU: by default the server is pinned
to all CPUs but the last and both clients to the last. Sharing the 2 cores of the CI machine
with a saturated server, a client's timestamps are delayed whenever the scheduler preempts it,
and vLLM's client does more between taking its start time and sending (aiohttp's trust_env
lookups, two worker-thread hops per request; see --vllm-no-trust-env): unpinned, autotune's
TTFT read 0.73-0.94 of vLLM's in every round; pinned, 0.95-1.05.

The server runs with OMP_NUM_THREADS=1 by default: with VLLM_CPU_OMP_THREADS_BIND=nobind on 2
cores vLLM keeps two OpenMP threads that spin on both cores and starve the API server and the
clients (150-700 ms stalls, +-40% per round).

    .venv/bin/python -m bench.fidelity [--rounds 12] [--requests 96] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import FAKE, REAL, autotune_client, median, server, vllm_client, vllm_prompts

METRICS = ("median_ttft_ms", "median_tpot_ms", "output_throughput")
SENT = ("completed", "total_input_tokens", "total_output_tokens")  # the load, per round


@dataclass
class Clients:
    """Both clients, set up for one server and one load."""

    base_url: str
    model: str
    ns: argparse.Namespace
    dataset: Path | None

    def _length(self, mean: int) -> Any:
        r = self.ns.range_ratio
        if r == 0:
            return mean
        return {"dist": "uniform", "low": max(1, math.floor(mean * (1 - r))),
                "high": math.ceil(mean * (1 + r))}

    def vllm(self, n: int, concurrency: int, before_load: Any = None) -> dict[str, Any]:
        return vllm_client(self.base_url, self.model, n, concurrency, self.ns.input_len,
                           self.ns.output_len, before_load=before_load,
                           range_ratio=self.ns.range_ratio,
                           trust_env=not self.ns.vllm_no_trust_env)

    def autotune(self, n: int, concurrency: int) -> dict[str, Any]:
        return autotune_client(self.base_url, n, concurrency, self._length(self.ns.input_len),
                               self._length(self.ns.output_len), dataset=self.dataset)


def _client_process(who: str, clients: Clients, start: Any, out: Any) -> None:
    """One client in a process of its own (no GIL shared with the other). Both pass the
    barrier together: vLLM's client once its tokenizer and prompts are ready."""
    c = clients.ns.concurrency // 2
    if clients.ns.client_cpus:
        os.sched_setaffinity(0, _cpus(clients.ns.client_cpus))
    if who == "vllm":
        out.put((who, clients.vllm(clients.ns.requests, c, before_load=start.wait)))
    else:
        start.wait()
        out.put((who, clients.autotune(clients.ns.requests, c)))


def _cpus(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def side_by_side(clients: Clients) -> tuple[dict[str, Any], dict[str, Any]]:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(who, clients, start, out))
             for who in ("vllm", "autotune")]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
    return got["vllm"], got["autotune"]


def alternate(clients: Clients, r: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # ABBA order: slow drift of the server hits both clients alike
    n, c = clients.ns.requests, clients.ns.concurrency
    if r % 2 == 0:
        v = clients.vllm(n, c)
        a = clients.autotune(n, c)
    else:
        a = clients.autotune(n, c)
        v = clients.vllm(n, c)
    return v, a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--range-ratio", type=float, default=0.5,
                    help="lengths vary uniformly by this fraction around the means")
    ap.add_argument("--mode", choices=["side-by-side", "alternate"], default="side-by-side")
    ap.add_argument("--prompts", choices=["vllm", "own"], default="vllm",
                    help="vllm: autotune sends vLLM's client's prompts and output lengths; "
                         "own: autotune's synthetic workload with the same length ranges")
    ap.add_argument("--server", choices=["real", "stand-in"], default="real",
                    help="stand-in: the fake server with fixed timing (5 ms/token, no "
                         "queueing), which checks the two clients' definitions without the "
                         "real server's noise")
    ap.add_argument("--bind", default="nobind",
                    help="VLLM_CPU_OMP_THREADS_BIND of the server")
    ap.add_argument("--omp-threads", default="1",
                    help="OMP_NUM_THREADS of the server ('' leaves it unset)")
    ap.add_argument("--vllm-no-trust-env", action="store_true",
                    help="run vLLM's client with aiohttp's trust_env off: its per-request "
                         ".netrc and proxy lookups (each in a worker thread) add about 1 ms "
                         "to each of its TTFTs on the stand-in here")
    usable = sorted(os.sched_getaffinity(0))  # the CPUs this process may use (cgroups too)
    two = len(usable) >= 2
    ap.add_argument("--server-cpus", default=",".join(map(str, usable[:-1])) if two else "",
                    help="pin the server (all its processes) to these CPUs ('' = no pinning; "
                         "default: all usable CPUs but the last)")
    ap.add_argument("--client-cpus", default=str(usable[-1]) if two else "",
                    help="pin both clients to these CPUs (default: the last usable one)")
    ns = ap.parse_args()
    if ns.client_cpus:
        os.sched_setaffinity(0, _cpus(ns.client_cpus))
    log = Path(tempfile.mkdtemp(prefix="fidelity-")) / "server.log"
    args: dict[str, Any] = {"load-format": "dummy", "enforce-eager": True,
                            "max-model-len": 1024, "gpu-memory-utilization": 0.3,
                            "max-num-seqs": 16}
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": ns.bind}
    if ns.omp_threads:
        env["OMP_NUM_THREADS"] = ns.omp_threads
    launcher: tuple[str, ...] = REAL
    if ns.server_cpus:
        launcher = ("taskset", "-c", ns.server_cpus, *REAL)
    if ns.server == "stand-in":
        launcher, env = FAKE, {}
        args = {"max-num-seqs": ns.concurrency, "fake-tpot-ms": 5, "max-model-len": 4096}
        if ns.server_cpus:
            launcher = ("taskset", "-c", ns.server_cpus, *FAKE)
    ours: dict[str, list[float]] = {m: [] for m in METRICS + SENT}
    theirs: dict[str, list[float]] = {m: [] for m in METRICS + SENT}
    with server(launcher, args, env, log) as (s, model):
        dataset = None
        if ns.prompts == "vllm":
            dataset = vllm_prompts(model, ns.requests, ns.input_len, ns.output_len,
                                   log.parent / "prompts.jsonl", ns.range_ratio)
        clients = Clients(s.base_url, model, ns, dataset)
        # one unrecorded pass of each, so neither pays for the server's first requests
        clients.vllm(16, ns.concurrency)
        clients.autotune(16, ns.concurrency)
        for r in range(ns.rounds):
            v, a = side_by_side(clients) if ns.mode == "side-by-side" else alternate(clients, r)
            for m in METRICS + SENT:
                theirs[m].append(float(v[m]))
                ours[m].append(float(a[m]))
            print(f"round {r + 1}: " + ", ".join(
                f"{m} vllm {v[m]:.2f} autotune {a[m]:.2f}" for m in METRICS), flush=True)
    print()
    server_env = " ".join(f"{k}={v}" for k, v in env.items()) or "-"
    print(f"{ns.server} server, built-in tiny model, {ns.mode}, {ns.requests} requests x "
          f"{ns.rounds} rounds, concurrency {ns.concurrency} in all, {ns.input_len} in / "
          f"{ns.output_len} out +-{ns.range_ratio:.0%}, prompts: {ns.prompts}, server env "
          f"{server_env}, server CPUs {ns.server_cpus or 'any'}, client CPUs "
          f"{ns.client_cpus or 'any'}, vLLM client trust_env {not ns.vllm_no_trust_env}")
    print(f"{'metric':<20}{'vllm bench':>12}{'autotune':>12}{'ratio':>8}"
          f"{'per-round ratios: median':>28}{'range':>16}")
    worst = 0.0
    for m in METRICS:
        mv, ma = median(theirs[m]), median(ours[m])
        per_round = sorted(x / y for x, y in zip(ours[m], theirs[m], strict=True))
        worst = max(worst, abs(ma / mv - 1))
        print(f"{m:<20}{mv:>12.2f}{ma:>12.2f}{ma / mv:>8.3f}{median(per_round):>28.3f}"
              f"{per_round[0]:>9.2f}-{per_round[-1]:.2f}")
    print("load per round, vllm bench / autotune (the same prompts give the same totals): "
          + ", ".join(f"{m} {median(theirs[m]):.0f} / {median(ours[m]):.0f}" for m in SENT))
    print(f"largest deviation (ratio of medians): {worst:.1%} "
          f"({'within' if worst <= 0.05 else 'OUTSIDE'} 5%)")


if __name__ == "__main__":
    main()
