from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.builtin_model import WORDS, ensure_builtin_model
from autotune.errors import UserError
from autotune.models import resolve_model


def test_generates_a_qwen3_generation_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    d = ensure_builtin_model("tiny-qwen3")
    assert d.parent == tmp_path / "models"
    cfg = json.loads((d / "config.json").read_text())
    # without `architectures` vLLM serves it as a pooling model and /v1/completions is a 404
    assert cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert cfg["model_type"] == "qwen3"
    assert cfg["num_hidden_layers"] == 4 and cfg["vocab_size"] == 1024
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    assert len(tok) <= cfg["vocab_size"]
    # one token per corpus word: the workload's prompt lengths are exact for this model
    text = " ".join(WORDS[:50])
    assert len(tok(text)["input_ids"]) == 50
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    # cached: the second call does not regenerate
    mtime = (d / "config.json").stat().st_mtime_ns
    assert ensure_builtin_model("tiny-qwen3") == d
    assert (d / "config.json").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "models").iterdir()] == [d.name], "no temp dirs left"


def test_resolve_builtin_adds_dummy_weights(tiny_model: Path) -> None:
    r = resolve_model("builtin:tiny-qwen3")
    assert r.path == str(tiny_model)
    assert r.args == {"load-format": "dummy"}


def test_unknown_builtin() -> None:
    with pytest.raises(UserError, match="unknown built-in model"):
        resolve_model("builtin:gpt-5")


def test_local_directory_needs_config(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).path == str(tmp_path.resolve())
