"""Streaming OpenAI-API load generator -> per-request samples (the server's other endpoints:
server_api.py).

The load runs on aiohttp, like vLLM's own benchmark client, so both pay the same per-request
cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from autotune.measure.metrics import RequestSample
from autotune.measure.plan import LevelPlan, Plan, PlannedSession, PlannedTurn, request_body
from autotune.measure.server_api import ServerStats, Target, watch_metrics
from autotune.measure.workload import Workload

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class ServerGone(Exception):
    """The server process exited while the workload ran."""


class ServerHung(Exception):
    """The server is alive but makes no progress: no byte to any request in flight and no
    answer to /health."""


@dataclass
class LevelRun:
    plan: LevelPlan
    samples: list[RequestSample]
    server: ServerStats = field(default_factory=ServerStats)


async def _request(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                   chat: bool, keep_text: bool, turn: PlannedTurn,
                   progress: Callable[[], None] = lambda: None
                   ) -> tuple[RequestSample, str]:
    pp, mt = turn.prompt_tokens, turn.max_tokens
    start = time.perf_counter()
    ttft: float | None = None
    last = start
    itl: list[float] = []
    usage: dict[str, Any] | None = None
    text: list[str] = []
    buf = b""

    def fail(error: str, detail: str | None = None) -> tuple[RequestSample, str]:
        return RequestSample(start, time.perf_counter(), ok=False, error=error, detail=detail,
                             planned_prompt_tokens=pp, max_tokens=mt), ""

    try:
        async with http.post(url, json=body) as r:
            if r.status != 200:
                body_text = (await r.read()).decode(errors="replace")
                return fail(f"http_{r.status}", _error_message(body_text))
            done = False
            async for data in r.content.iter_any():
                progress()
                buf += data
                # one read may hold several events, or part of one
                *events, buf = buf.split(b"\n\n")
                for raw in events:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue  # SSE comments and keep-alives
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    chunk = json.loads(payload)
                    if not isinstance(chunk, dict):
                        return fail("protocol:not_an_object")
                    if chunk.get("error"):
                        return fail("stream_error")
                    if choices := chunk.get("choices"):
                        # like vLLM's client: every chunk with choices is a step of the stream
                        now = time.perf_counter()
                        if ttft is None:
                            ttft = now - start
                        else:
                            itl.append(now - last)
                        last = now
                        if keep_text:
                            c = choices[0]
                            piece = (c.get("delta") or {}).get("content") if chat else c.get(
                                "text")
                            text.append(piece or "")
                    elif chunk.get("usage"):
                        usage = chunk["usage"]
                if done:
                    break
    except asyncio.TimeoutError:
        return fail("timeout")
    except aiohttp.ClientConnectorError:
        return fail("connect")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
            aiohttp.ClientOSError):
        return fail("disconnect")
    except (aiohttp.ClientError, ValueError, TypeError, AttributeError, KeyError,
            IndexError) as exc:  # a reply not shaped like the API's
        return fail(f"protocol:{type(exc).__name__}", str(exc)[:200])
    if ttft is None:
        return fail("empty_stream")
    if usage is None:
        return fail("no_usage")
    end = time.perf_counter()
    return RequestSample(
        start, end, ok=True, ttft=ttft, itl=tuple(itl),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0), planned_prompt_tokens=pp,
        max_tokens=mt,
    ), "".join(text)


def _error_message(body: str) -> str:
    """The server's own words for a refused request (OpenAI error shape), one line."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = str(msg)
    except ValueError:
        text = body
    return " ".join(text.split())[:300]


class _Driver:
    def __init__(self, target: Target, w: Workload, http: aiohttp.ClientSession,
                 model: str) -> None:
        self.w = w
        self.http = http
        self.model = model
        self.url = target.base_url + ENDPOINT_PATHS[w.endpoint]
        self.chat = w.endpoint == "chat"
        self.multi_turn = bool(w.dataset and w.dataset.multi_turn)
        self.in_flight = 0
        self.last_progress = time.perf_counter()  # the last byte from the server, or a send

    def progress(self) -> None:
        self.last_progress = time.perf_counter()

    async def session(self, s: PlannedSession) -> list[RequestSample]:
        """A session's turns in order; each chat turn resends the history with the replies."""
        out: list[RequestSample] = []
        history: list[dict[str, str]] = []
        for i, turn in enumerate(s.turns):
            body = {"model": self.model, **request_body(self.w, turn, history)}
            if self.in_flight == 0:
                self.progress()  # idle time is not a stall
            self.in_flight += 1
            try:
                sample, reply = await _request(self.http, self.url, body, self.chat,
                                               self.multi_turn, turn, self.progress)
            finally:
                self.in_flight -= 1
            out.append(sample)
            if not sample.ok:
                # the rest of a broken conversation cannot be sent; count it, don't drop it
                now = time.perf_counter()
                out += [RequestSample(now, now, ok=False, error="session_aborted",
                                      planned_prompt_tokens=t.prompt_tokens,
                                      max_tokens=t.max_tokens)
                        for t in s.turns[i + 1:]]
                break
            if self.multi_turn:
                history += [{"role": "user", "content": turn.text},
                            {"role": "assistant", "content": reply}]
        return out

    async def level(self, sessions: Sequence[PlannedSession], concurrency: int | None,
                    rate_limit: int | None) -> list[RequestSample]:
        results: list[list[RequestSample]] = [[] for _ in sessions]
        deadline = (time.perf_counter() + self.w.duration_s) if self.w.duration_s else None
        if concurrency is not None:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(len(sessions)):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    if deadline is not None and time.perf_counter() >= deadline:
                        return
                    i = queue.get_nowait()
                    results[i] = await self.session(sessions[i])

            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(sessions)))))
        else:
            # unbounded unless the level sets max_concurrency
            limit = asyncio.Semaphore(rate_limit or max(1, len(sessions)))
            t0 = time.perf_counter()

            async def launch(i: int) -> None:
                async with limit:
                    results[i] = await self.session(sessions[i])

            tasks = []
            for i, s in enumerate(sessions):
                delay = t0 + s.start_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                tasks.append(asyncio.create_task(launch(i)))
            await asyncio.gather(*tasks)
        return [x for r in results for x in r]


