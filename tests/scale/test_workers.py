"""Many workers on one study: the shared budget (budget.py) and the confirmation's lease
(lease.py) on a real PostgreSQL server, and trials side by side on one host (slots.py,
workers.py) with the stand-in engine."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from autotune.engine.slots import core_sets, cpu_list
from autotune.space.search import parse_space
from autotune.study.budget import DRAWN
from autotune.study.trials import counted_trials, params_of, shown
from tests.conftest import FAKE_LAUNCHER, here_profile

SPACE_TEXT = """\
name: workers
args:
{startup}  max-num-seqs: 8
  fake-tpot-ms: {{type: categorical, choices: [null, 1, 1.5, 2.5, 3, 4, 6, 8]}}
objective:
  metric: output_throughput
workload:
  num_requests: 16
  concurrency: 4
  input_tokens: 8
  output_tokens: 32
  warmup_requests: 0
  measure: {{min_rounds: 2, max_rounds: 2, min_s: 0}}
pruning: {{enabled: false}}
confirm: {{finalists: 1, rounds: 2}}
sampler: {{n_startup_trials: 2, seed: 0}}
"""


def space_file(tmp: Path, startup: float | None) -> Path:
    """The space; with no `startup`, the stand-in's start time is each tuner's to set
    (FAKE_VLLM_STARTUP_S in its environment)."""
    p = tmp / "space.yaml"
    line = "" if startup is None else f"  fake-startup-s: {startup}\n"
    p.write_text(SPACE_TEXT.format(startup=line))
    return p


def run_argv(space: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
            "builtin:tiny-qwen3", "--space", str(space), "--launcher",
            shlex.join(FAKE_LAUNCHER), "--no-verify-options", *extra]


def measured(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            if not t.user_attrs.get("no_start") and t.user_attrs.get("repeat_of") is None]


def assert_budget_kept(study: optuna.Study, budget: int) -> None:
    """The budget exactly, every candidate measured once, every result recorded."""
    space = parse_space(SPACE_DICT)
    done = measured(study)
    assert counted_trials(study) == budget == len(done)
    seen = [params_of(space, t) for t in done]
    # on failure, every trial of the study: who drew what, when
    story = "\n".join(f"#{t.number} {t.state.name} {t.params} {t.datetime_start} "
                      f"{t.datetime_complete} {sorted(t.user_attrs.items())}"
                      for t in study.get_trials())
    assert len({repr(sorted(p.args.items(), key=str)) for p in seen}) == budget, story
    assert all(t.user_attrs.get("status") == "ok" and t.user_attrs.get("metrics")
               for t in done), "a result was lost"


SPACE_DICT = {"name": "workers", "args": {"fake-tpot-ms": {
    "type": "categorical", "choices": [None, 1, 1.5, 2.5, 3, 4, 6, 8]}},
    "objective": {"metric": "output_throughput"}, "sampler": {"seed": 0}}


# -- trials side by side on one host (the stand-in engine) ----------------------------------

def test_parallel_trials_run_side_by_side_on_disjoint_cores_and_the_password_stays_hidden(
        postgres_url: str, tmp_path: Path) -> None:
    # 5 s starts: the first worker cannot finish all four trials before the second, a cold
    # Python, has joined on a busy machine
    space = space_file(tmp_path, startup=5)
    # the storage named on the command line, its password planted in the URL (libpq would
    # read it from PGPASSWORD otherwise), reaches the other worker through its environment
    password = os.environ["PGPASSWORD"]
    user, rest = postgres_url.split("://", 1)[1].split("@", 1)
    url = f"{postgres_url.split('://')[0]}://{user}:{password}@{rest}"
    name = f"side-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOTUNE_STORAGE", "PGPASSWORD")}
    proc = subprocess.run([*run_argv(space, "--trials", "4", "--parallel", "2", "--storage",
                                     url, "--study", name, "--json", "summary.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "worker 1 (pid" in proc.stdout and "verdict:" in proc.stdout
    assert (tmp_path / here_profile()).exists()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert not (tmp_path / "autotune.db").exists()
    assert counted_trials(study) == 4
    started = [t for t in measured(study) if t.user_attrs.get("slot")]
    slots = {t.user_attrs["slot"] for t in started}
    assert slots == {f"cores {c}" for c in core_sets(sorted(os.sched_getaffinity(0)), 2)
                     for c in [cpu_list(c)]}, slots
    assert len({t.user_attrs["worker"] for t in started}) == 2, "one worker did it all"
    # two servers at once: some pair of trials overlapped in time, on different cores
    overlap = [(a.number, b.number) for a in started for b in started if a.number < b.number
               and a.datetime_start < b.datetime_complete and b.datetime_start <
               a.datetime_complete]
    assert overlap, [(t.number, t.datetime_start, t.datetime_complete) for t in started]
    for t in started:  # each server ran pinned to its slot's cores, and was told so
        log = (tmp_path / "autotune-runs" / study.study_name / f"trial-{t.number:04d}" /
               "server.log").read_text()
        want = t.user_attrs["slot"].removeprefix("cores ")
        assert f"omp-bind: {want}" in log, log[:500]
        pinned = log.split("; cores: [")[1].split("]")[0]
        assert cpu_list([int(c) for c in pinned.split(",")]) == want
        assert cpu_list(t.user_attrs["cores"]) == want  # as the OS said while it ran
    worker_log = (tmp_path / "autotune-runs" / "workers" / "worker-1.log").read_text()
    assert "search done (--search-only)" in worker_log
    assert not [p for p in psutil.process_iter(["cmdline", "cwd"]) if p.info["cwd"] ==
                str(tmp_path) and "fake_vllm" in " ".join(p.info["cmdline"] or [])]
    # the run's summary, profile and logs, then the report of its study: the password
    # printed and written nowhere
    report = subprocess.run([sys.executable, "-m", "autotune.cli", "report", "--study", name,
                             "--storage", url, "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    printed = proc.stdout + proc.stderr + report.stdout + report.stderr
    assert password not in printed and f"{user}:***@" in printed
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert any(f.name == "summary.json" for f in files) and any(f.suffix == ".html"
                                                                 for f in files)
    assert [f for f in files if password.encode() in f.read_bytes()] == []


def test_the_other_workers_get_the_storage_in_their_environment_not_their_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.scale import workers

    url = "postgresql+psycopg://u:s3cret@db/x"
    seen: list[tuple[list[str], dict[str, str]]] = []

    class Popen:
        pid = 1

        def __init__(self, argv: list[str], env: dict[str, str], **_: object) -> None:
            seen.append((argv, env))

        def wait(self, timeout: float) -> int:
            return 0

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", Popen)
    for how, js in ((["--storage", url], "--json"), ([f"--storage={url}"], "--js"),
                    (["--stor", url], "--jso")):
        seen.clear()
        argv = ["run", "--gpu", "cpu", *how, js, "-", "--trials", "4"]
        with workers.spawned(argv, 3, tmp_path, lambda _: None):
            pass
        assert len(seen) == 2
        for args, env in seen:
            assert args[3:] == ["run", "--gpu", "cpu", "--trials", "4", "--search-only",
                                "--quiet"], how
            assert env["AUTOTUNE_STORAGE"] == url
    assert workers.worker_argv(["run", "--study", "s"]) == (
        ["run", "--study", "s", "--search-only", "--quiet"], None)


# -- many workers on one study in PostgreSQL (several at once: tests/test_bench.py, the
# workers bench) ----------------------------------------------------------------------

def _start(argv: list[str], cwd: Path, startup_s: float | None = None
           ) -> subprocess.Popen[str]:
    env = None if startup_s is None else {**os.environ, "FAKE_VLLM_STARTUP_S": str(startup_s)}
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _workers_on(url: str, tmp: Path, prefix: str, startup: float | None, trials: int
                ) -> tuple[str, list[str]]:
    """A new study's name, and the `autotune run` command of its workers (each started in
    its own directory, tmp/a or tmp/b, as on its own machine)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    argv = run_argv(space_file(tmp, startup=startup), "--storage", url, "--study", name,
                    "--trials", str(trials))
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    return name, argv


