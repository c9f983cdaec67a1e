"""The other workers of a `--parallel N` run: N-1 `autotune run --search-only` processes on
the same study, started for the search and gone with it.

They share the study through its storage (budget.py) and the machine through the slot pool
(slots.py); the run that started them confirms and writes the profile. They are in the run's
process group (Ctrl-C reaches them all) and die with it (PDEATHSIG), whatever ends it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from autotune.study.storage import STORAGE_ENV

# how long the workers may take to end on their own once this one's search is over (each
# ends once nothing is left and no trial runs; this one waited for that already)
END_S = 60.0


def _is(token: str, flag: str, shortest: int) -> bool:
    """Whether `token` (before any `=`) names `flag`, abbreviated as argparse allows."""
    name = token.split("=", 1)[0]
    return len(name) >= shortest and flag.startswith(name)


def worker_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The run's own arguments for a search-only worker (no summary file, no progress), and
    the storage URL it was given: that travels in the worker's environment, not on its
    command line, where `ps` would show its password to every user of the machine."""
    out: list[str] = []
    storage: str | None = None
    it = iter(argv)
    for a in it:
        for flag, shortest in (("--json", 3), ("--storage", 5)):
            if _is(a, flag, shortest):
                value = a.split("=", 1)[1] if "=" in a else next(it, "")
                if flag == "--storage":
                    storage = value
                break
        else:
            out.append(a)
    return [*out, "--search-only", "--quiet"], storage


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def spawned(argv: Sequence[str], n: int, log_dir: Path,
            say: Callable[[str], None]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        args, storage = worker_argv(argv)
        env = dict(os.environ) if storage is None else {**os.environ, STORAGE_ENV: storage}
        for i in range(1, n):
            log = log_dir / f"worker-{i}.log"
            with log.open("ab") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "autotune.cli", *args], env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent))
            say(f"worker {i} (pid {procs[-1].pid}): trials side by side with this one; "
                f"its log: {log}")
        yield procs
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=END_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # its servers stop with it
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


__all__ = ["spawned", "worker_argv"]
