"""Capacity: can autotune's client drive at least as many requests per second as vLLM's?

Both clients run against the stand-in server streaming with no delay (so the server is not
the limit), at the same concurrency, alternately, and the achieved request rates are printed
with their ratio (autotune / vLLM). The target is a ratio of at least 1.

    .venv/bin/python -m bench.capacity [--rounds 3] [--requests 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench._common import FAKE, autotune_client, median, server, vllm_client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=16)
    ns = ap.parse_args()
    log = Path(tempfile.mkdtemp(prefix="capacity-")) / "server.log"
    args = {"max-num-seqs": 100000, "fake-tpot-ms": 0, "max-model-len": 100000}
    ours: list[float] = []
    theirs: list[float] = []
    with server(FAKE, args, {}, log) as (s, model):
        vllm_client(s.base_url, model, 200, ns.concurrency, 32, ns.output_len)
        autotune_client(s.base_url, 200, ns.concurrency, 32, ns.output_len)
        for r in range(ns.rounds):
            v = vllm_client(s.base_url, model, ns.requests, ns.concurrency, 32, ns.output_len)
            a = autotune_client(s.base_url, ns.requests, ns.concurrency, 32, ns.output_len)
            theirs.append(float(v["request_throughput"]))
            ours.append(float(a["request_throughput"]))
            assert a["failed"] == 0 and v["completed"] == ns.requests
            print(f"round {r + 1}: vllm {theirs[-1]:.0f} req/s, autotune {ours[-1]:.0f} req/s",
                  flush=True)
    mv, ma = median(theirs), median(ours)
    print()
    print(f"stand-in server streaming instantly, {ns.requests} requests x {ns.rounds} rounds, "
          f"concurrency {ns.concurrency}, {ns.output_len} tokens per response")
    print(f"vllm bench client:   {mv:8.0f} req/s")
    print(f"autotune client:     {ma:8.0f} req/s")
    print(f"ratio autotune/vllm: {ma / mv:8.2f} "
          f"({'>= 1: OK' if ma >= mv else '< 1: client-bound'})")


if __name__ == "__main__":
    main()
