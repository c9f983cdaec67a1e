"""Shared by the benchmarks: start a server, run vLLM's own client, run autotune's client."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from autotune.builtin_model import TINY_QWEN3, ensure_builtin_model
from autotune.client import Target, run_workload
from autotune.engine import ServerSpec, VllmServer
from autotune.metrics import summarize
from autotune.objective import free_port
from autotune.workload import Workload, plan

REAL = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
FAKE = (sys.executable, "-m", "autotune.testing.fake_vllm")
KEY = "bench-key"


@contextlib.contextmanager
def server(launcher: tuple[str, ...], args: dict[str, Any], env: dict[str, str],
           log: Path) -> Iterator[tuple[VllmServer, str]]:
    model = str(ensure_builtin_model(TINY_QWEN3))
    spec = ServerSpec(model=model, args=args, env=env, port=free_port(), api_key=KEY,
                      launcher=launcher)
    with VllmServer(spec, log, startup_timeout_s=600) as s:
        yield s, model


def vllm_client(base_url: str, model: str, n: int, concurrency: int | None, in_len: int,
                out_len: int, rate: float | None = None, quiet: bool = True) -> dict[str, Any]:
    """vLLM's own benchmark client (`vllm bench serve`), driven in-process."""
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    argv = ["--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", model, "--tokenizer", model, "--dataset-name", "random",
            "--random-input-len", str(in_len), "--random-output-len", str(out_len),
            "--random-range-ratio", "0", "--num-prompts", str(n), "--ignore-eos",
            "--request-rate", str(rate) if rate else "inf", "--disable-tqdm",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--seed", "0"]
    if concurrency:
        argv += ["--max-concurrency", str(concurrency)]
    args = parser.parse_args(argv)
    os.environ["OPENAI_API_KEY"] = KEY
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        result: dict[str, Any] = serve.main(args)
    return result


def autotune_client(base_url: str, n: int, concurrency: int | None, in_len: int, out_len: int,
                    rate: float | None = None, warmup: int = 1) -> dict[str, float]:
    level = {"concurrency": concurrency} if rate is None else {"rate": rate}
    w = Workload.model_validate({"num_requests": n, "levels": [level], "input_tokens": in_len,
                                 "output_tokens": out_len, "warmup_requests": warmup})
    (run,) = run_workload(Target(base_url, KEY), w, plan(w), watch_metrics_s=None)
    return summarize(run.samples).flat()


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