def test_two_workers_in_postgresql_keep_the_budget_and_confirm_once(
        postgres_url: str, tmp_path: Path) -> None:
    name, argv = _workers_on(postgres_url, tmp_path, "w2", startup=0.5, trials=5)
    a, b = _start(argv, tmp_path / "a"), _start(argv, tmp_path / "b")
    out_a, _ = a.communicate(timeout=600)
    out_b, _ = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert_budget_kept(study, 5)
    assert len({t.user_attrs["worker"] for t in measured(study)}) == 2
    confirmed = [o for o in (out_a, out_b) if "verdict:" in o]
    deferred = [o for o in (out_a, out_b) if "by another worker" in o]
    assert len(confirmed) == 1 and len(deferred) == 1, out_a + out_b
    profiles = list(tmp_path.glob("*/profiles/*/*.yaml"))
    assert len(profiles) == 1, profiles
    lease = [n for n in optuna.get_all_study_names(postgres_url) if n.startswith(name + ":")]
    assert lease == [f"{name}:confirm:5:1"]
    # the password is read by libpq from PGPASSWORD: in no output, log or record
    secret = os.environ["PGPASSWORD"]
    texts = [out_a, out_b, *(p.read_text(errors="replace") for p in tmp_path.rglob("*")
                             if p.is_file() and p.suffix in (".log", ".json", ".yaml"))]
    assert not [t for t in texts if secret in t]
    assert all(secret not in repr(t.user_attrs) for t in study.trials)


