"""The server's own endpoints beside the load: the model it serves, its Prometheus `/metrics`
(read once, or watched while a level runs), and greedy completions for the quality guard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import httpx


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str | None = None
    model: str | None = None  # asked of /v1/models when None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def served_model(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    r = httpx.get(f"{base_url}/v1/models", headers=Target(base_url, api_key).headers(),
                  timeout=timeout_s)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])


def scrape_metrics(base_url: str, api_key: str | None = None, timeout_s: float = 5.0) -> str:
    """The server's Prometheus text (`/metrics`), or '' when it cannot be read."""
    try:
        r = httpx.get(f"{base_url}/metrics", headers=Target(base_url, api_key).headers(),
                      timeout=timeout_s)
        return r.text if r.status_code == 200 else ""
    except httpx.HTTPError:
        return ""


def greedy_outputs(base_url: str, api_key: str | None, prompts: Sequence[str],
                   max_tokens: int, timeout_s: float = 120.0) -> list[list[int]]:
    """Each prompt's greedy completion as the token ids the server generated (not text,
    which hides special tokens), one request at a time (no batching effects)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
        for prompt in prompts:
            r = http.post("/v1/completions", json={
                "model": model, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": 0.0, "ignore_eos": True, "seed": 0, "return_token_ids": True})
            r.raise_for_status()
            out.append([int(t) for t in r.json()["choices"][0]["token_ids"]])
    return out


def prometheus_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of each named metric over its label sets; absent names are left out."""
    wanted = set(names)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0:
            continue
        name = line[:name_end]
        if name not in wanted:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


@dataclass
class ServerStats:
    """What the server's /metrics said while a level ran."""

    peak_kv_cache_usage: float | None = None
    peak_requests_waiting: float | None = None
    peak_requests_running: float | None = None
    preemptions: float | None = None
    samples: int = 0  # reads of /metrics
    samples_under_load: int = 0  # reads begun and ended while requests were in flight


async def watch_metrics(http: aiohttp.ClientSession, base_url: str, stop: asyncio.Event,
                 interval_s: float, ready: asyncio.Event,
                 busy: Callable[[], bool]) -> ServerStats:
    """Read /metrics every `interval_s` until `stop`: the peaks of the KV cache usage and the
    queues, and the preemptions counted meanwhile; `ready` is set once the counters' starting
    values are read."""
    stats = ServerStats()
    first: float | None = None
    last: float | None = None
    names = ("vllm:kv_cache_usage_perc", "vllm:num_requests_waiting",
             "vllm:num_requests_running", "vllm:num_preemptions_total")

    def peak(old: float | None, new: float | None) -> float | None:
        if new is None:
            return old
        return new if old is None else max(old, new)

    while True:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            loaded = busy()
            async with http.get(base_url + "/metrics") as r:
                if r.status == 200:
                    v = prometheus_values(await r.text(), names)
                    stats.samples += 1
                    stats.samples_under_load += loaded and busy()
                    stats.peak_kv_cache_usage = peak(stats.peak_kv_cache_usage,
                                                     v.get("vllm:kv_cache_usage_perc"))
                    stats.peak_requests_waiting = peak(stats.peak_requests_waiting,
                                                       v.get("vllm:num_requests_waiting"))
                    stats.peak_requests_running = peak(stats.peak_requests_running,
                                                       v.get("vllm:num_requests_running"))
                    p = v.get("vllm:num_preemptions_total")
                    if p is not None:
                        first = p if first is None else first
                        last = p
        ready.set()  # the counters' starting values are read: the level may begin
        if stop.is_set():
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
    if first is not None and last is not None:
        stats.preemptions = last - first
    return stats
