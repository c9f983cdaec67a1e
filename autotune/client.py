"""Streaming OpenAI-API load generator -> per-request samples. The only HTTP client code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from autotune.metrics import RequestSample
from autotune.workload import PlannedRequest

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str | None = None
    model: str | None = None  # asked of /v1/models when None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def served_model(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=timeout_s)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])


def scrape_metrics(base_url: str, api_key: str | None = None, timeout_s: float = 5.0) -> str:
    """The server's Prometheus text (`/metrics`), or '' when it cannot be read."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{base_url}/metrics", headers=headers, timeout=timeout_s)
        return r.text if r.status_code == 200 else ""
    except httpx.HTTPError:
        return ""


async def _one(http: httpx.AsyncClient, url: str, body: dict[str, Any],
               chat: bool) -> RequestSample:
    start = time.perf_counter()
    ttft: float | None = None
    last = start
    itl: list[float] = []
    usage: dict[str, Any] | None = None
    try:
        async with http.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return RequestSample(start, time.perf_counter(), ok=False,
                                     error=f"http_{r.status_code}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    return RequestSample(start, time.perf_counter(), ok=False,
                                         error="stream_error")
                now = time.perf_counter()
                # Like vLLM's client: every chunk with choices is a step of the stream.
                if chunk.get("choices"):
                    if ttft is None:
                        ttft = now - start
                    else:
                        itl.append(now - last)
                    last = now
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except httpx.TimeoutException:
        return RequestSample(start, time.perf_counter(), ok=False, error="timeout")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return RequestSample(start, time.perf_counter(), ok=False, error="disconnect")
    except httpx.ConnectError:
        return RequestSample(start, time.perf_counter(), ok=False, error="connect")
    except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
        return RequestSample(start, time.perf_counter(), ok=False,
                             error=f"protocol:{type(exc).__name__}")
    end = time.perf_counter()
    if usage is None or ttft is None:
        return RequestSample(start, end, ok=False, error="no_usage" if ttft else "empty_stream")
    return RequestSample(
        start, end, ok=True, ttft=ttft, itl=tuple(itl),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


async def _drive(target: Target, endpoint: str, plan: Sequence[PlannedRequest],
                 concurrency: int, timeout_s: float) -> list[RequestSample]:
    url = target.base_url + ENDPOINT_PATHS[endpoint]
    chat = endpoint == "chat"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    model = target.model
    async with httpx.AsyncClient(limits=limits, timeout=timeout,
                                 headers=target.headers()) as http:
        if model is None:
            r = await http.get(target.base_url + "/v1/models")
            r.raise_for_status()
            model = str(r.json()["data"][0]["id"])
        warm = [p for p in plan if p.warmup]
        measured = [p for p in plan if not p.warmup]

        async def run(batch: Sequence[PlannedRequest]) -> list[RequestSample]:
            queue: asyncio.Queue[tuple[int, PlannedRequest]] = asyncio.Queue()
            for item in enumerate(batch):
                queue.put_nowait(item)
            results: list[RequestSample | None] = [None] * len(batch)

            async def worker() -> None:
                while True:
                    try:
                        i, req = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    results[i] = await _one(http, url, {"model": model, **req.body}, chat)

            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(batch)))))
            return [r for r in results if r is not None]

        await run(warm)
        return await run(measured)


def run_load(target: Target, endpoint: str, plan: Sequence[PlannedRequest], concurrency: int,
             timeout_s: float) -> list[RequestSample]:
    """Send the planned requests, `concurrency` at a time; warm-up ones first and unrecorded.

    Every measured request comes back as a sample, success or classified error.
    """
    return asyncio.run(_drive(target, endpoint, plan, concurrency, timeout_s))
