"""Pure and seeded: a workload and the model's tokenizer -> the requests of every round.

Round r of level i is the same for every candidate (its own random stream, seeded by the
workload's seed, i and r), so rounds of two settings measured side by side send the same
prompts. Rounds are built when asked for: how many a level gets is decided while it runs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.measure.workload import Fixed, Length, Level, Session, Uniform, Workload, read_dataset
from autotune.model.tokens import Tokenizer, exact_text

# Random streams of a round: which prompts and lengths, the prompt text, the arrival times.
_LENGTHS, _TEXT, _ARRIVALS = 0, 1, 2
_WARMUP, _PREFIX = 1_000_000, 2_000_000  # stream tags outside any level index


def sample_lengths(spec: Length, n: int, rng: np.random.Generator) -> list[int]:
    """n lengths drawn from `spec`, rounded and clipped to at least 1 token."""
    if isinstance(spec, int):
        return [spec] * n
    if isinstance(spec, Fixed):
        return [spec.value] * n
    if isinstance(spec, Uniform):
        return [int(x) for x in rng.integers(spec.low, spec.high + 1, size=n)]
    if spec.dist == "normal":
        raw = rng.normal(spec.mean, spec.std, size=n)
    else:
        mu = math.log(spec.mean) - spec.sigma**2 / 2
        raw = rng.lognormal(mu, spec.sigma, size=n)
    return [max(1, round(float(x))) for x in raw]


def arrival_offsets(level: Level, n: int, rng: np.random.Generator) -> list[float]:
    """Start times (s) of n sessions at `level`: 0 for concurrency levels; Poisson or gamma
    inter-arrival gaps for rate levels (gamma shape = burstiness, mean gap = 1/rate)."""
    if level.rate is None:
        return [0.0] * n
    shape = 1.0 if level.arrival == "poisson" else level.burstiness
    gaps = rng.gamma(shape, 1.0 / (level.rate * shape), size=n)
    gaps[0] = 0.0
    return [float(x) for x in np.cumsum(gaps)]


@dataclass(frozen=True)
class PlannedTurn:
    text: str
    max_tokens: int
    messages: tuple[dict[str, str], ...] | None = None
    # what the server should count for the prompt (None: unknown in advance, e.g. a turn
    # that carries the server's own earlier replies)
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class PlannedSession:
    turns: tuple[PlannedTurn, ...]
    start_s: float = 0.0  # offset from the round's start (rate levels)


@dataclass(frozen=True)
class LevelPlan:
    level: Level
    index: int  # which level of the workload
    round: int
    sessions: tuple[PlannedSession, ...]


def _rng(*tags: int) -> np.random.Generator:
    return np.random.default_rng([abs(t) for t in tags])


class Plan:
    """The requests of a workload for one model. Warm-up is built at once, rounds on demand."""

    def __init__(self, w: Workload, tok: Tokenizer, pool: list[Session] | None = None) -> None:
        if w.dataset is not None and pool is None:
            pool = read_dataset(w)
        self.workload = w
        self.tok = tok
        self.pool = pool
        self.levels = w.load_levels()
        self._counts: dict[tuple[str, Any], int | None] = {}
        # tokens the server adds to every completions prompt (e.g. a BOS): vLLM's random
        # dataset takes them off the declared length, and so does this plan
        self.specials = max(0, tok.prompt_tokens("the") - len(tok.encode("the")))
        p = w.shared_prefix_tokens
        self.prefix = exact_text(tok, _rng(w.seed, _PREFIX, 0, _TEXT), p) if p else ""
        self.warmup = self._sessions(_WARMUP, 0, w.warmup_requests)

    def fresh(self) -> Plan:
        """This plan for one trial: the same requests, the workload's own levels (a capacity
        search adds its levels to the copy, never to the plan every trial shares)."""
        trial_plan = copy.copy(self)
        trial_plan.levels = self.workload.load_levels()
        return trial_plan

    def add_level(self, level: Level) -> int:
        """Append a load level (a capacity search's next); returns its index."""
        self.levels.append(level)
        return len(self.levels) - 1

    def max_in_flight(self) -> int | None:
        """The most sessions any level may have in flight (None: no bound, a rate level)."""
        c = self.workload.capacity
        if c is not None:
            return int(c.high) if c.over == "concurrency" else None
        bounds = [lv.concurrency or lv.max_concurrency for lv in self.levels]
        return None if any(b is None for b in bounds) else max(
            b for b in bounds if b is not None)

    def round(self, level_index: int, r: int) -> LevelPlan:
        level = self.levels[level_index]
        sessions = self._sessions(level_index, r, self.workload.num_requests)
        starts = arrival_offsets(level, len(sessions),
                                 _rng(self.workload.seed, level_index, r, _ARRIVALS))
        return LevelPlan(level, level_index, r, tuple(
            PlannedSession(s.turns, t) for s, t in zip(sessions, starts, strict=True)))

    # ---- lengths (cheap: no text) and sessions

    def _shape(self, tag: int, r: int, n: int) -> list[tuple[Session | None, list[int], int]]:
        """Per session: the dataset session (None: synthetic), output lengths of its turns,
        and the synthetic input length (0 for dataset sessions)."""
        w = self.workload
        rng = _rng(w.seed, tag, r, _LENGTHS)
        out: list[tuple[Session | None, list[int], int]] = []
        if self.pool is None:
            ins = sample_lengths(w.input_tokens, n, rng)
            outs = sample_lengths(w.output_tokens, n, rng)
            return [(None, [o], k) for k, o in zip(ins, outs, strict=True)]
        order = rng.permutation(len(self.pool))
        for i in range(n):
            s = self.pool[order[i % len(self.pool)]]
            drawn = sample_lengths(w.output_tokens, len(s.turns), rng)
            out.append((s, [t.output_tokens or o for t, o in zip(s.turns, drawn, strict=True)],
                        0))
        return out

    def _sessions(self, tag: int, r: int, n: int) -> tuple[PlannedSession, ...]:
        w = self.workload
        text_rng = _rng(w.seed, tag, r, _TEXT)
        chat = w.endpoint == "chat"
        multi = bool(w.dataset and w.dataset.multi_turn)
        out = []
        for session, outs, k in self._shape(tag, r, n):
            if session is None:
                total = w.shared_prefix_tokens + k
                content = max(1, total - (0 if chat else self.specials))
                text = exact_text(self.tok, text_rng, content, self.prefix)
                turns: list[tuple[str, tuple[dict[str, str], ...] | None]] = [(text, None)]
            else:
                turns = [(t.text, t.messages) for t in session.turns]
            planned = []
            for i, ((text, messages), o) in enumerate(zip(turns, outs, strict=True)):
                expected = None if (multi and i > 0) else self._prompt_tokens(text, messages)
                planned.append(PlannedTurn(text, o, messages, expected))
            out.append(PlannedSession(tuple(planned)))
        return tuple(out)

    def _prompt_tokens(self, text: str, messages: Sequence[dict[str, str]] | None
                       ) -> int | None:
        key = (text, tuple(tuple(sorted(m.items())) for m in messages) if messages else None)
        if key not in self._counts:
            if self.workload.endpoint != "chat":
                self._counts[key] = self.tok.prompt_tokens(text)
            else:
                kwargs = self.workload.extra_body.get("chat_template_kwargs") or {}
                msgs = list(messages) if messages else [{"role": "user", "content": text}]
                self._counts[key] = self.tok.chat_prompt_tokens(msgs, kwargs)
        return self._counts[key]

    def longest_request(self, rounds: int | None = None) -> int | None:
        """The most tokens (prompt plus output) any planned request can need, over the
        warm-up and every round the measurement may run (None: not known in advance)."""
        w = self.workload
        rounds = w.measure.max_rounds if rounds is None else rounds
        shapes = self._shape(_WARMUP, 0, w.warmup_requests)
        for i in range(len(self.levels)):
            for r in range(rounds):
                shapes += self._shape(i, r, w.num_requests)
        longest = 0
        for session, outs, k in shapes:
            if session is None:
                longest = max(longest, w.shared_prefix_tokens + k + outs[0])
                continue
            # a multi-turn session resends its history: the last turn carries all of it
            history = 0
            for t, o in zip(session.turns, outs, strict=True):
                p = self._prompt_tokens(t.text, t.messages)
                if p is None:
                    return None
                history += p + o
                longest = max(longest, history)
        return longest


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
