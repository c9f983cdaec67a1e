"""A scripted machine for tests: the GPUs and memory readings you choose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from autotune.probes import DeviceInfo, process_tree_rss


@dataclass
class FakeProbe:
    """Satisfies `autotune.probes.Probe`. GPUs are scripted; RSS is real unless scripted."""

    devices: tuple[DeviceInfo, ...] = ()
    gpu_used: Callable[[Sequence[int]], int] = field(default=lambda idx: 0)
    rss: Callable[[int], int] = field(default=process_tree_rss)
    host_available: Callable[[], int] = field(default=lambda: 16 * 2**30)

    def gpus(self) -> tuple[DeviceInfo, ...]:
        return self.devices

    def gpu_memory_used(self, indices: Sequence[int]) -> int:
        return self.gpu_used(indices)

    def process_tree_rss(self, pid: int) -> int:
        return self.rss(pid)

    def host_memory_available(self) -> int:
        return self.host_available()
