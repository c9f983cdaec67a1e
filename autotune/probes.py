"""Hardware and memory: NVML and psutil behind one small protocol, with a fake for tests."""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from autotune.errors import UserError

log = logging.getLogger(__name__)

# --gpu targets: the name NVML reports must contain the pattern (None: the CPU engine).
KNOWN_TARGETS: dict[str, str | None] = {
    "cpu": None,
    "t4": "T4",
    "a10g": "A10G",
    "a10": "A10",
    "l4": "L4",
    "l40s": "L40S",
    "a100-40gb": "A100",
    "a100-80gb": "A100",
    "h100": "H100",
    "h200": "H200",
    "b200": "B200",
}


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    memory_total_bytes: int


@dataclass(frozen=True)
class HardwareInfo:
    target: str
    cpu: str
    cpu_count: int
    memory_total_bytes: int
    gpus: tuple[DeviceInfo, ...] = ()
    cpu_flags: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "cpu": self.cpu,
            "cpu_flags": list(self.cpu_flags),
            "cpu_count": self.cpu_count,
            "memory_total_gib": round(self.memory_total_bytes / 2**30, 1),
            "gpus": [{"index": g.index, "name": g.name,
                      "memory_total_gib": round(g.memory_total_bytes / 2**30, 1)}
                     for g in self.gpus],
        }


class Probe(Protocol):
    """What the tuner needs to know about the machine, and how it reads memory."""

    def gpus(self) -> tuple[DeviceInfo, ...]: ...
    def gpu_memory_used(self, indices: Sequence[int]) -> int: ...
    def process_tree_rss(self, pid: int) -> int: ...
    def host_memory_available(self) -> int: ...


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# Instruction-set features that change which CPU settings win (measured: which dtype is fast
# differs between AVX2-only and AVX-512-with-BF16 hosts).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> frozenset[str]:
    """The CPU_FEATURES this host has (from /proc/cpuinfo; empty where it cannot be read)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return frozenset(set(line.split(":", 1)[1].split()) & set(CPU_FEATURES))
    return frozenset()


def process_tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (vLLM runs engine and workers as children)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class SystemProbe:
    """The real machine: psutil for host memory, NVML (nvidia-ml-py) for GPUs when present."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # no driver, no library: a CPU host
            log.debug("NVML not available: %s", exc)

    def gpus(self) -> tuple[DeviceInfo, ...]:
        if self._nvml is None:
            return ()
        nv = self._nvml
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            if isinstance(name, bytes):
                name = name.decode()
            out.append(DeviceInfo(i, str(name), int(nv.nvmlDeviceGetMemoryInfo(h).total)))
        return tuple(out)

    def gpu_memory_used(self, indices: Sequence[int]) -> int:
        if self._nvml is None:
            return 0
        nv = self._nvml
        return sum(int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(i)).used)
                   for i in indices)

    def process_tree_rss(self, pid: int) -> int:
        return process_tree_rss(pid)

    def host_memory_available(self) -> int:
        return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class MemoryBaseline:
    """The machine's memory before the first server: what must come back between trials."""

    gpu_used: int
    host_available: int
    gpu_tolerance: int
    host_tolerance: int

    @classmethod
    def take(cls, probe: Probe, gpu_indices: Sequence[int]) -> MemoryBaseline:
        host_total = psutil.virtual_memory().total
        gpu_total = sum(g.memory_total_bytes for g in probe.gpus() if g.index in gpu_indices)
        return cls(gpu_used=probe.gpu_memory_used(gpu_indices) if gpu_indices else 0,
                   host_available=probe.host_memory_available(),
                   gpu_tolerance=max(512 * 2**20, gpu_total // 50),
                   # other processes on the host come and go: only a large gap counts
                   host_tolerance=max(2 * 2**30, host_total // 10))


def wait_for_memory(probe: Probe, baseline: MemoryBaseline, gpu_indices: Sequence[int],
                    timeout_s: float, poll_s: float = 0.5) -> str | None:
    """Wait until memory is back to the baseline; return why not at the deadline, else None."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    warned = False
    while True:
        gpu = probe.gpu_memory_used(gpu_indices) if gpu_indices else 0
        host = probe.host_memory_available()
        problems = []
        if gpu > baseline.gpu_used + baseline.gpu_tolerance:
            problems.append(f"GPU memory in use is {(gpu - baseline.gpu_used) / 2**30:.1f} GiB "
                            "above the baseline")
        if host < baseline.host_available - baseline.host_tolerance:
            short = (baseline.host_available - host) / 2**30
            problems.append(f"host memory available is {short:.1f} GiB below the baseline")
        if not problems:
            return None
        if time.monotonic() >= deadline:
            return "; ".join(problems) + f" after waiting {timeout_s:.0f} s"
        if not warned and time.monotonic() - t0 > 5:
            log.warning("waiting for memory to come back before the next trial: %s",
                        "; ".join(problems))
            warned = True
        time.sleep(poll_s)


def detect_hardware(target: str, probe: Probe, devices: Sequence[int] | None = None
                    ) -> HardwareInfo:
    """Check `--gpu` against the machine; one clear line when they disagree."""
    if target not in KNOWN_TARGETS:
        known = ", ".join(KNOWN_TARGETS)
        raise UserError(f"--gpu: unknown target {target!r} (known: {known})")
    gpus = probe.gpus()
    pattern = KNOWN_TARGETS[target]
    chosen: tuple[DeviceInfo, ...] = ()
    if pattern is not None:
        if not gpus:
            raise UserError(f"--gpu {target}: no NVIDIA GPU found on this machine (NVML)")
        by_index = {g.index: g for g in gpus}
        idx = list(devices) if devices else [gpus[0].index]
        for i in idx:
            if i not in by_index:
                raise UserError(f"--devices: no GPU with index {i} (found {len(gpus)})")
        chosen = tuple(by_index[i] for i in idx)
        for g in chosen:
            if pattern.lower() not in g.name.lower():
                raise UserError(f"--gpu {target}: GPU {g.index} is a {g.name!r}")
    return HardwareInfo(target=target, cpu=cpu_name(), cpu_count=psutil.cpu_count() or 1,
                        memory_total_bytes=psutil.virtual_memory().total, gpus=chosen,
                        cpu_flags=tuple(sorted(cpu_flags())))


@dataclass
class MemoryPeaks:
    rss_bytes: int = 0
    gpu_bytes: int = 0  # peak of the sum over the watched GPUs
    per_gpu: dict[int, int] = field(default_factory=dict)  # peak of each GPU on its own
    samples: int = 0


class MemorySampler:
    """Samples the server's memory on a thread while a `with` block runs; keeps the peaks."""

    def __init__(self, probe: Probe, pid: int, gpu_indices: Sequence[int] = (),
                 interval_s: float = 0.25) -> None:
        self.probe = probe
        self.pid = pid
        self.gpu_indices = tuple(gpu_indices)
        self.interval_s = interval_s
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> None:
        rss = self.probe.process_tree_rss(self.pid)
        each = {i: self.probe.gpu_memory_used([i]) for i in self.gpu_indices}
        gpu = sum(each.values())
        for i, used in each.items():
            self.peaks.per_gpu[i] = max(self.peaks.per_gpu.get(i, 0), used)
        self.peaks.rss_bytes = max(self.peaks.rss_bytes, rss)
        self.peaks.gpu_bytes = max(self.peaks.gpu_bytes, gpu)
        self.peaks.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a probe error must not kill the measurement
                log.debug("memory sample failed: %s", exc)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.sample()
