"""Workload models (what load a trial drives) and the pure, seeded plan built from them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    Tag,
    model_validator,
)

from autotune.builtin_model import WORDS
from autotune.config import load_model
from autotune.errors import ConfigError


class Fixed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dist: Literal["fixed"]
    value: PositiveInt


class Uniform(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dist: Literal["uniform"]
    low: PositiveInt
    high: PositiveInt

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class Normal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dist: Literal["normal"]
    mean: float = Field(gt=0)
    std: float = Field(ge=0)


class LogNormal(BaseModel):
    """Lengths whose mean is `mean`, with log-space standard deviation `sigma`."""

    model_config = ConfigDict(extra="forbid")
    dist: Literal["lognormal"]
    mean: float = Field(gt=0)
    sigma: float = Field(ge=0)


Distribution = Annotated[Union[Fixed, Uniform, Normal, LogNormal], Field(discriminator="dist")]


def _length_kind(v: Any) -> str:
    return "dist" if isinstance(v, (dict, BaseModel)) else "int"


# A plain count, or a distribution: tagged so errors speak of the form the user wrote.
Length = Annotated[
    Union[Annotated[PositiveInt, Tag("int")], Annotated[Distribution, Tag("dist")]],
    Discriminator(_length_kind),
]


def sample_lengths(spec: Length, n: int, rng: np.random.Generator) -> list[int]:
    """n lengths drawn from `spec`, rounded and clipped to at least 1 token."""
    if isinstance(spec, int):
        return [spec] * n
    if isinstance(spec, Fixed):
        return [spec.value] * n
    if isinstance(spec, Uniform):
        return [int(x) for x in rng.integers(spec.low, spec.high + 1, size=n)]
    if isinstance(spec, Normal):
        raw = rng.normal(spec.mean, spec.std, size=n)
    else:
        mu = math.log(spec.mean) - spec.sigma**2 / 2
        raw = rng.lognormal(mu, spec.sigma, size=n)
    return [max(1, round(float(x))) for x in raw]


class Level(BaseModel):
    """One load level: a fixed number of sessions in flight, or an arrival rate."""

    model_config = ConfigDict(extra="forbid")
    concurrency: PositiveInt | None = None
    rate: float | None = Field(None, gt=0, description="sessions started per second")
    arrival: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(1.0, gt=0, description="gamma shape: <1 bursty, 1 Poisson")
    max_concurrency: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> Level:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of concurrency or rate")
        if self.concurrency is not None and (self.arrival != "poisson" or self.burstiness != 1.0
                                             or self.max_concurrency is not None):
            raise ValueError("arrival, burstiness and max_concurrency apply to rate levels")
        return self

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"concurrency={self.concurrency}"
        extra = f", {self.arrival}" + (f" b={self.burstiness:g}" if self.arrival == "gamma"
                                       else "")
        return f"rate={self.rate:g}/s{extra}"


class Dataset(BaseModel):
    """Prompts from a file. `path` is relative to the workload (or space) file."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    format: Literal["jsonl", "sharegpt"] = "jsonl"
    multi_turn: bool = Field(False, description="each conversation is a session; every turn "
                                                "resends the history with the server's replies")
    max_turns: PositiveInt | None = None


SloName = Literal["ttft_ms", "tpot_ms", "e2el_ms"]


