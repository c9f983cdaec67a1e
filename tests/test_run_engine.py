"""`autotune run` end to end against the real vLLM CPU engine and the built-in tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import psutil
import pytest

from autotune.engine import ServerSpec, VllmServer
from autotune.objective import free_port
from autotune.profile import Profile, read_profile
from autotune.space import load_space
from tests.conftest import DATA, REAL_LAUNCHER

pytestmark = pytest.mark.engine
SPACE = DATA / "engine_space.yaml"


def vllm_processes() -> list[str]:
    out = []
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "vllm.entrypoints" in cmd or (p.info["name"] or "").startswith("VLLM::"):
            out.append(f"{p.pid} {cmd[:80]}")
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Profile]]:
    """One real 3-trial study, shared by the tests below."""
    work = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
         "builtin:tiny-qwen3", "--space", str(SPACE), "--trials", "3"],
        cwd=work, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "best: trial" in proc.stdout
    path = work / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    yield work, read_profile(path)


def test_study_has_three_measured_trials(tuned: tuple[Path, Profile]) -> None:
    work, profile = tuned
    study = optuna.load_study(study_name=profile.meta.study,
                              storage=f"sqlite:///{work / 'autotune.db'}")
    trials = study.trials
    assert len(trials) == 3
    w = load_space(SPACE).workload
    for t in trials:
        assert t.user_attrs["status"] == "ok", t.user_attrs
        m = t.user_attrs["metrics"]
        assert m["completed"] == w.num_requests and m["failed"] == 0
        assert m["total_output_tokens"] == w.num_requests * w.output_tokens
        assert 0 < m["median_ttft_ms"] < m["median_e2el_ms"]
        assert m["p99_ttft_ms"] <= m["p99_e2el_ms"]
        assert m["output_throughput"] > 0 and m["request_throughput"] > 0
        assert m["peak_memory_bytes"] > 100 * 2**20
        assert m["startup_s"] > 1
        assert m["kv_cache_tokens"] > 0
        cmd = t.user_attrs["command"]
        assert cmd[:3] == list(REAL_LAUNCHER)
        assert f"--max-num-seqs {t.params['max-num-seqs']}" in " ".join(cmd)
        assert t.user_attrs["env"]["VLLM_CPU_KVCACHE_SPACE"] == str(
            t.params["env:VLLM_CPU_KVCACHE_SPACE"])
        result = json.loads((work / "autotune-runs" / profile.meta.study
                             / f"trial-{t.number:04d}" / "result.json").read_text())
        assert result["metrics"]["output_throughput"] == m["output_throughput"]
    # KV cache space (GiB) is really applied: more of it, more KV tokens
    by_kv: dict[str, float] = {}
    for t in trials:
        by_kv[t.user_attrs["env"]["VLLM_CPU_KVCACHE_SPACE"]] = t.user_attrs["metrics"][
            "kv_cache_tokens"]
    if {"1", "2"} <= set(by_kv):
        assert by_kv["2"] > 1.5 * by_kv["1"]
    assert profile.meta.objective["value"] == max(t.value for t in trials)
    assert vllm_processes() == []


def test_vllm_parser_accepts_profile(tuned: tuple[Path, Profile]) -> None:
    work, profile = tuned
    path = work / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    code = (
        "import json,sys\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "ns = make_arg_parser(FlexibleArgumentParser()).parse_args(['--config', sys.argv[1]])\n"
        "print(json.dumps({k: v for k, v in vars(ns).items() if isinstance(v, (int, str))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ns = json.loads(proc.stdout.strip().splitlines()[-1])
    s = profile.settings
    assert ns["model"] == s["model"]
    assert ns["max_num_seqs"] == s["max-num-seqs"]
    assert ns["load_format"] == "dummy"
    assert ns["enforce_eager"] is True


def test_a_fresh_server_from_the_profile_serves(tuned: tuple[Path, Profile]) -> None:
    work, profile = tuned
    path = work / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    spec = ServerSpec(model=None, args={"config": str(path)}, env=profile.meta.env,
                      port=free_port(), launcher=REAL_LAUNCHER)
    with VllmServer(spec, work / "deploy.log", startup_timeout_s=300) as s:
        r = httpx.post(f"{s.base_url}/v1/completions", timeout=60, json={
            "model": profile.settings["model"], "prompt": "the server model",
            "max_tokens": 5, "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 5
        assert s.pid is not None
        env = psutil.Process(s.pid).environ()
        assert env["VLLM_CPU_KVCACHE_SPACE"] == profile.meta.env["VLLM_CPU_KVCACHE_SPACE"]
    # vLLM logs the options it was given: the profile's, read from the file
    log = (work / "deploy.log").read_text()
    assert f"'max_num_seqs': {profile.settings['max-num-seqs']}" in log
    assert "'load_format': 'dummy'" in log
    assert os.environ.get("VLLM_CPU_KVCACHE_SPACE") is None