def test_a_worker_killed_mid_trial_has_its_candidate_retried_by_the_other(
        postgres_url: str, tmp_path: Path) -> None:
    # a's servers take 30 s to start (it is killed in the first), b's (the same space, the
    # same study) 0.2 s
    name, argv = _workers_on(postgres_url, tmp_path, "wk", startup=None, trials=4)
    a = _start(argv, tmp_path / "a", startup_s=30)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:  # wait for a trial that worker a is measuring
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=postgres_url)
        except KeyError:
            continue
        victim = next((t for t in study.get_trials(states=(TrialState.RUNNING,))
                       if t.user_attrs.get("worker", "").endswith(f":{a.pid}")
                       and t.user_attrs.get(DRAWN)), None)
    # the other worker running when a dies, which it notices by a's silence; a's trial has
    # its settings drawn and its server's start (30 s) still runs when a is killed
    b = _start(argv, tmp_path / "b")
    time.sleep(1.0)
    a.send_signal(signal.SIGKILL)
    a.wait()
    out_b, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out_b
    assert "of a worker that stopped answering" in out_b, out_b
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert_budget_kept(study, 4)
    killed = study.trials[victim.number]
    assert killed.state is TrialState.FAIL
    retry = [t for t in measured(study) if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == killed.params, "the candidate was lost"
    assert retry[0].user_attrs["worker"].endswith(f":{b.pid}")
    assert "verdict:" in out_b and [p for p in tmp_path.glob("b/profiles/*/*.yaml")]
    assert not [t for t in study.trials if not shown(t) and t.state is TrialState.RUNNING]


def test_the_lease_goes_to_one_worker_and_a_later_run_confirms_again(tmp_path: Path) -> None:
    from autotune.scale.lease import STALE_S, Held, Lease, take
    from autotune.study.opening import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", 5, 20)
    t0 = time.time()
    first = take(storage, "s", 6, t0)
    assert isinstance(first, Lease) and first.name == "s:confirm:6:1"
    peer = take(storage, "s", 6, t0)  # a worker of the same run, while it confirms
    assert isinstance(peer, Held) and peer.running and peer.holder.endswith(f":{os.getpid()}")
    first.beat()
    first.done("kept vLLM's defaults")
    late_peer = take(storage, "s", 6, t0)  # finished while this worker was running
    assert isinstance(late_peer, Held) and not late_peer.running
    later_run = take(storage, "s", 6, time.time() + 1)  # resumes the finished study
    assert isinstance(later_run, Lease) and later_run.name == "s:confirm:6:2"
    # a holder that stopped beating long ago died mid-confirmation: the next k
    assert isinstance(take(storage, "s", 8, t0), Lease)
    dead = take(storage, "s", 8, t0, now=time.time() + STALE_S + 60)
    assert isinstance(dead, Lease) and dead.name == "s:confirm:8:2"
    assert isinstance(take(storage, "s", 7, t0), Lease), "more trials: a new search to confirm"
    # an interrupted holder gives the lease up; a holder of this host that is gone lost it
    interrupted = take(storage, "s", 9, t0)
    assert isinstance(interrupted, Lease)
    interrupted.abandon()
    gone = take(storage, "s", 9, t0)
    assert isinstance(gone, Lease) and gone.name == "s:confirm:9:2"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    optuna.load_study(study_name=gone.name, storage=storage).set_user_attr(
        "holder", f"{socket.gethostname()}:{child.pid}")
    after = take(storage, "s", 9, t0)
    assert isinstance(after, Lease) and after.name == "s:confirm:9:3"


def test_parallel_flags_are_checked_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.cli.main import main

    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path, startup=0.1)
    base = ["--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(space),
            "--launcher", shlex.join(FAKE_LAUNCHER), "--no-verify-options"]
    assert main(["retune", *base, "--parallel", "2"]) == 2
    assert "retune runs as one worker" in capsys.readouterr().err
    assert main(["run", *base, "--parallel", "0"]) == 2
    assert "--parallel: 0 is not a number of trials" in capsys.readouterr().err
    too_many = len(os.sched_getaffinity(0)) + 1
    assert main(["run", *base, "--parallel", str(too_many)]) == 2
    assert "each server needs at least one" in capsys.readouterr().err
    assert not (tmp_path / "autotune-runs").exists(), "nothing started"