class Workload(BaseModel):
    """What a trial sends. Lengths are in words of a fixed vocabulary: one token each with the
    built-in model, about one with common tokenizers. Token counts actually sent and received
    are taken from the server's usage report and recorded."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Literal["completions", "chat"] = "completions"
    input_tokens: Length = 128
    output_tokens: Length = 64
    shared_prefix_tokens: int = Field(0, ge=0, description="the same prefix before every prompt")
    dataset: Dataset | None = None
    concurrency: PositiveInt = Field(8, description="shortcut for levels: [{concurrency: N}]")
    levels: list[Level] = Field(default_factory=list, description="a sweep; overrides concurrency")
    num_requests: PositiveInt = Field(64, description="measured sessions per level and repeat")
    duration_s: float | None = Field(None, gt=0, description="stop starting sessions after this")
    warmup_requests: int = Field(2, ge=0, description="sent first, excluded from results")
    repeats: int = Field(1, ge=1, le=30, description="measure each level k times: mean and 95% CI")
    ignore_eos: bool = Field(True, description="needed for random-weight models")
    seed: int = 0
    request_timeout_s: float = Field(120.0, gt=0)
    max_error_rate: float = Field(0.05, ge=0, le=1, description="above this a trial fails")
    max_preemptions_per_request: float = Field(
        1.0, ge=0, description="more preemptions than this per request is a preemption storm: "
                               "the trial fails as oom_under_load")
    slo: dict[SloName, float] = Field(default_factory=dict,
                                      description="per-request bounds that count for goodput")
    extra_body: dict[str, Any] = Field(default_factory=dict,
                                       description="merged into every request body")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        owned = {"model", "prompt", "messages", "stream", "max_tokens", "stream_options"}
        clash = sorted(owned & set(self.extra_body))
        if clash:
            raise ValueError(f"extra_body may not set {', '.join(clash)} (autotune sets them)")
        if self.dataset and self.dataset.multi_turn and self.endpoint != "chat":
            raise ValueError("a multi-turn dataset needs endpoint: chat")
        return self

    def load_levels(self) -> list[Level]:
        return list(self.levels) or [Level(concurrency=self.concurrency)]

    def with_base_dir(self, base: Path) -> Workload:
        if self.dataset is None or self.dataset.path.is_absolute():
            return self
        ds = self.dataset.model_copy(update={"path": base / self.dataset.path})
        return self.model_copy(update={"dataset": ds})


def load_workload(path: str | Path) -> Workload:
    w = load_model(Workload, path).with_base_dir(Path(path).resolve().parent)
    if w.dataset is not None:
        read_dataset(w)  # fail now, naming the line, not in the middle of a trial
    return w


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Turn:
    """One request of a session. For chat, `text` is this turn's user message."""

    text: str
    output_tokens: int | None = None  # None: drawn from the workload's output_tokens
    messages: tuple[dict[str, str], ...] | None = None  # a whole single-turn chat request


@dataclass(frozen=True)
class Session:
    turns: tuple[Turn, ...]


def _line_error(path: Path, n: int, msg: str) -> ConfigError:
    return ConfigError(str(path), f"line {n}", msg)


def _jsonl_turn(obj: Any, path: Path, n: int, endpoint: str) -> Turn:
    if not isinstance(obj, dict):
        raise _line_error(path, n, "expected a JSON object")
    unknown = set(obj) - {"prompt", "messages", "output_tokens"}
    if unknown:
        raise _line_error(path, n, f"unknown key {sorted(unknown)[0]!r}")
    out = obj.get("output_tokens")
    if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
        raise _line_error(path, n, "output_tokens must be a positive integer")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise _line_error(path, n, "prompt must be a non-empty string")
        return Turn(obj["prompt"], out)
    msgs = obj.get("messages")
    if msgs is None:
        raise _line_error(path, n, "needs prompt or messages")
    if endpoint != "chat":
        raise _line_error(path, n, "messages need endpoint: chat")
    if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in msgs):
        raise _line_error(path, n, "messages must be a non-empty list of {role, content}")
    return Turn(msgs[-1]["content"], out, tuple(msgs))


def _sharegpt_session(obj: Any, path: Path, n: int, w: Workload) -> Session | None:
    convs = obj.get("conversations") if isinstance(obj, dict) else None
    if not isinstance(convs, list):
        raise _line_error(path, n, "expected an object with a 'conversations' list")
    turns: list[Turn] = []
    for i, msg in enumerate(convs):
        if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
            raise _line_error(path, n, f"conversations[{i}] needs from and value")
        if msg.get("from") not in ("human", "user"):
            continue
        reply = convs[i + 1].get("value") if i + 1 < len(convs) and isinstance(
            convs[i + 1], dict) else None
        out = len(reply.split()) if isinstance(reply, str) and reply.split() else None
        turns.append(Turn(msg["value"], out))
    if not turns:
        return None
    ds = w.dataset
    assert ds is not None
    if not ds.multi_turn:
        turns = turns[:1]
    elif ds.max_turns:
        turns = turns[: ds.max_turns]
    return Session(tuple(turns))


