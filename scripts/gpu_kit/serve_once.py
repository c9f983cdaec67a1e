"""One server through autotune's own server code: start-up, KV cache, GPU memory, a short load.

Run by `on_gpu.py` with the kit's packages on PYTHONPATH; writes `serve.json` and `server.log`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from autotune.engine.probes import DeviceInfo, Probe  # noqa: E402  (after the path)

# eager: no torch.compile or CUDA graph capture, so the start fits the kit's few minutes
SERVE_ARGS: dict[str, Any] = {"max-model-len": 2048, "gpu-memory-utilization": 0.5,
                              "enforce-eager": True}
LOAD = {"num_requests": 64, "levels": [{"concurrency": 16}], "input_tokens": 128,
        "output_tokens": 64, "warmup_requests": 4}
KEY = "gpu-kit"


def serve_once(out: Path, launcher: tuple[str, ...], probe: Probe, model: str,
               startup_timeout_s: float = 300.0) -> dict[str, Any]:
    from autotune.engine.argv import ServerSpec, redact
    from autotune.engine.logs import kv_cache_bytes, kv_cache_tokens
    from autotune.engine.memory import MemorySampler
    from autotune.engine.server import VllmServer, free_port
    from autotune.measure.client import run_workload
    from autotune.measure.metrics import summarize
    from autotune.measure.plan import Plan
    from autotune.measure.server_api import Target
    from autotune.measure.workload import Workload
    from autotune.model.resolve import resolve_model
    from autotune.model.tokens import ModelTokenizer

    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_model(model)
    spec = ServerSpec(model=resolved.path, args={**resolved.args, **SERVE_ARGS},
                      port=free_port(), api_key=KEY, launcher=launcher)
    gpus = [d.index for d in probe.gpus()][:1]
    result: dict[str, Any] = {"model": model, "gpus": [d.name for d in probe.gpus()][:1]}
    t0 = time.monotonic()
    with MemorySampler(probe, gpu_indices=gpus, interval_s=0.5) as mem, \
            VllmServer(spec, out / "server.log", startup_timeout_s=startup_timeout_s,
                       on_start=mem.watch) as server:
        result["argv"] = shlex.join(redact(server.argv))
        result["startup_s"] = round(server.startup_s or time.monotonic() - t0, 1)
        log = server.log_head()
        result["kv_cache_tokens"] = kv_cache_tokens(log)
        result["kv_cache_bytes"] = kv_cache_bytes(log)
        (run,) = run_workload(Target(server.base_url, KEY),
                              Plan(Workload.model_validate(LOAD), ModelTokenizer(resolved.path)),
                              watch_metrics_s=None)
        result["load"] = {k: round(v, 2) for k, v in summarize(run.samples).flat().items()}
    p = mem.peaks
    result["memory"] = {"gpu_process_bytes": p.gpu_process_bytes,
                        "gpu_device_used_bytes": p.gpu_device_used_bytes,
                        "host_rss_bytes": p.host_rss_bytes, "samples": p.samples}
    (out / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def fake_probe() -> Probe:
    """A scripted card for the kit's own tests (the stand-in server holds no GPU memory)."""
    from autotune.testing.fake_probe import FakeProbe

    return FakeProbe(devices=(DeviceInfo(0, "NVIDIA H100 80GB HBM3", 80 * 2**30),),
                     gpu_used=lambda idx: 3 * 2**30,
                     gpu_process=lambda pids, idx: 2 * 2**30 if pids else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--launcher", default=f"{sys.executable} -m vllm.entrypoints.openai.api_server")
    ap.add_argument("--fake-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--startup-timeout-s", type=float, default=300.0)
    ns = ap.parse_args(argv)
    from autotune.engine.probes import SystemProbe

    probe = fake_probe() if ns.fake_probe else SystemProbe()
    result = serve_once(ns.out, tuple(shlex.split(ns.launcher)), probe, ns.model,
                        ns.startup_timeout_s)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
