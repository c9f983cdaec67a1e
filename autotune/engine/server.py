"""The server context manager: one vLLM server process group, started, watched and stopped."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from autotune.core.errors import EnvironmentFailure, FailureReason, TrialFailure
from autotune.engine.argv import ServerSpec, build_command, build_env, redact
from autotune.engine.logs import (
    _ENGINE_DEAD,
    _FATAL_OOM,
    _PORT_TAKEN,
    classify_startup_failure,
    tail,
)
from autotune.engine.watchdog import OWNER_MARK, marked_processes

log = logging.getLogger(__name__)


SHORT_GRACE_S = 2.0  # the SIGTERM grace of a failed, interrupted or hung server
PORT_ATTEMPTS = 3  # a port taken between choosing it and binding it: try new ones


class _PortTaken(Exception):
    """The port chosen for the server was bound by another process first."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL the server if the tuner dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _child_setup(cpus: tuple[int, ...]) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the child before exec
        _set_pdeathsig()
        if cpus:
            os.sched_setaffinity(0, cpus)  # inherited by every process the server starts
    return setup


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client of this process: httpx would build one for each
    client, loading the system's certificates (a fiftieth of a second of CPU) every start."""
    return httpx.create_ssl_context()


class VllmServer:
    """Owns one server process group: nothing it started outlives its `with` block."""

    def __init__(self, spec: ServerSpec, log_path: Path, *, startup_timeout_s: float = 600.0,
                 stop_timeout_s: float = 30.0, poll_interval_s: float = 0.5,
                 on_start: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.on_start = on_start  # called with the server's pid as soon as it is spawned
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self.argv = build_command(spec)
        self.proc: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.mark = ""

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> VllmServer:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                # start() too: an interrupt between spawning the server and returning must
                # not leave it running
                self.start()
                self.wait_ready()
                return self
            except _PortTaken as exc:
                self.stop(SHORT_GRACE_S)
                if attempt == PORT_ATTEMPTS:
                    raise EnvironmentFailure(
                        f"{exc} ({PORT_ATTEMPTS} ports in a row): is another process "
                        "grabbing ports?") from None
                new = replace(self.spec, port=free_port(self.spec.host))
                self._note(f"{exc}: starting again on port {new.port} "
                           "(not the candidate's fault)")
                self.spec, self.argv = new, build_command(new)
            except BaseException:
                # a start that failed or was interrupted has nothing worth a graceful shutdown
                self.stop(SHORT_GRACE_S)
                raise
        raise AssertionError("unreachable")

    def _note(self, line: str) -> None:
        log.warning("%s", line)
        with self.log_path.open("a") as f:
            f.write(f"autotune: {line}\n")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        # interrupted (Ctrl-C, SIGTERM), or the trial failed (a hung or dying server): the
        # user wants the tuner gone in seconds, and a graceful shutdown is not worth waiting for
        self.stop(None if ev is None else SHORT_GRACE_S)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting server: %s", " ".join(redact(self.argv)))
        self.mark = secrets.token_hex(8)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env={**build_env(self.spec, os.environ), OWNER_MARK: self.mark},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(self.spec.cpus) if sys.platform == "linux" else None,
            )
        self._t0 = time.monotonic()
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "autotune.engine.watchdog", str(os.getpid()),
             repr(psutil.Process().create_time()), str(self.proc.pid), self.mark],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        if self.on_start is not None:
            self.on_start(self.proc.pid)

    def cores(self) -> list[int]:
        """The cores the server's processes may run on (all of them together), as the OS
        reports them now: what pinning it to its share of the machine did."""
        out: set[int] = set()
        with contextlib.suppress(psutil.Error):
            if self.proc is not None:
                root = psutil.Process(self.proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        out.update(p.cpu_affinity() or [])
        return sorted(out)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The log's end, as trials record it and reports show it: the API key vLLM prints
        among its arguments hidden."""
        text = tail(self.log_path, max_bytes)
        return text.replace(self.spec.api_key, "***") if self.spec.api_key else text

    def log_head(self, max_bytes: int = 1_000_000) -> str:
        """The start-up part of the log (the access log that follows can be long)."""
        try:
            with self.log_path.open("rb") as f:
                return f.read(max_bytes).decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = self._t0 + self.startup_timeout_s
        headers = {"Authorization": f"Bearer {self.spec.api_key}"} if self.spec.api_key else {}
        # asked often at first, then every poll_interval_s: a quick server is seen at once,
        # and a slow one (a real engine's half minute) is not asked 20 times a second
        pause = min(0.05, self.poll_interval_s)
        with httpx.Client(timeout=2.0, headers=headers, verify=_tls()) as http:
            while True:
                code = self.proc.poll()
                if code is not None:
                    text = self.log_tail()
                    if _PORT_TAKEN.search(text):
                        raise _PortTaken(f"port {self.spec.port} was taken by another process")
                    reason = classify_startup_failure(text)
                    raise TrialFailure(reason, f"server exited with code {code} during start-up",
                                       text)
                text = self.log_tail()
                # Fail as soon as the log says so, not when the process gets round to dying.
                if _FATAL_OOM.search(text):
                    raise TrialFailure(FailureReason.OOM_AT_STARTUP,
                                       "server reported insufficient memory", text)
                if _ENGINE_DEAD.search(text):
                    head = self.log_head()
                    raise TrialFailure(classify_startup_failure(head + text),
                                       "the engine failed to start (its log says so)", text)
                if self._answers_health(http):
                    if not self._listens():
                        # someone else's server answered on our port
                        raise _PortTaken(f"port {self.spec.port} is served by another process")
                    self.startup_s = time.monotonic() - self._t0
                    log.info("server ready in %.1f s", self.startup_s)
                    return
                if time.monotonic() >= deadline:
                    raise TrialFailure(FailureReason.STARTUP_TIMEOUT,
                                       f"not healthy after {self.startup_timeout_s:.0f} s",
                                       self.log_tail())
                time.sleep(pause)
                pause = min(pause * 1.5, self.poll_interval_s)

    def _listens(self) -> bool:
        """Whether the port is bound by this server's own processes (True where the system
        does not let us see its sockets: only a clear "someone else" counts)."""
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        seen = False
        for p in procs:
            with contextlib.suppress(psutil.Error):
                for c in p.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN and c.laddr and \
                            c.laddr.port == self.spec.port:
                        return True
                seen = True
        return not seen

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, wait_s: float = 5.0) -> bool:
        """Alive and answering /health. A server whose engine died may linger a few seconds
        refusing work before it exits: wait up to `wait_s` for either to settle."""
        deadline = time.monotonic() + wait_s
        with httpx.Client(timeout=2.0, verify=_tls()) as http:
            while True:
                if not self.alive():
                    return False
                if self._answers_health(http):
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.25)

    def _answers_health(self, http: httpx.Client) -> bool:
        try:
            return http.get(f"{self.base_url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the whole group, wait up to `grace_s` (default the stop timeout), then
        SIGKILL what is left, including strays outside the group: every process that carries
        this server's mark in its environment (a child that made a session of its own, or
        whose parent died)."""
        proc = self.proc
        if proc is None:
            return
        grace = self.stop_timeout_s if grace_s is None else grace_s
        family = {p.pid: p for p in marked_processes(self.mark)}
        with contextlib.suppress(psutil.Error):
            family[proc.pid] = psutil.Process(proc.pid)
            family.update((c.pid, c) for c in psutil.Process(proc.pid).children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("server did not stop in %.0f s: killing it", grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        family.update((p.pid, p) for p in marked_processes(self.mark))
        for p in family.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        _, alive = psutil.wait_procs(list(family.values()), timeout=self.stop_timeout_s)
        if alive:
            log.error("processes still alive after stop: %s", [p.pid for p in alive])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        self.proc = None
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
            self.watchdog = None
