"""Shared by the benchmarks: start a server, run vLLM's own client, run autotune's client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from autotune.engine.argv import ServerSpec
from autotune.engine.server import VllmServer, free_port
from autotune.measure.client import run_workload
from autotune.measure.metrics import summarize
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target
from autotune.measure.workload import Workload
from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
from autotune.model.tokens import ModelTokenizer

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


def _vllm_args(base_url: str, model: str, n: int, concurrency: int | None, in_len: int,
               out_len: int, rate: float | None, range_ratio: float) -> argparse.Namespace:
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()  # type: ignore[no-untyped-call]
    serve.add_cli_args(parser)
    argv = ["--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", model, "--tokenizer", model, "--dataset-name", "random",
            "--random-input-len", str(in_len), "--random-output-len", str(out_len),
            "--random-range-ratio", str(range_ratio), "--num-prompts", str(n), "--ignore-eos",
            "--request-rate", str(rate) if rate else "inf", "--disable-tqdm",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--seed", "0"]
    if concurrency:
        argv += ["--max-concurrency", str(concurrency)]
    ns: argparse.Namespace = parser.parse_args(argv)
    return ns


def vllm_client(base_url: str, model: str, n: int, concurrency: int | None, in_len: int,
                out_len: int, rate: float | None = None, quiet: bool = True,
                before_load: Callable[[], object] | None = None,
                range_ratio: float = 0.0, trust_env: bool = True) -> dict[str, Any]:
    """vLLM's own benchmark client (`vllm bench serve`, random dataset, seed 0), in-process.

    `before_load` runs once its tokenizer is loaded and its prompts sampled, just before it
    sends its first request (so two clients started together really start loading together).
    `trust_env=False` turns off its aiohttp session's trust_env (vLLM sets it), under which
    aiohttp looks up .netrc and the proxy variables for every request, each in a worker
    thread, after the client has taken its start time: about 1 ms per request on the
    stand-in here, inside its TTFT.
    """
    from vllm.benchmarks import serve

    args = _vllm_args(base_url, model, n, concurrency, in_len, out_len, rate, range_ratio)
    real = serve.benchmark
    if before_load is not None:
        async def gated(*a: Any, **kw: Any) -> Any:
            await asyncio.to_thread(before_load)
            return await real(*a, **kw)

        serve.benchmark = gated
    os.environ["OPENAI_API_KEY"] = KEY
    out = io.StringIO()
    session_init = aiohttp.ClientSession.__init__
    if not trust_env:
        def no_trust_env(self: aiohttp.ClientSession, *a: Any, **kw: Any) -> None:
            kw["trust_env"] = False
            session_init(self, *a, **kw)

        aiohttp.ClientSession.__init__ = no_trust_env  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            result: dict[str, Any] = serve.main(args)
    finally:
        serve.benchmark = real
        aiohttp.ClientSession.__init__ = session_init  # type: ignore[method-assign]
    return result


def vllm_prompts(model: str, n: int, in_len: int, out_len: int, path: Path,
                 range_ratio: float = 0.0) -> Path:
    """The prompts vLLM's client sends for the same arguments, as an autotune JSONL dataset,
    so both clients can put exactly the same load on the server."""
    from vllm.benchmarks.datasets import get_samples
    from vllm.tokenizers import get_tokenizer

    args = _vllm_args("http://unused", model, n, None, in_len, out_len, None, range_ratio)
    samples = get_samples(args, get_tokenizer(model))
    with path.open("w") as f:
        for r in samples:
            f.write(json.dumps({"prompt": r.prompt, "output_tokens": r.expected_output_len})
                    + "\n")
    return path


def autotune_client(base_url: str, n: int, concurrency: int | None, in_len: Any, out_len: Any,
                    rate: float | None = None, warmup: int = 1,
                    dataset: Path | None = None) -> dict[str, float]:
    """autotune's client. Lengths are workload lengths (a number or a distribution); with
    `dataset` it sends that file's prompts (in a seeded order) instead."""
    level = {"concurrency": concurrency} if rate is None else {"rate": rate}
    spec: dict[str, Any] = {"num_requests": n, "levels": [level], "input_tokens": in_len,
                            "output_tokens": out_len, "warmup_requests": warmup}
    if dataset is not None:
        spec["dataset"] = {"path": str(dataset)}
    w = Workload.model_validate(spec)
    tok = ModelTokenizer(str(ensure_builtin_model(TINY_QWEN3)))
    (run,) = run_workload(Target(base_url, KEY), Plan(w, tok), watch_metrics_s=None)
    return summarize(run.samples).flat()


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
