from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from autotune.core.errors import EnvironmentFailure, FailureReason, TrialFailure
from autotune.engine.argv import ServerSpec, build_command, build_env, option_argv, redact
from autotune.engine.logs import (
    classify_startup_failure,
    kv_cache_bytes,
    kv_cache_tokens,
    setup_failure_cause,
)
from autotune.engine.server import VllmServer, free_port
from tests.conftest import FAKE_LAUNCHER, strays


def test_option_argv_follows_vllm_conventions() -> None:
    assert option_argv("enforce-eager", True) == ["--enforce-eager"]
    assert option_argv("enable-prefix-caching", False) == ["--no-enable-prefix-caching"]
    assert option_argv("max-num-seqs", 8) == ["--max-num-seqs", "8"]
    assert option_argv("cudagraph-capture-sizes", [1, 2]) == ["--cudagraph-capture-sizes",
                                                              "1", "2"]
    assert option_argv("compilation-config", {"mode": 3}) == ["--compilation-config",
                                                              '{"mode":3}']


def test_build_command_for_both_launchers() -> None:
    spec = ServerSpec(model="m", args={"max-num-seqs": 4, "enforce-eager": True},
                      port=1234, api_key="k",
                      launcher=("python", "-m", "vllm.entrypoints.openai.api_server"))
    assert build_command(spec) == [
        "python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m",
        "--max-num-seqs", "4", "--enforce-eager", "--host", "127.0.0.1", "--port", "1234"]
    # the key travels in the environment, never on the command line; the user's own is dropped
    assert build_env(spec, {"VLLM_API_KEY": "mine"})["VLLM_API_KEY"] == "k"
    assert "VLLM_API_KEY" not in build_env(replace(spec, api_key=None), {"VLLM_API_KEY": "x"})
    serve = ServerSpec(model="Qwen/Qwen3-0.6B", args={}, port=1, launcher=("vllm", "serve"))
    assert build_command(serve)[:3] == ["vllm", "serve", "Qwen/Qwen3-0.6B"]
    assert not any(w.startswith("--api-key") for w in build_command(serve))
    assert redact(["x", "--api-key", "-k", "--port", "1"]) == ["x", "--api-key", "***", "--port",
                                                               "1"]


def test_build_env_overlays_space_env_and_pins_gpu_order() -> None:
    spec = ServerSpec(model="m", env={"VLLM_CPU_KVCACHE_SPACE": "2", "CUDA_DEVICE_ORDER": "X"})
    env = build_env(spec, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "2", "CUDA_DEVICE_ORDER": "X"}
    assert build_env(ServerSpec(model="m"), {})["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize(("log", "reason"), [
    ("api_server: error: unrecognized arguments: --max-num-seqz 3", FailureReason.INVALID_ARGS),
    ("ValueError: Available memory on node 0 (7.6 GiB) is less than desired CPU memory "
     "utilization (0.92)", FailureReason.OOM_AT_STARTUP),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate", FailureReason.OOM_AT_STARTUP),
    ("Segmentation fault (core dumped)", FailureReason.STARTUP_CRASH),
])
def test_classify_startup_failure(log: str, reason: FailureReason) -> None:
    assert classify_startup_failure("INFO starting\n" + log) is reason


def test_kv_cache_tokens_from_log() -> None:
    text = "(EngineCore) INFO CPU KV cache size: 920,064 tokens, Maximum concurrency ..."
    assert kv_cache_tokens(text) == 920064
    assert kv_cache_tokens("GPU KV cache size: 12 tokens") == 12
    assert kv_cache_tokens("nothing") is None


def fake_server(tmp_path: Path, **args: object) -> VllmServer:
    spec = ServerSpec(model="fake", args=args, port=free_port(), api_key="secret",
                      launcher=FAKE_LAUNCHER)
    return VllmServer(spec, tmp_path / "server.log", startup_timeout_s=120, stop_timeout_s=5,
                      poll_interval_s=0.05)


def test_server_starts_serves_and_leaves_nothing(tmp_path: Path) -> None:
    with fake_server(tmp_path) as s:
        pid = s.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert s.startup_s is not None and s.startup_s > 0
        assert s.alive()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "Starting vLLM server" in (tmp_path / "server.log").read_text()


def test_crash_at_startup_is_classified_quickly(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(TrialFailure) as e, fake_server(tmp_path, **{"fake-crash": True}):
        pass
    assert e.value.reason is FailureReason.STARTUP_CRASH
    assert "Engine core initialization failed" in e.value.log_tail
    assert time.monotonic() - t0 < 25  # neither the 120 s start deadline nor the stop timeout


def test_memory_refusal_is_oom(tmp_path: Path) -> None:
    with pytest.raises(TrialFailure) as e, fake_server(tmp_path,
                                                       **{"gpu-memory-utilization": 0.95}):
        pass
    assert e.value.reason is FailureReason.OOM_AT_STARTUP


def test_bad_flag_is_invalid_args(tmp_path: Path) -> None:
    with pytest.raises(TrialFailure) as e, fake_server(tmp_path, **{"max-num-seqz": 3}):
        pass
    assert e.value.reason is FailureReason.INVALID_ARGS


def test_hang_times_out_and_is_killed(tmp_path: Path) -> None:
    s = fake_server(tmp_path, **{"fake-hang": True})
    s.startup_timeout_s = 1.5
    with pytest.raises(TrialFailure) as e, s:
        pass
    assert e.value.reason is FailureReason.STARTUP_TIMEOUT
    assert s.proc is None
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if "--fake-hang" in (cmd := " ".join(p.info["cmdline"] or []))
                 and f"--port {s.spec.port}" in cmd]
    assert leftovers == []


