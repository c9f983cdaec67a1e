"""What a user sees while a run goes: the live display on a terminal (in a pseudo-terminal,
while the stand-in server starts), plain lines in a pipe, nothing with --quiet, and the
JSON summary for other tools."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from autotune.cli.live import RunView, last_line
from autotune.core.events import Phase, emit, listening
from autotune.core.stats import Estimate
from autotune.measure.result import TrialResult
from autotune.study.tuner import TrialReport
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SLOW_START = " ".join([*FAKE_LAUNCHER, "--fake-startup-s", "3"])


def cli(*extra: str) -> list[str]:
    return [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
            "builtin:tiny-qwen3", "--space", str(DATA / "engine_space.yaml"), "--trials", "1",
            "--no-verify-options", *extra]


def screen(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "\n")


def ok(number: int, value: float, baseline: bool = False, left: int = 0) -> TrialReport:
    r = TrialResult(status="ok", command=[], env={}, metrics={"output_throughput": Estimate(
        value=value, low=value * 0.9, high=value * 1.1, n=3, basis="rounds")})
    return TrialReport(number, {"max-num-seqs": None if baseline else number}, value, True, r,
                       baseline=baseline, left=left)


def text_of(view: RunView) -> str:
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(view.render())
    return console.export_text()


def test_the_panel_follows_the_phases_and_estimates_from_trial_durations(tmp_path: Path
                                                                         ) -> None:
    now = [100.0]
    view = RunView(budget=4, now=lambda: now[0])
    assert "preparing" in text_of(view) and "ETA after the first trial" in text_of(view)
    log = tmp_path / "server.log"
    log.write_text("INFO loading weights\n\nINFO Starting vLLM API server on :8000\n\n")
    with listening(view.on_phase):
        emit(Phase("trial-0000", "starting", log=log))
        now[0] += 12
        shown = text_of(view)
        assert "trial 0: starting the server (0:12)" in shown
        assert "log: INFO Starting vLLM API server on :8000" in shown
        emit(Phase("trial-0000", "warming"))
        assert "server up, warming up" in text_of(view)
        emit(Phase("trial-0000", "measuring", level="concurrency=4", round=2,
                   interval=Estimate(value=100, low=90, high=110, n=2, basis="rounds"),
                   metric="output_throughput"))
        assert "measuring concurrency=4, round 2: output_throughput 100 [90, 110]" \
            in text_of(view)
    view.on_trial(ok(0, 100.0, baseline=True, left=3))
    shown = text_of(view)
    # one trial took 12 s; three are left: about 36 s
    assert "trials done 1, 3 left of the budget" in shown
    assert "ETA 0:36 (median trial 0:12)" in shown
    with listening(view.on_phase):
        emit(Phase("trial-0001", "starting", log=tmp_path / "none.log"))
    now[0] += 20
    view.on_trial(ok(1, 250.0, left=2))
    shown = text_of(view)
    assert "ETA 0:32 (median trial 0:16)" in shown
    # the best so far, best first
    assert shown.index("trial 1") < shown.index("trial 0 (vLLM defaults)")
    assert "max-num-seqs=1" in shown
    view.on_confirm(4)
    assert "ETA 1:36" in text_of(view)  # 2 trials and 4 confirmation starts of 16 s
    assert last_line(tmp_path / "none.log") == ""
    with listening(view.on_phase):
        emit(Phase("round-02-vllm-defaults", "warming"))
    assert "confirmation round 2, vllm-defaults: server up, warming up" in text_of(view)


def read_all(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    out = b""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_a_terminal_shows_the_server_starting_with_its_log(tmp_path: Path) -> None:
    """(A pipe gets plain lines: the --json run of the test below, its lines on standard
    error.)"""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(cli("--launcher", SLOW_START), cwd=tmp_path, stdin=slave,
                            stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        raw = read_all(master, proc, 300)
    finally:
        proc.wait(timeout=60)
        os.close(master)
    assert proc.returncode == 0, raw[-3000:]
    text = raw.decode("utf-8", "replace")
    assert ANSI.search(text), "a terminal gets a redrawn panel"
    seen = screen(text)
    # what the panel showed while the stand-in server started, its log's last line with it
    assert "trial 0: starting the server" in seen, seen[-3000:]
    assert "log: fake vLLM starting" in seen
    assert "measuring concurrency=4, round " in seen
    assert "ETA " in seen and "best so far" in seen
    assert "trial 0 (vLLM defaults): output_throughput" in seen  # the lines stay above
    assert "verdict: " in seen and (tmp_path / here_profile()).exists()

def test_quiet_says_only_the_verdict_json_goes_to_standard_output_a_pipe_gets_plain_lines(
        tmp_path: Path) -> None:
    quiet = subprocess.run(cli("--launcher", " ".join(FAKE_LAUNCHER), "--quiet"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert [x.split(":")[0] for x in quiet.stdout.splitlines()] == ["verdict", "profile"]
    js = subprocess.run(cli("--launcher", " ".join(FAKE_LAUNCHER), "--json", "-", "--study",
                            "json"), cwd=tmp_path, capture_output=True, text=True,
                        timeout=300, check=False)
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)  # standard output is the summary alone
    assert doc["decided"] and doc["study"] == "json"
    assert doc["profile"] == str(here_profile())
    (t0,) = doc["trials"]
    assert t0["status"] == "ok" and t0["metrics"]["output_throughput"]["n"] >= 3
    assert doc["confirmation"]["metric"] == "output_throughput"
    assert "verdict: " in js.stderr and "trial 0 (vLLM defaults)" in js.stderr
    # a pipe gets plain lines, the panel's redrawn lines none
    assert not ANSI.search(js.stderr) and "starting the server" not in js.stderr
    lines = js.stderr.splitlines()
    assert any(x.startswith("trial 0 (vLLM defaults): output_throughput") for x in lines)
    assert any(x.startswith("verdict: ") for x in lines)