def read_dataset(w: Workload) -> list[Session]:
    """Every usable session of the workload's dataset. Errors name the file and line."""
    ds = w.dataset
    assert ds is not None
    path = ds.path
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read dataset: {exc.strerror}") from exc
    records: list[tuple[int, Any]] = []
    stripped = text.lstrip()
    if ds.format == "sharegpt" and stripped.startswith("["):
        try:
            records = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise _line_error(path, exc.lineno, f"malformed JSON: {exc.msg}") from exc
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise _line_error(path, n, f"malformed JSON: {exc.msg}") from exc
    sessions: list[Session] = []
    for n, obj in records:
        if ds.format == "sharegpt":
            s = _sharegpt_session(obj, path, n, w)
            if s is not None:
                sessions.append(s)
        else:
            sessions.append(Session((_jsonl_turn(obj, path, n, w.endpoint),)))
    if not sessions:
        raise ConfigError(str(path), None, "dataset holds no usable prompt")
    return sessions


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlannedTurn:
    text: str
    max_tokens: int
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class PlannedSession:
    turns: tuple[PlannedTurn, ...]
    start_s: float = 0.0  # offset from the level's start (rate levels)


@dataclass(frozen=True)
class LevelPlan:
    level: Level
    repeat: int
    sessions: tuple[PlannedSession, ...]


@dataclass(frozen=True)
class Plan:
    warmup: tuple[PlannedSession, ...]
    levels: tuple[LevelPlan, ...]


def _words(rng: np.random.Generator, n: int) -> str:
    idx = rng.integers(0, len(WORDS), size=n)
    return " ".join(WORDS[i] for i in idx)


def arrival_offsets(level: Level, n: int, rng: np.random.Generator) -> list[float]:
    """Start times (s) of n sessions at `level`: 0 for concurrency levels; Poisson or gamma
    inter-arrival gaps for rate levels (gamma shape = burstiness, mean gap = 1/rate)."""
    if level.rate is None:
        return [0.0] * n
    shape = 1.0 if level.arrival == "poisson" else level.burstiness
    gaps = rng.gamma(shape, 1.0 / (level.rate * shape), size=n)
    gaps[0] = 0.0
    return [float(x) for x in np.cumsum(gaps)]


def _synthetic(w: Workload, rng: np.random.Generator, n: int, prefix: str) -> list[Session]:
    ins = sample_lengths(w.input_tokens, n, rng)
    return [Session((Turn((prefix + " " if prefix else "") + _words(rng, k)),)) for k in ins]


def _sessions(w: Workload, rng: np.random.Generator, n: int, pool: list[Session] | None,
              prefix: str) -> tuple[PlannedSession, ...]:
    if pool is None:
        chosen = _synthetic(w, rng, n, prefix)
    else:
        order = rng.permutation(len(pool))
        chosen = [pool[order[i % len(pool)]] for i in range(n)]
    out = []
    for s in chosen:
        outs = sample_lengths(w.output_tokens, len(s.turns), rng)
        out.append(PlannedSession(tuple(
            PlannedTurn(t.text, t.output_tokens or o, t.messages)
            for t, o in zip(s.turns, outs, strict=True))))
    return tuple(out)


def plan(w: Workload, pool: list[Session] | None = None) -> Plan:
    """Pure and seeded: the same workload always yields the same sessions.

    Synthetic prompts differ between requests, levels and repeats, so prefix caching helps
    only where the workload asks for it (shared_prefix_tokens, multi-turn history).
    """
    if w.dataset is not None and pool is None:
        pool = read_dataset(w)
    rng = np.random.default_rng(w.seed)
    prefix = _words(rng, w.shared_prefix_tokens) if w.shared_prefix_tokens else ""
    warm = _sessions(w, rng, w.warmup_requests, pool, prefix)
    levels = []
    for level in w.load_levels():
        for r in range(w.repeats):
            sessions = _sessions(w, rng, w.num_requests, pool, prefix)
            starts = arrival_offsets(level, len(sessions), rng)
            levels.append(LevelPlan(level, r, tuple(
                PlannedSession(s.turns, t) for s, t in zip(sessions, starts, strict=True))))
    return Plan(warm, tuple(levels))


def request_body(w: Workload, turn: PlannedTurn,
                 history: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The JSON body of one request (without `model`, known only once the server is up)."""
    body: dict[str, Any] = {"max_tokens": turn.max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}
    if w.ignore_eos:
        body["ignore_eos"] = True
    if w.endpoint == "chat":
        if turn.messages is not None:
            body["messages"] = list(turn.messages)
        else:
            body["messages"] = [*(history or []), {"role": "user", "content": turn.text}]
    else:
        body["prompt"] = turn.text
    body.update(w.extra_body)
    return body
