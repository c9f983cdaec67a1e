from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from autotune.errors import ConfigError
from autotune.workload import (
    Level,
    Workload,
    arrival_offsets,
    load_workload,
    plan,
    request_body,
    sample_lengths,
)


def wl(**kw: object) -> Workload:
    return Workload.model_validate(kw)


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


def test_synthetic_plan_has_declared_lengths_and_distinct_prompts() -> None:
    w = wl(input_tokens={"dist": "uniform", "low": 5, "high": 50},
           output_tokens={"dist": "fixed", "value": 33}, num_requests=40, warmup_requests=3,
           shared_prefix_tokens=12, seed=4, levels=[{"concurrency": 2}, {"rate": 5}],
           repeats=2)
    p = plan(w)
    assert len(p.warmup) == 3
    assert [(lp.level.label, lp.repeat) for lp in p.levels] == [
        ("concurrency=2", 0), ("concurrency=2", 1), ("rate=5/s, poisson", 0),
        ("rate=5/s, poisson", 1)]
    prompts = [s.turns[0].text for lp in p.levels for s in lp.sessions]
    assert len(prompts) == 160 and len(set(prompts)) == 160
    prefix = prompts[0].split()[:12]
    lengths = []
    for text in prompts:
        words = text.split()
        assert words[:12] == prefix
        lengths.append(len(words) - 12)
    assert min(lengths) >= 5 and max(lengths) <= 50
    assert {t.max_tokens for lp in p.levels for s in lp.sessions for t in s.turns} == {33}
    assert plan(w) == p, "seeded: the same workload gives the same plan"
    assert plan(w.model_copy(update={"seed": 5})) != p


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


def test_level_needs_one_mode() -> None:
    with pytest.raises(ValueError, match="exactly one of concurrency or rate"):
        Level(concurrency=2, rate=3)
    with pytest.raises(ValueError, match="apply to rate levels"):
        Level(concurrency=2, burstiness=0.5)


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
    sessions = plan(w).levels[0].sessions
    got = sorted({(s.turns[0].text, s.turns[0].max_tokens) for s in sessions})
    assert got == [("four five", 9), ("one two three", 4)]


def test_chat_messages_dataset(tmp_path: Path) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    d = write(tmp_path, "d.jsonl", json.dumps({"messages": msgs}) + "\n")
    w = wl(endpoint="chat", dataset={"path": str(d)}, num_requests=1, warmup_requests=0)
    (s,) = plan(w).levels[0].sessions
    assert request_body(w, s.turns[0])["messages"] == msgs


@pytest.mark.parametrize(("text", "where", "msg"), [
    ('{"prompt": "ok"}\n{"prompt": "a",\n', "line 2", "malformed JSON"),
    ('{"prompt": "ok"}\n{"promt": "a"}\n', "line 2", "unknown key 'promt'"),
    ('{"prompt": "ok", "output_tokens": 0}\n', "line 1", "output_tokens must be a positive"),
    ('{"messages": [{"role": "user", "content": "x"}]}\n', "line 1",
     "messages need endpoint: chat"),
    ('[1, 2]\n', "line 1", "expected a JSON object"),
    ('{"output_tokens": 3}\n', "line 1", "needs prompt or messages"),
])
def test_malformed_dataset_lines_are_named(tmp_path: Path, text: str, where: str, msg: str
                                           ) -> None:
    d = write(tmp_path, "d.jsonl", text)
    f = write(tmp_path, "w.yaml", yaml.safe_dump({"dataset": {"path": "d.jsonl"}}))
    with pytest.raises(ConfigError) as e:
        load_workload(f)
    assert str(e.value).startswith(f"{d}: {where}: {msg}"), str(e.value)


def test_sharegpt_single_and_multi_turn(tmp_path: Path) -> None:
    convs = [
        {"conversations": [{"from": "human", "value": "a b c"}, {"from": "gpt", "value": "x y"},
                           {"from": "human", "value": "d e"}, {"from": "gpt", "value": "z"}]},
        {"conversations": [{"from": "gpt", "value": "no question"}]},
    ]
    d = write(tmp_path, "sg.json", json.dumps(convs))
    single = wl(dataset={"path": str(d), "format": "sharegpt"}, num_requests=2,
                warmup_requests=0)
    sessions = plan(single).levels[0].sessions
    assert [[(t.text, t.max_tokens) for t in s.turns] for s in sessions] == [[("a b c", 2)]] * 2
    multi = wl(endpoint="chat", dataset={"path": str(d), "format": "sharegpt",
                                         "multi_turn": True}, num_requests=1, warmup_requests=0)
    (s,) = plan(multi).levels[0].sessions
    assert [(t.text, t.max_tokens) for t in s.turns] == [("a b c", 2), ("d e", 1)]
    history = [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "x y"}]
    assert request_body(multi, s.turns[1], history)["messages"] == [
        *history, {"role": "user", "content": "d e"}]
    capped = multi.model_copy(update={"dataset": multi.dataset.model_copy(  # type: ignore
        update={"max_turns": 1})})
    assert len(plan(capped).levels[0].sessions[0].turns) == 1


def test_multi_turn_needs_chat(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multi-turn dataset needs endpoint: chat"):
        wl(dataset={"path": "x", "format": "sharegpt", "multi_turn": True})


def test_request_body_passes_extra_fields_through() -> None:
    w = wl(endpoint="chat", extra_body={"chat_template_kwargs": {"enable_thinking": False},
                                        "temperature": 0})
    (s,) = plan(w.model_copy(update={"num_requests": 1})).levels[0].sessions
    body = request_body(w, s.turns[0])
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    with pytest.raises(ValueError, match="may not set max_tokens"):
        wl(extra_body={"max_tokens": 3})


def test_bad_workload_file_names_field(tmp_path: Path) -> None:
    f = write(tmp_path, "w.yaml", yaml.safe_dump({"input_tokens": {"dist": "zipf"}}))
    with pytest.raises(ConfigError) as e:
        load_workload(f)
    assert str(e.value).startswith(f"{f}: input_tokens")
    f2 = write(tmp_path, "w2.yaml", yaml.safe_dump({"levels": [{"rate": -1}]}))
    with pytest.raises(ConfigError, match=r"levels\[0\]\.rate: .*greater than 0"):
        load_workload(f2)
