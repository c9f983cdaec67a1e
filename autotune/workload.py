"""The workload model (what load a trial drives) and the pure request plan built from it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune.builtin_model import WORDS
from autotune.config import load_model


class Workload(BaseModel):
    """A synthetic load: fixed prompt and output lengths at fixed concurrency.

    `input_tokens` is the prompt length in words of a fixed vocabulary (one token each with the
    built-in model; about one with common tokenizers). The tokens actually sent and received are
    taken from the server's usage report and recorded.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: Literal["completions", "chat"] = "completions"
    num_requests: int = Field(64, gt=0, description="measured requests")
    concurrency: int = Field(8, gt=0, description="requests in flight at once")
    input_tokens: int = Field(128, gt=0)
    output_tokens: int = Field(64, gt=0)
    warmup_requests: int = Field(2, ge=0, description="sent first, excluded from results")
    ignore_eos: bool = Field(True, description="needed for random-weight models")
    seed: int = 0
    request_timeout_s: float = Field(120.0, gt=0)
    max_error_rate: float = Field(0.05, ge=0, le=1, description="above this a trial fails")
    extra_body: dict[str, Any] = Field(default_factory=dict,
                                       description="merged into every request body")

    @model_validator(mode="after")
    def _no_reserved_body_keys(self) -> Workload:
        owned = {"model", "prompt", "messages", "stream", "max_tokens", "stream_options"}
        clash = sorted(owned & set(self.extra_body))
        if clash:
            raise ValueError(f"extra_body may not set {', '.join(clash)} (autotune sets them)")
        return self


def load_workload(path: str | Path) -> Workload:
    return load_model(Workload, path)


@dataclass(frozen=True)
class PlannedRequest:
    """One request body, ready to send (minus the model name, known only once the server is up)."""

    body: dict[str, Any]
    expected_output_tokens: int
    warmup: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def plan_requests(w: Workload) -> list[PlannedRequest]:
    """Pure and seeded: the same workload always yields the same requests.

    Every prompt is different so prefix caching cannot make later requests artificially cheap.
    """
    rng = random.Random(w.seed)
    plan: list[PlannedRequest] = []
    for i in range(w.warmup_requests + w.num_requests):
        text = " ".join(rng.choice(WORDS) for _ in range(w.input_tokens))
        body: dict[str, Any] = {
            "max_tokens": w.output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if w.ignore_eos:
            body["ignore_eos"] = True
        if w.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        body.update(w.extra_body)
        plan.append(PlannedRequest(body=body, expected_output_tokens=w.output_tokens,
                                   warmup=i < w.warmup_requests))
    return plan
