"""The plan: declared lengths in the model's own tokens, seeded rounds, datasets, bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from autotune.measure.plan import Plan, arrival_offsets, request_body, sample_lengths
from autotune.measure.workload import Level, Workload, load_workload
from autotune.model.tokens import ModelTokenizer, exact_text
from autotune.testing.fake_tokenizer import WordTokenizer


def wl(**kw: object) -> Workload:
    return Workload.model_validate(kw)


class TriTokenizer:
    """Every 3 characters are a token, plus a BOS the server adds: nothing like words."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.pieces: list[str] = []

    def encode(self, text: str) -> list[int]:
        out = []
        for i in range(0, len(text), 3):
            piece = text[i:i + 3]
            if piece not in self.vocab:
                self.vocab[piece] = len(self.pieces)
                self.pieces.append(piece)
            out.append(self.vocab[piece])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)

    def prompt_tokens(self, text: str) -> int:
        return len(self.encode(text)) + 1

    def chat_prompt_tokens(self, messages: Sequence[Mapping[str, str]],
                           template_kwargs: Mapping[str, Any]) -> int | None:
        return None


@pytest.mark.parametrize(("spec", "check"), [
    (7, lambda xs: set(xs) == {7}),
    ({"dist": "fixed", "value": 9}, lambda xs: set(xs) == {9}),
    ({"dist": "uniform", "low": 10, "high": 20},
     lambda xs: min(xs) == 10 and max(xs) == 20 and abs(np.mean(xs) - 15) < 0.5),
    ({"dist": "normal", "mean": 100, "std": 10},
     lambda xs: abs(np.mean(xs) - 100) < 1 and abs(np.std(xs) - 10) < 1),
    ({"dist": "lognormal", "mean": 200, "sigma": 0.5},
     lambda xs: abs(np.mean(xs) - 200) < 8 and np.median(xs) < np.mean(xs)),
    ({"dist": "normal", "mean": 2, "std": 50}, lambda xs: min(xs) == 1),  # clipped, never < 1
])
def test_length_distributions(spec: object, check: object) -> None:
    w = wl(input_tokens=spec)
    xs = sample_lengths(w.input_tokens, 4000, np.random.default_rng(0))
    assert check(xs)  # type: ignore[operator]


@pytest.mark.parametrize("tok", [WordTokenizer(), TriTokenizer()], ids=["words", "trigrams"])
def test_prompts_have_the_declared_tokens_for_the_tokenizer(tok: Any) -> None:
    w = wl(input_tokens={"dist": "uniform", "low": 5, "high": 50},
           output_tokens={"dist": "fixed", "value": 33}, num_requests=40, warmup_requests=3,
           shared_prefix_tokens=12, seed=4, levels=[{"concurrency": 2}, {"rate": 5}])
    p = Plan(w, tok)
    specials = p.specials
    assert specials == (1 if isinstance(tok, TriTokenizer) else 0)
    assert len(p.warmup) == 3
    rounds = [p.round(i, r) for i in (0, 1) for r in (0, 1)]
    assert [(lp.level.label, lp.round) for lp in rounds] == [
        ("concurrency=2", 0), ("concurrency=2", 1), ("rate=5/s, poisson", 0),
        ("rate=5/s, poisson", 1)]
    turns = [s.turns[0] for lp in rounds for s in lp.sessions]
    prompts = [t.text for t in turns]
    assert len(prompts) == 160 and len(set(prompts)) == 160
    for t in turns:
        # what the server will count: the shared prefix, the declared length, nothing else
        assert t.prompt_tokens == tok.prompt_tokens(t.text)
        assert 12 + 5 <= t.prompt_tokens <= 12 + 50
        assert t.text.startswith(p.prefix)
    assert len(tok.encode(p.prefix)) == 12
    assert {t.max_tokens for t in turns} == {33}
    again = Plan(w, tok)
    assert again.round(1, 1) == p.round(1, 1), "seeded: the same workload, the same rounds"
    assert Plan(w.model_copy(update={"seed": 5}), tok).round(1, 1) != p.round(1, 1)
    # over the 50 rounds the measurement may run, the longest draw reaches the range's top
    assert p.longest_request() == 12 + 50 + 33


def test_exact_text_with_the_built_in_models_tokenizer(tiny_model: Path) -> None:
    tok = ModelTokenizer(str(tiny_model))
    rng = np.random.default_rng(0)
    for n in (1, 7, 128, 511):
        assert len(tok.encode(exact_text(tok, rng, n))) == n


