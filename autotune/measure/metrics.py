"""Pure: per-request samples -> latency percentiles, throughput and error rate.

Field names follow `vllm bench serve` (mean_ttft_ms, p99_tpot_ms, output_throughput, ...) so
numbers can be compared side by side with vLLM's own client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from autotune.core.stats import Estimate, mean_interval
from autotune.measure.stalls import first_token_stall

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
LATENCIES: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True)
class RequestSample:
    """One request as the client saw it. Times are seconds on the monotonic clock."""

    start: float
    end: float
    ok: bool
    ttft: float | None = None
    itl: tuple[float, ...] = ()
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    detail: str | None = None  # the server's message for a refused request
    # what the plan asked for: the prompt's token count (None: not known in advance) and
    # max_tokens (exactly what comes back when the workload sets ignore_eos)
    planned_prompt_tokens: int | None = None
    max_tokens: int | None = None

    @property
    def e2el(self) -> float:
        """To the last token, as vLLM's client counts it (not to the end of the stream, whose
        usage report and [DONE] can trail the last token under load)."""
        if self.ttft is not None:
            return self.ttft + sum(self.itl)
        return self.end - self.start

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (vLLM's definition)."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)

    def meets(self, slo: Mapping[str, float]) -> bool:
        """Whether a successful request stayed within every per-request bound (ms)."""
        if not self.ok:
            return False
        got = {"ttft_ms": self.ttft, "tpot_ms": self.tpot, "e2el_ms": self.e2el}
        for name, bound in slo.items():
            v = got[name]
            if v is not None and v * 1000.0 > bound:
                return False
        return True


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> LatencyStats:
        if not values:
            nan = float("nan")
            return cls(mean=nan, median=nan, p90=nan, p95=nan, p99=nan)
        ms = np.asarray(values, dtype=float) * 1000.0
        p = np.percentile(ms, PERCENTILES)
        return cls(mean=float(ms.mean()), median=float(p[0]), p90=float(p[1]),
                   p95=float(p[2]), p99=float(p[3]))


class LoadMetrics(BaseModel):
    """What one load level measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    request_goodput: float
    output_throughput: float
    total_token_throughput: float
    error_rate: float
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    itl_ms: LatencyStats
    e2el_ms: LatencyStats
    errors: dict[str, int]
    # the round's longest first-token stall (stalls.py), seconds; None: none
    ttft_stall_s: float | None = None

    def flat(self) -> dict[str, float]:
        """vLLM-bench-style flat names: mean_ttft_ms, median_tpot_ms, p99_e2el_ms, ..."""
        out: dict[str, float] = {
            "completed": float(self.completed),
            "failed": float(self.failed),
            "duration_s": self.duration_s,
            "total_input_tokens": float(self.total_input_tokens),
            "total_output_tokens": float(self.total_output_tokens),
            "request_throughput": self.request_throughput,
            "request_goodput": self.request_goodput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "error_rate": self.error_rate,
        }
        for name in LATENCIES:
            stats: LatencyStats = getattr(self, f"{name}_ms")
            for stat, value in stats.model_dump().items():
                out[f"{stat}_{name}_ms"] = value
        return out


def summarize(samples: Sequence[RequestSample], slo: Mapping[str, float] | None = None
              ) -> LoadMetrics:
    """Goodput counts requests within every `slo` bound (all successes when there is none)."""
    ok = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    if samples:
        duration = max(s.end for s in samples) - min(s.start for s in samples)
    else:
        duration = 0.0
    duration = max(duration, 1e-9)
    inp = sum(s.prompt_tokens for s in ok)
    out = sum(s.output_tokens for s in ok)
    errors: dict[str, int] = {}
    for s in failed:
        key = s.error or "unknown"
        errors[key] = errors.get(key, 0) + 1
    return LoadMetrics(
        completed=len(ok),
        failed=len(failed),
        duration_s=duration,
        total_input_tokens=inp,
        total_output_tokens=out,
        request_throughput=len(ok) / duration,
        request_goodput=sum(1 for s in ok if s.meets(slo or {})) / duration,
        output_throughput=out / duration,
        total_token_throughput=(inp + out) / duration,
        error_rate=len(failed) / len(samples) if samples else 0.0,
        ttft_ms=LatencyStats.of_seconds([s.ttft for s in ok if s.ttft is not None]),
        tpot_ms=LatencyStats.of_seconds([t for s in ok if (t := s.tpot) is not None]),
        itl_ms=LatencyStats.of_seconds([x for s in ok for x in s.itl]),
        e2el_ms=LatencyStats.of_seconds([s.e2el for s in ok]),
        errors=errors,
        ttft_stall_s=first_token_stall(samples),
    )


