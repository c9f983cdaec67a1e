"""Faults injected into the real vLLM CPU engine: each ends as a classified, recorded failure,
fast, and leaves no process behind."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from autotune.app.trial import TrialSetup, run_trial
from autotune.core.errors import FailureReason
from autotune.measure.plan import Plan
from autotune.measure.workload import Workload
from autotune.model.tokens import ModelTokenizer
from autotune.space.params import TrialParams
from autotune.space.search import EngineSettings
from autotune.testing.fake_probe import FakeProbe
from tests.conftest import DATA, REAL_LAUNCHER

pytestmark = pytest.mark.engine

BASE = {"load-format": "dummy", "enforce-eager": True, "max-model-len": 512}


def vllm_descendants() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("VLLM::") or "vllm.entrypoints" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def setup(tiny_model: Path, tmp_path: Path, **workload: object) -> TrialSetup:
    w = Workload.model_validate({"num_requests": 8, "concurrency": 2, "input_tokens": 16,
                                 "output_tokens": 8, "warmup_requests": 0,
                                 "measure": {"min_rounds": 1, "max_rounds": 1, "min_s": 0},
                                 **workload})
    return TrialSetup(model=str(tiny_model), launcher=REAL_LAUNCHER,
                      plan=Plan(w, ModelTokenizer(str(tiny_model))),
                      engine=EngineSettings(startup_timeout_s=300, stop_timeout_s=20),
                      probe=FakeProbe(), base_args=dict(BASE), api_key="k")


def test_bad_flag_fails_as_invalid_args(tiny_model: Path, tmp_path: Path) -> None:
    r = run_trial(TrialParams(args={"max-num-seqz": 4}), setup(tiny_model, tmp_path),
                  tmp_path / "t")
    assert r.status == "failed" and r.reason is FailureReason.INVALID_ARGS
    assert "unrecognized arguments: --max-num-seqz" in r.log_tail
    # the parser's refusal ended it, not the start-up deadline (asked of the path, not a clock)
    assert "not healthy after" not in r.detail
    assert vllm_descendants() == []


def test_memory_the_machine_cannot_give_fails_like_an_oom(tiny_model: Path, tmp_path: Path
                                                          ) -> None:
    # On CPU this fraction of the NUMA node's memory cannot be reserved, like a GPU OOM.
    r = run_trial(TrialParams(args={"gpu-memory-utilization": 0.99}),
                  setup(tiny_model, tmp_path), tmp_path / "t")
    assert r.status == "failed" and r.reason is FailureReason.OOM_AT_STARTUP, r.detail
    assert "memory" in r.log_tail
    # vLLM's refusal ended it, not the start-up deadline (asked of the path, not a clock)
    assert "not healthy after" not in r.detail
    assert vllm_descendants() == []


def test_engine_killed_mid_benchmark(tiny_model: Path, tmp_path: Path) -> None:
    s = setup(tiny_model, tmp_path, num_requests=400, output_tokens=200, concurrency=4)
    log = tmp_path / "t" / "server.log"
    killed: list[float] = []

    def kill_engine_once_serving() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if log.exists() and "POST /v1/completions" in log.read_text(errors="replace"):
                for p in vllm_descendants():
                    if p.name() == "VLLM::EngineCore":
                        time.sleep(1.0)
                        p.send_signal(signal.SIGKILL)
                        killed.append(time.monotonic())
                        return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_engine_once_serving)
    killer.start()
    r = run_trial(TrialParams(args={"gpu-memory-utilization": 0.3, "max-num-seqs": 4}), s,
                  tmp_path / "t")
    done = time.monotonic()
    killer.join()
    assert killed, "the engine was never seen serving"
    assert r.status == "failed"
    assert r.reason is FailureReason.DIED_DURING_BENCHMARK, (r.reason, r.detail)
    # 400 requests x 200 tokens would take minutes: the death ended the trial at once
    assert done - killed[0] < 90
    assert vllm_descendants() == []


def test_sigkilled_tuner_leaves_no_vllm_process_even_mid_compilation(tmp_path: Path) -> None:
    # a compiled server (not eager), as the shipped CPU space draws them, killed while
    # torch.compile runs in its worker (vLLM's own process tree, not the tests' one-process
    # server): the watchdog leaves nothing of the server behind
    space = tmp_path / "compiled.yaml"
    text = (DATA / "engine_space.yaml").read_text()
    one_process = next(ln for ln in text.splitlines() if "VLLM_ENABLE_V1_MULTIPROCESSING" in ln)
    space.write_text(text.replace("enforce-eager: true", "enforce-eager: false")
                     .replace(one_process + "\n", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
         "builtin:tiny-qwen3", "--space", str(space), "--trials", "1",
         "--no-verify-options"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            logs = list(tmp_path.glob("autotune-runs/*/trial-0000/server.log"))
            if logs and "Warming up model for the compilation" in logs[0].read_text():
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the server never began compiling")
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "VLLM::Worker" for p in family if p.is_running())
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    # anything the tuner started runs in its directory: a server, its engine, its workers,
    # compile workers, and any child of theirs that left the process group (one born after
    # the snapshot above is the watchdog's to find: it is given 30 s, as bench.kills gives it)
    def leftovers() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if (Path(p.cwd()).is_relative_to(tmp_path)
                        and p.status() != psutil.STATUS_ZOMBIE):
                    found.append(p)
        return found

    deadline = time.monotonic() + 30
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers() == []