@dataclass
class Liveness:
    """How the load notices a server that died or hung, within seconds (not at a request's
    timeout): `alive` is polled every 0.25 s; when requests are in flight and no byte came for
    `stall_s`, `healthy` (a /health probe, run off the event loop) decides."""

    alive: Callable[[], bool]
    healthy: Callable[[], bool] | None = None
    stall_s: float = 10.0


async def _unless_dead(work: Coroutine[Any, Any, list[RequestSample]],
                       live: Liveness | None, d: _Driver) -> list[RequestSample]:
    """Run `work`, but stop at once if the server dies (ServerGone) or hangs (ServerHung)."""
    task = asyncio.ensure_future(work)
    if live is None:
        return await task
    probed = 0.0
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        why: Exception | None = None
        now = time.perf_counter()
        if not live.alive():
            why = ServerGone("the server exited while the workload ran")
        elif (live.healthy is not None and d.in_flight and now - d.last_progress > live.stall_s
              and now - probed > live.stall_s):
            probed = now
            if not await asyncio.to_thread(live.healthy):
                why = ServerHung(f"no byte to {d.in_flight} requests in flight for "
                                 f"{now - d.last_progress:.0f} s and no answer to /health")
        if why is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise why


# After each round of a level: measure another round of it, go on to the next level, or stop
# the whole workload (a candidate not worth measuring further).
Next = Literal["continue", "next", "stop"]
RoundCallback = Callable[[LevelRun], Next]


def one_round(run: LevelRun) -> Next:
    return "next"


async def _run(target: Target, p: Plan, watch_s: float | None, live: Liveness | None,
               after_round: RoundCallback) -> list[LevelRun]:
    w = p.workload
    levels = p.levels
    # the connection pool never throttles a level: unbounded if any rate level is unbounded
    biggest = p.max_in_flight() or 0
    connector = aiohttp.TCPConnector(limit=biggest or 0, limit_per_host=biggest or 0,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=w.request_timeout_s, connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=target.headers()) as http:
        model = target.model
        if model is None:
            async with http.get(target.base_url + "/v1/models") as r:
                r.raise_for_status()
                model = str((await r.json())["data"][0]["id"])
        d = _Driver(target, w, http, model)
        first = levels[0]
        await _unless_dead(
            d.level(p.warmup, first.concurrency or first.max_concurrency or 1, None), live, d)
        runs: list[LevelRun] = []
        async with aiohttp.ClientSession(headers=target.headers(),
                                         timeout=aiohttp.ClientTimeout(total=5)) as side:
            index = 0
            while index < len(levels):  # a capacity search adds levels as it goes
                level = levels[index]
                index += 1
                rnd = 0
                while True:
                    lp = p.round(index - 1, rnd)
                    stop, ready = asyncio.Event(), asyncio.Event()
                    watcher = (asyncio.create_task(watch_metrics(side, target.base_url, stop,
                                                          watch_s, ready,
                                                          lambda: d.in_flight > 0))
                               if watch_s else None)
                    if watcher:
                        await ready.wait()
                    try:
                        samples = await _unless_dead(
                            d.level(lp.sessions, level.concurrency, level.max_concurrency),
                            live, d)
                    finally:
                        stop.set()
                        stats = await watcher if watcher else ServerStats()
                    runs.append(LevelRun(lp, samples, stats))
                    step = after_round(runs[-1])
                    if step == "stop":
                        return runs
                    if step == "next":
                        break
                    rnd += 1
        return runs


def run_workload(target: Target, p: Plan, watch_metrics_s: float | None = 0.5,
                 alive: Callable[[], bool] | Liveness | None = None,
                 after_round: RoundCallback = one_round) -> list[LevelRun]:
    """Drive a planned workload: warm-up first (unrecorded), then rounds of every level, as
    many as `after_round` asks for (by default one each).

    Every measured request comes back as a sample, success or classified error. While a round
    runs, the server's /metrics is read every `watch_metrics_s` seconds (None: never). If
    `alive` turns false the load stops at once with ServerGone; given a Liveness with a health
    probe, a server that stalls stops it with ServerHung.
    """
    live = Liveness(alive) if callable(alive) else alive
    return asyncio.run(_run(target, p, watch_metrics_s, live, after_round))
