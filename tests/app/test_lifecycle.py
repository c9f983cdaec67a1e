"""The tuner's own life: killed, interrupted and resumed, it leaks no server and loses no trial.

These drive the real CLI in a child process against the stand-in server, so the tuner can be
SIGKILLed; tests/engine/test_faults_engine.py repeats the SIGKILL case with the real engine.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import psutil
import pytest

from tests.conftest import DATA, FAKE_LAUNCHER, here_profile, strays

SPACE = DATA / "lifecycle_space.yaml"


def cli(work: Path, trials: int, space: Path = SPACE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
         "builtin:tiny-qwen3", "--space", str(space), "--trials", str(trials),
         "--launcher", shlex.join(FAKE_LAUNCHER), "--no-verify-options"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # a suite started in the background (or by a runner that ignores SIGINT) passes the
        # ignored SIGINT on: give the tuner the disposition a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(cond: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            out = ""
            if proc is not None:
                proc.kill()
                out = proc.communicate()[0]
            raise AssertionError(f"timed out waiting for {what}; tuner said:\n{out}")
        time.sleep(0.1)


def wait_until_serving(work: Path, proc: subprocess.Popen[str], trial: int) -> None:
    """Until trial `trial`'s server (its parameters chosen) is up and serving."""
    log = work / "autotune-runs" / "cpu.builtin-tiny-qwen3.lifecycle" / f"trial-{trial:04d}" / \
        "server.log"
    wait_for(lambda: log.exists() and "Starting vLLM server" in log.read_text()
             and bool(servers_of(proc)), 120, f"trial {trial}'s server to serve", proc)


def servers_of(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "autotune.testing.fake_vllm" in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            continue
    return out


def gone(procs: list[psutil.Process]) -> bool:
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def study(work: Path) -> optuna.Study:
    name = "cpu.builtin-tiny-qwen3.lifecycle"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'autotune.db'}")


def completed(work: Path) -> int:
    if not (work / "autotune.db").exists():
        return 0
    try:
        return len(study(work).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    except KeyError:
        return 0


def test_sigkill_mid_study_then_resume(tmp_path: Path) -> None:
    proc = cli(tmp_path, trials=4)
    try:
        wait_until_serving(tmp_path, proc, 2)
        servers = servers_of(proc)
        proc.kill()  # SIGKILL: no handler, no finally, no atexit in the tuner
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: gone(servers), 60, "the orphaned server to be killed by its watchdog")
    before = {t.number: (t.params, t.value) for t in study(tmp_path).trials
              if t.state.name == "COMPLETE"}
    interrupted = [t for t in study(tmp_path).trials if t.state.name == "RUNNING"]
    assert len(before) == 2 and len(interrupted) == 1
    # past the heartbeat grace period, a resumed run sees the trial's tuner is dead
    time.sleep(21)
    again = cli(tmp_path, trials=4)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    s = study(tmp_path)
    done = [t for t in s.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4, "--trials is the total, across runs"
    after = {t.number: (t.params, t.value) for t in done}
    assert all(after[n] == v for n, v in before.items()), "no finished trial lost or re-run"
    stale = s.trials[interrupted[0].number]
    assert stale.state.name == "FAIL"
    assert stale.params in [t.params for t in done if t.number > stale.number], \
        "the interrupted candidate was measured again"
    assert (tmp_path / here_profile()).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_server_and_requeues_the_candidate(tmp_path: Path,
                                                               sig: signal.Signals) -> None:
    proc = cli(tmp_path, trials=3)
    try:
        wait_until_serving(tmp_path, proc, 1)
        servers = servers_of(proc)
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "run again to continue" in out
    assert "Traceback" not in out, out  # one line says it, Optuna's log of the trial not
    assert gone(servers)
    s = study(tmp_path)
    states = [t.state.name for t in s.trials]
    assert states[:2] == ["COMPLETE", "FAIL"] and states[2] == "WAITING"
    # queued (WAITING) with the interrupted candidate's parameters
    assert s.trials[2].system_attrs["fixed_params"] == s.trials[1].params != {}


def stubborn_space(work: Path) -> Path:
    """The lifecycle space on a server that ignores SIGTERM and leaves a child outside its
    process group."""
    text = SPACE.read_text().replace("  fake-tpot-ms: 20\n", "  fake-tpot-ms: 20\n"
                                     "  fake-ignore-sigterm: true\n  fake-stray: true\n")
    assert "fake-stray" in text
    out = work / "stubborn.yaml"
    out.write_text(text)
    return out


def test_a_sigkilled_tuner_leaves_no_stray_outside_the_group(tmp_path: Path) -> None:
    proc = cli(tmp_path, trials=2, space=stubborn_space(tmp_path))
    try:
        wait_until_serving(tmp_path, proc, 0)
        servers = servers_of(proc)
        assert len(strays(f"cwd={tmp_path}")) == 1
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # the watchdog: the group (deaf to SIGTERM: killed after 3 s) and the stray in its own
    # session, within a few seconds (60: a CI machine running three parts at once took over
    # 20 once)
    wait_for(lambda: gone(servers) and strays(f"cwd={tmp_path}") == [], 60,
             "the server and its stray to die")


def test_sigterm_ends_the_tuner_in_seconds_whatever_its_server_does(tmp_path: Path) -> None:
    # a stop timeout of 120 s: a tuner that waited it out for a server deaf to SIGTERM could
    # not end within 60 s, however fast the machine
    space = stubborn_space(tmp_path)
    space.write_text(space.read_text() + "engine: {stop_timeout_s: 120}\n")
    proc = cli(tmp_path, trials=2, space=space)
    try:
        wait_until_serving(tmp_path, proc, 0)
        servers = servers_of(proc)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert took < 60, f"{took:.1f} s"  # not the stop timeout: the server ignores SIGTERM
    assert gone(servers) and strays(f"cwd={tmp_path}") == []
