"""A scripted machine for tests: the GPUs and memory readings you choose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from autotune.engine.probes import (
    CpuInfo,
    DeviceInfo,
    TreeMemory,
    host_cpu,
    process_tree_memory,
    process_tree_rss,
)


@dataclass
class FakeProbe:
    """Satisfies `autotune.engine.probes.Probe`. GPUs are scripted; host memory is real unless
    scripted."""

    devices: tuple[DeviceInfo, ...] = ()
    gpu_used: Callable[[Sequence[int]], int] = field(default=lambda idx: 0)
    gpu_process: Callable[[Sequence[int], Sequence[int]], int | None] = field(
        default=lambda pids, idx: None)
    tree: Callable[[int], TreeMemory] = field(default=process_tree_memory)
    rss: Callable[[int], TreeMemory] = field(default=process_tree_rss)  # the cheap reading
    host_available: Callable[[], int] = field(default=lambda: 16 * 2**30)
    host_total: int = field(default_factory=lambda: int(psutil.virtual_memory().total))
    host: CpuInfo = field(default_factory=host_cpu)  # this machine's CPU unless scripted
    driver: dict[str, str] = field(default_factory=dict)

    def gpus(self) -> tuple[DeviceInfo, ...]:
        return self.devices

    def gpu_memory_used(self, indices: Sequence[int]) -> int:
        return self.gpu_used(indices)

    def gpu_process_memory(self, pids: Sequence[int], indices: Sequence[int]) -> int | None:
        return self.gpu_process(pids, indices)

    def process_tree_memory(self, pid: int) -> TreeMemory:
        return self.tree(pid)

    def process_tree_rss(self, pid: int) -> TreeMemory:
        return self.rss(pid)

    def host_memory_available(self) -> int:
        return self.host_available()

    def host_memory_total(self) -> int:
        return self.host_total

    def cpu(self) -> CpuInfo:
        return self.host

    def gpu_driver(self) -> dict[str, str]:
        return dict(self.driver)