def test_longest_request_bounds_every_round() -> None:
    w = wl(input_tokens={"dist": "uniform", "low": 10, "high": 100}, output_tokens=20,
           num_requests=8, warmup_requests=2, measure={"max_rounds": 5, "min_s": 0})
    p = Plan(w, WordTokenizer())
    longest = p.longest_request()
    assert longest is not None
    seen = [t.prompt_tokens + t.max_tokens for r in range(5)
            for s in p.round(0, r).sessions for t in s.turns]
    assert max(seen) <= longest <= 100 + 20
    assert max(seen) == longest or longest in {
        t.prompt_tokens + t.max_tokens for s in p.warmup for t in s.turns}


def test_arrivals() -> None:
    rng = np.random.default_rng(0)
    assert arrival_offsets(Level(concurrency=3), 4, rng) == [0.0] * 4
    poisson = np.diff(arrival_offsets(Level(rate=10), 5000, rng))
    assert abs(poisson.mean() - 0.1) < 0.005
    assert abs(poisson.std() / poisson.mean() - 1.0) < 0.05  # exponential: CV 1
    bursty = np.diff(arrival_offsets(Level(rate=10, arrival="gamma", burstiness=0.25), 5000,
                                     rng))
    assert abs(bursty.mean() - 0.1) < 0.01
    assert bursty.std() / bursty.mean() > 1.7  # gamma shape 0.25: CV 2


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_jsonl_dataset(tmp_path: Path) -> None:
    write(tmp_path, "d.jsonl", '{"prompt": "one two three", "output_tokens": 4}\n\n'
                               '{"prompt": "four five"}\n')
    f = write(tmp_path, "w.yaml", yaml.safe_dump({
        "dataset": {"path": "d.jsonl"}, "output_tokens": 9, "num_requests": 6,
        "warmup_requests": 0}))
    w = load_workload(f)
    assert w.dataset is not None and w.dataset.path == tmp_path / "d.jsonl"
    sessions = Plan(w, WordTokenizer()).round(0, 0).sessions
    got = sorted({(s.turns[0].text, s.turns[0].max_tokens, s.turns[0].prompt_tokens)
                  for s in sessions})
    assert got == [("four five", 9, 2), ("one two three", 4, 3)]


def test_chat_messages_dataset(tmp_path: Path) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    d = write(tmp_path, "d.jsonl", json.dumps({"messages": msgs}) + "\n")
    w = wl(endpoint="chat", dataset={"path": str(d)}, num_requests=1, warmup_requests=0)
    (s,) = Plan(w, WordTokenizer()).round(0, 0).sessions
    assert request_body(w, s.turns[0])["messages"] == msgs
    assert s.turns[0].prompt_tokens == 3


def test_sharegpt_single_and_multi_turn(tmp_path: Path) -> None:
    convs = [
        {"conversations": [{"from": "human", "value": "a b c"}, {"from": "gpt", "value": "x y"},
                           {"from": "human", "value": "d e"}, {"from": "gpt", "value": "z"}]},
        {"conversations": [{"from": "gpt", "value": "no question"}]},
    ]
    d = write(tmp_path, "sg.json", json.dumps(convs))
    tok = WordTokenizer()
    single = wl(dataset={"path": str(d), "format": "sharegpt"}, num_requests=2,
                warmup_requests=0)
    sessions = Plan(single, tok).round(0, 0).sessions
    assert [[(t.text, t.max_tokens) for t in s.turns] for s in sessions] == [[("a b c", 2)]] * 2
    multi = wl(endpoint="chat", dataset={"path": str(d), "format": "sharegpt",
                                         "multi_turn": True}, num_requests=1, warmup_requests=0)
    p = Plan(multi, tok)
    (s,) = p.round(0, 0).sessions
    assert [(t.text, t.max_tokens) for t in s.turns] == [("a b c", 2), ("d e", 1)]
    # a later turn carries the server's own replies: its count is not known in advance
    assert [t.prompt_tokens for t in s.turns] == [3, None]
    assert p.longest_request() == 3 + 2 + 2 + 1
    history = [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "x y"}]
    assert request_body(multi, s.turns[1], history)["messages"] == [
        *history, {"role": "user", "content": "d e"}]
    capped = multi.model_copy(update={"dataset": multi.dataset.model_copy(  # type: ignore
        update={"max_turns": 1})})
    assert len(Plan(capped, tok).round(0, 0).sessions[0].turns) == 1


def test_request_body_passes_extra_fields_through() -> None:
    w = wl(endpoint="chat", num_requests=1,
           extra_body={"chat_template_kwargs": {"enable_thinking": False}, "temperature": 0})
    (s,) = Plan(w, WordTokenizer()).round(0, 0).sessions
    body = request_body(w, s.turns[0])
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    with pytest.raises(ValueError, match="may not set max_tokens"):
        wl(extra_body={"max_tokens": 3})
