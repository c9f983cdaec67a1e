"""The machine: NVML and psutil behind one small protocol (`Probe`), with a fake for tests."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TreeMemory:
    """One reading of a process tree's host memory, in bytes."""

    pss: int = 0
    uss: int = 0
    rss: int = 0
    pids: tuple[int, ...] = ()


def process_tree_memory(pid: int) -> TreeMemory:
    """PSS, USS and RSS summed over a process and its descendants (vLLM runs its engine and
    workers as children); zeros once the process is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return TreeMemory()
    pss = uss = rss = 0
    pids = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            full = p.memory_full_info()
            pss += getattr(full, "pss", full.uss)
            uss += full.uss
            rss += full.rss
            pids.append(p.pid)
    return TreeMemory(pss, uss, rss, tuple(pids))


def process_tree_rss(pid: int) -> TreeMemory:
    """RSS alone summed over the tree (pss and uss 0): `/proc/PID/statm`, well under a
    millisecond a process, where PSS and USS make the kernel walk its page tables."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return TreeMemory()
    rss = 0
    pids = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            pids.append(p.pid)
    return TreeMemory(rss=rss, pids=tuple(pids))


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    memory_total_bytes: int


@dataclass(frozen=True)
class CpuInfo:
    name: str
    flags: tuple[str, ...]  # the CPU_FEATURES it has
    cores: int  # the cores this process may run on


class Probe(Protocol):
    """What the tuner needs to know about the machine, and how it reads memory."""

    def gpus(self) -> tuple[DeviceInfo, ...]: ...
    def gpu_memory_used(self, indices: Sequence[int]) -> int: ...
    def gpu_process_memory(self, pids: Sequence[int], indices: Sequence[int]) -> int | None: ...
    def process_tree_memory(self, pid: int) -> TreeMemory: ...
    def process_tree_rss(self, pid: int) -> TreeMemory: ...
    def host_memory_available(self) -> int: ...
    def host_memory_total(self) -> int: ...
    def cpu(self) -> CpuInfo: ...
    def gpu_driver(self) -> dict[str, str]: ...


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


def usable_cores() -> int:
    """The cores this process may run on (a container's or `taskset`'s share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return psutil.cpu_count() or 1


def host_cpu() -> CpuInfo:
    return CpuInfo(cpu_name(), tuple(sorted(cpu_flags())), usable_cores())


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

    def gpu_process_memory(self, pids: Sequence[int], indices: Sequence[int]) -> int | None:
        """GPU memory that NVML counts for these processes on these GPUs; None where NVML
        does not say (a driver that hides it, or a container whose PIDs NVML cannot see)."""
        if self._nvml is None:
            return None
        nv = self._nvml
        wanted = set(pids)
        total, seen = 0, False
        for i in indices:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid in wanted and p.usedGpuMemory is not None:
                    total += int(p.usedGpuMemory)
                    seen = True
        return total if seen else None

    def process_tree_memory(self, pid: int) -> TreeMemory:
        return process_tree_memory(pid)

    def process_tree_rss(self, pid: int) -> TreeMemory:
        return process_tree_rss(pid)

    def host_memory_available(self) -> int:
        return int(psutil.virtual_memory().available)

    def host_memory_total(self) -> int:
        return int(psutil.virtual_memory().total)

    def cpu(self) -> CpuInfo:
        return host_cpu()

    def gpu_driver(self) -> dict[str, str]:
        """NVML's driver version and the CUDA version that driver supports."""
        if self._nvml is None:
            return {}
        nv, out = self._nvml, {}
        with contextlib.suppress(Exception):
            v = nv.nvmlSystemGetDriverVersion()
            out["driver"] = v.decode() if isinstance(v, bytes) else str(v)
        with contextlib.suppress(Exception):
            c = int(nv.nvmlSystemGetCudaDriverVersion())
            out["cuda"] = f"{c // 1000}.{c % 1000 // 10}"
        return out