def load_mismatch(samples: Sequence[RequestSample], ignore_eos: bool) -> str | None:
    """Whether the server counted the load the plan declared; a sentence on the first request
    it did not (None: every successful request matched)."""
    for s in samples:
        if not s.ok:
            continue
        if s.planned_prompt_tokens is not None and s.prompt_tokens != s.planned_prompt_tokens:
            return (f"the server counted {s.prompt_tokens} prompt tokens where the plan built "
                    f"{s.planned_prompt_tokens}: the tokenizer autotune read differs from "
                    "the server's")
        if ignore_eos and s.max_tokens is not None and s.output_tokens != s.max_tokens:
            return (f"the server returned {s.output_tokens} tokens where {s.max_tokens} were "
                    "asked for with ignore_eos")
    return None


class LevelResult(BaseModel):
    """One load level of a trial: each round's figures and their mean with a 95% interval."""

    model_config = ConfigDict(extra="forbid")

    label: str
    level: dict[str, Any]
    metrics: dict[str, Estimate]
    server: dict[str, float]
    rounds: list[LoadMetrics]


SERVER_STATS = ("peak_kv_cache_usage", "peak_requests_waiting", "peak_requests_running",
                "num_preemptions")


def aggregate(label: str, level: dict[str, Any], runs: Sequence[LoadMetrics],
              servers: Sequence[Mapping[str, float | None]]) -> LevelResult:
    """A level's rounds -> each figure's mean over rounds with its 95% interval. Rounds, not
    requests, are the observations: requests of one round share batches and queues."""
    flats = [r.flat() for r in runs]
    metrics = {name: mean_interval([f[name] for f in flats], basis="rounds")
               for name in flats[0]}
    server: dict[str, float] = {}
    for name in SERVER_STATS:
        vals = [float(v) for s in servers if (v := s.get(name)) is not None]
        if vals:
            # peaks are the worst seen; preemptions add up over rounds
            server[name] = sum(vals) if name == "num_preemptions" else max(vals)
    return LevelResult(label=label, level=level, metrics=metrics, server=server,
                       rounds=list(runs))


# Metrics a trial records beyond the load level: names the objective may use.
TRIAL_EXTRAS: tuple[str, ...] = (
    "startup_s",
    "capacity",  # a capacity search's result (capacity.py)
    "quality_agreement",  # the quality guard's (quality.py)
    "peak_memory_bytes",
    "peak_host_pss_bytes",
    "peak_host_uss_bytes",
    "peak_host_rss_bytes",
    "peak_gpu_process_bytes",
    "peak_gpu_device_used_bytes",
    "kv_cache_tokens",
    "kv_cache_bytes",
    *SERVER_STATS,
)


def _round_metrics() -> tuple[str, ...]:
    names = [
        "completed", "failed", "duration_s", "total_input_tokens", "total_output_tokens",
        "request_throughput", "request_goodput", "output_throughput",
        "total_token_throughput", "error_rate",
    ]
    for name in LATENCIES:
        for stat in ("mean", "median", "p90", "p95", "p99"):
            names.append(f"{stat}_{name}_ms")
    return tuple(names)


# Figures every round of a level yields (LoadMetrics.flat()).
ROUND_METRICS: tuple[str, ...] = _round_metrics()


def metric_names() -> tuple[str, ...]:
    """Every metric name an objective or constraint may refer to."""
    return (*ROUND_METRICS, *TRIAL_EXTRAS)