def test_exception_inside_block_still_stops_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), fake_server(tmp_path) as s:
        pid = s.pid
        raise RuntimeError("boom")
    assert pid is not None
    with pytest.raises(psutil.NoSuchProcess):
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            raise psutil.NoSuchProcess(pid)


def test_server_env_reaches_process(tmp_path: Path) -> None:
    spec = ServerSpec(model="fake", port=free_port(), env={"AUTOTUNE_PROBE_VAR": "42"},
                      launcher=FAKE_LAUNCHER)
    with VllmServer(spec, tmp_path / "s.log", startup_timeout_s=120) as s:
        assert s.pid is not None
        assert psutil.Process(s.pid).environ().get("AUTOTUNE_PROBE_VAR") == "42"
    assert os.environ.get("AUTOTUNE_PROBE_VAR") is None


def test_engine_death_in_the_log_ends_the_start_at_once_even_if_the_server_lingers(
        tmp_path: Path) -> None:
    # the stand-in logs the engine's death, then lingers silent and deaf to SIGTERM
    s = fake_server(tmp_path, **{"fake-engine-dead": True, "fake-ignore-sigterm": True})
    s.startup_timeout_s = 60
    t0 = time.monotonic()
    with pytest.raises(TrialFailure) as e, s:
        pass
    assert e.value.reason is FailureReason.STARTUP_CRASH
    assert "its log says so" in e.value.detail
    assert time.monotonic() - t0 < 25  # neither the 120 s start deadline nor the stop timeout
    assert s.proc is None


def test_a_child_that_left_the_group_is_stopped_too(tmp_path: Path) -> None:
    with fake_server(tmp_path, **{"fake-stray": True}) as s:
        assert s.pid is not None
        tag = f"port={s.spec.port}"
        (stray,) = strays(tag)
        assert os.getpgid(stray.pid) != os.getpgid(s.pid)  # out of the server's group
    assert psutil.wait_procs([stray], timeout=5)[1] == []
    assert strays(tag) == []


@pytest.fixture
def squatted() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_taken_before_the_server_binds_it_is_retried_on_another(
        tmp_path: Path, squatted: int) -> None:
    s = fake_server(tmp_path)
    s.spec = replace(s.spec, port=squatted)
    s.argv = build_command(s.spec)
    with s:
        assert s.spec.port != squatted and s.alive()
        assert f"--port={s.spec.port}" in s.argv or str(s.spec.port) in s.argv
    text = (tmp_path / "server.log").read_text()
    assert f"port {squatted} was taken by another process: starting again on port " \
           f"{s.spec.port} (not the candidate's fault)" in text


def test_ports_taken_again_and_again_are_the_machines_fault(
        tmp_path: Path, squatted: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.engine.server.free_port", lambda host="": squatted)
    s = fake_server(tmp_path)
    s.spec = replace(s.spec, port=squatted)
    s.argv = build_command(s.spec)
    with pytest.raises(EnvironmentFailure, match=r"\(3 ports in a row\)"), s:
        pass
    assert s.proc is None


@pytest.mark.parametrize(("log", "cause"), [
    ("ModuleNotFoundError: No module named 'vllm._C'",
     "the engine's Python lacks a module (vllm._C)"),
    ("RuntimeError: Cannot find any model weights with `/m`", "the model has no weights"),
    ("OSError: Can't load tokenizer for '/m'.", "the model's tokenizer cannot be loaded"),
    ("ImportError: libcudart.so.12: cannot open shared object file",
     "the engine install is broken (libcudart.so.12: cannot open shared object file)"),
    ("torch.OutOfMemoryError: CUDA out of memory", None),  # a setting can change that
    ("ValueError: max_num_batched_tokens (16) is smaller than max_model_len", None),
])
def test_causes_no_setting_can_change(log: str, cause: str | None) -> None:
    assert setup_failure_cause(log) == cause


@pytest.mark.parametrize(("log", "gib"), [
    ("INFO [gpu_worker.py:298] Available KV cache memory: 12.5 GiB", 12.5),
    ("Auto set (3.23/13.09) GiB for KV cache on node 0, with 3.93 GiB requested memory", 3.23),
    ("Explicitly set (1.0/13.09) GiB for KV cache on node 0.", 1.0),
    ("Auto set (1.5/8.00) GiB for KV cache on node 0\nAuto set (1.5/8.00) GiB for KV cache "
     "on node 1", 3.0),
    ("nothing about it", None),
])
def test_kv_cache_bytes_from_log(log: str, gib: float | None) -> None:
    got = kv_cache_bytes(log)
    assert got == (None if gib is None else int(gib * 2**30))
