"""Workload models: what load a trial drives, declared in YAML; datasets read with line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    Tag,
    model_validator,
)

from autotune.core.config import MAX_DATASET_BYTES, load_model, read_text
from autotune.core.errors import ConfigError
from autotune.measure.capacity import Capacity
from autotune.measure.stopping import Measure


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


def capacity_level(over: str, value: float) -> Level:
    """The load level a capacity search measures at `value`."""
    return Level(concurrency=int(value)) if over == "concurrency" else Level(rate=value)


class Workload(BaseModel):
    """What a trial sends. Synthetic lengths are tokens of the model under test (prompts are
    built with its tokenizer); the counts the server reports are checked against the plan."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Literal["completions", "chat"] = "completions"
    input_tokens: Length = 128
    output_tokens: Length = 64
    shared_prefix_tokens: int = Field(0, ge=0, description="the same prefix before every prompt")
    dataset: Dataset | None = None
    concurrency: PositiveInt = Field(8, description="shortcut for levels: [{concurrency: N}]")
    levels: list[Level] = Field(default_factory=list, description="a sweep; overrides concurrency")
    num_requests: PositiveInt = Field(64, description="sessions per measured round")
    duration_s: float | None = Field(None, gt=0, description="stop starting sessions after this")
    warmup_requests: int = Field(2, ge=0, description="sent first, excluded from results")
    measure: Measure = Field(default_factory=lambda: Measure(),
                             description="rounds per level: until the interval is narrow")
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
    capacity: Capacity | None = Field(None, description="find the highest load that meets "
                                                        "these SLOs instead of measuring fixed "
                                                        "levels")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        owned = {"model", "prompt", "messages", "stream", "max_tokens", "stream_options"}
        clash = sorted(owned & set(self.extra_body))
        if clash:
            raise ValueError(f"extra_body may not set {', '.join(clash)} (autotune sets them)")
        if self.dataset and self.dataset.multi_turn and self.endpoint != "chat":
            raise ValueError("a multi-turn dataset needs endpoint: chat")
        if self.capacity is not None and self.levels:
            raise ValueError("capacity searches the load level itself: give capacity or "
                             "levels, not both")
        return self

    def load_levels(self) -> list[Level]:
        if self.capacity is not None:
            return [capacity_level(self.capacity.over, self.capacity.low)]
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
    text = read_text(path, "dataset: ", MAX_DATASET_BYTES)
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
