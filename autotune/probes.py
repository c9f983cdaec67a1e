"""The machine: NVML and psutil behind one small protocol (`Probe`), with a fake for tests."""

from __future__ import annotations

import contextlib
import logging
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from autotune.errors import UserError
from autotune.memory import TreeMemory, process_tree_memory

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class GpuKind:
    """What a `--gpu` target's card looks like to NVML: its model name as a whole word of the
    name NVML reports, and the memory NVML reports for it (GiB, inclusive)."""

    model: str
    min_gib: float
    max_gib: float

    def matches(self, name: str, memory_total_bytes: int) -> bool:
        word = re.search(rf"(?<![A-Za-z0-9]){re.escape(self.model)}(?![A-Za-z0-9])", name,
                         re.IGNORECASE)
        return bool(word) and self.min_gib <= memory_total_bytes / 2**30 <= self.max_gib


# --gpu targets (None: the CPU engine). Names as NVML gives them, e.g. "NVIDIA A10G",
# "NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA H100 80GB HBM3", "Tesla T4":
# an A10 is not an A10G nor an A100, an L4 not an L40S, and the two A100s differ by memory.
KNOWN_TARGETS: dict[str, GpuKind | None] = {
    "cpu": None,
    "t4": GpuKind("T4", 14, 16.5),
    "a10g": GpuKind("A10G", 21, 24.5),
    "a10": GpuKind("A10", 21, 24.5),
    "l4": GpuKind("L4", 21, 24.5),
    "l40s": GpuKind("L40S", 43, 48.5),
    "a100-40gb": GpuKind("A100", 38, 40.5),
    "a100-80gb": GpuKind("A100", 78, 80.5),
    "h100": GpuKind("H100", 78, 96),
    "h200": GpuKind("H200", 138, 144),
    "b200": GpuKind("B200", 175, 193),
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
    def gpu_process_memory(self, pids: Sequence[int], indices: Sequence[int]) -> int | None: ...
    def process_tree_memory(self, pid: int) -> TreeMemory: ...
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

    def host_memory_available(self) -> int:
        return int(psutil.virtual_memory().available)


def detect_hardware(target: str, probe: Probe, devices: Sequence[int] | None = None
                    ) -> HardwareInfo:
    """Check `--gpu` against the machine; one clear line when they disagree."""
    if target not in KNOWN_TARGETS:
        known = ", ".join(KNOWN_TARGETS)
        raise UserError(f"--gpu: unknown target {target!r} (known: {known})")
    gpus = probe.gpus()
    kind = KNOWN_TARGETS[target]
    chosen: tuple[DeviceInfo, ...] = ()
    if kind is not None:
        if not gpus:
            raise UserError(f"--gpu {target}: no NVIDIA GPU found on this machine (NVML)")
        by_index = {g.index: g for g in gpus}
        idx = list(devices) if devices else [gpus[0].index]
        for i in idx:
            if i not in by_index:
                raise UserError(f"--devices: no GPU with index {i} (found {len(gpus)})")
        chosen = tuple(by_index[i] for i in idx)
        for g in chosen:
            if not kind.matches(g.name, g.memory_total_bytes):
                raise UserError(f"--gpu {target}: GPU {g.index} is a {g.name!r} with "
                                f"{g.memory_total_bytes / 2**30:.1f} GiB (a {target} is an "
                                f"{kind.model} with {kind.min_gib:g}-{kind.max_gib:g} GiB)")
    return HardwareInfo(target=target, cpu=cpu_name(), cpu_count=psutil.cpu_count() or 1,
                        memory_total_bytes=psutil.virtual_memory().total, gpus=chosen,
                        cpu_flags=tuple(sorted(cpu_flags())))
