from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.core.errors import UserError
from autotune.model.builtin import WORDS, ensure_builtin_model
from autotune.model.resolve import resolve_model


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


# Qwen/Qwen3-0.6B's config.json on the model hub: the facts the built-in copy must equal
QWEN3_0_6B_FACTS = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
    "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": True, "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
    "max_window_layers": 28, "use_sliding_window": False, "sliding_window": None,
}


def test_qwen3_0_6b_has_the_real_models_shape_and_a_generated_tokenizer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    r = resolve_model("builtin:qwen3-0.6b")
    assert r.args == {"load-format": "dummy"}
    cfg = json.loads((Path(r.path) / "config.json").read_text())
    assert {k: cfg.get(k) for k in QWEN3_0_6B_FACTS} == QWEN3_0_6B_FACTS
    # the hub's file says rope_theta; transformers 5 writes it under rope_parameters
    assert cfg.get("rope_theta", cfg.get("rope_parameters", {}).get("rope_theta")) == 1e6
    assert cfg.get("torch_dtype", cfg.get("dtype")) == "bfloat16"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(r.path)
    ids = tok(" ".join(WORDS))["input_ids"]
    assert len(ids) == len(WORDS) and max(ids) < cfg["vocab_size"]
    assert cfg["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    # its own cache entry: the tiny model is not overwritten by it, nor it by the tiny one
    assert Path(r.path).name.startswith("qwen3-0.6b-")


def test_the_tiny_models_config_is_unchanged_by_the_second_shape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cached tiny model is reused across releases (same recipe version): its config must
    # be what the recipe wrote before the 0.6B shape existed
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    cfg = json.loads((ensure_builtin_model("tiny-qwen3") / "config.json").read_text())
    assert {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "num_key_value_heads", "head_dim",
                                "vocab_size", "max_position_embeddings")} == {
        "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "vocab_size": 1024, "max_position_embeddings": 4096}
