from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autotune.core.errors import ConfigError
from autotune.measure.workload import Level, Workload, load_workload


def wl(**kw: object) -> Workload:
    return Workload.model_validate(kw)


def test_level_needs_one_mode() -> None:
    with pytest.raises(ValueError, match="exactly one of concurrency or rate"):
        Level(concurrency=2, rate=3)
    with pytest.raises(ValueError, match="apply to rate levels"):
        Level(concurrency=2, burstiness=0.5)


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


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


def test_multi_turn_needs_chat(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multi-turn dataset needs endpoint: chat"):
        wl(dataset={"path": "x", "format": "sharegpt", "multi_turn": True})


def test_bad_workload_file_names_field(tmp_path: Path) -> None:
    f = write(tmp_path, "w.yaml", yaml.safe_dump({"input_tokens": {"dist": "zipf"}}))
    with pytest.raises(ConfigError) as e:
        load_workload(f)
    assert str(e.value).startswith(f"{f}: input_tokens")
    f2 = write(tmp_path, "w2.yaml", yaml.safe_dump({"levels": [{"rate": -1}]}))
    with pytest.raises(ConfigError, match=r"levels\[0\]\.rate: .*greater than 0"):
        load_workload(f2)


def test_measure_rule_is_checked_in_the_workload_file(tmp_path: Path) -> None:
    f = write(tmp_path, "w.yaml", yaml.safe_dump({"measure": {"min_s": 60, "max_s": 30}}))
    with pytest.raises(ConfigError, match=r"w.yaml: measure: min_s \(60\) is above max_s"):
        load_workload(f)
    f2 = write(tmp_path, "w2.yaml", yaml.safe_dump({"measure": {"target_ci": "tight"}}))
    with pytest.raises(ConfigError, match=r"measure\.target_ci"):
        load_workload(f2)
