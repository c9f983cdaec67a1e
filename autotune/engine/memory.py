"""The server's memory, named for what it is, sampled from its start to its stop.

Host memory is the process tree's PSS (proportional set size: each shared page split among the
processes sharing it, so a sum over the tree counts it once) and USS (pages only the tree holds:
what stopping the server gives back). RSS would count the pages that the API server, the engine
and its workers share (torch, the model's mapped weights) once per process.

GPU memory is the server's own processes as NVML reports them; the whole card's "used" figure,
roughly `gpu-memory-utilization` times its size, is kept too but under its own name.

Reading PSS makes the kernel walk a process's page tables: about 100 ms of system time for
vLLM's four CPU processes on a 2-core host, each time (issue 33), where RSS (`/proc/PID/statm`)
costs under a millisecond. So the sampler reads RSS every second and PSS/USS only when they can
have moved: at the first sample, when the tree gains or loses a process, when its RSS has risen
past the last full reading's by `RISE` (at most once in `FULL_GAP_S`), every `FULL_EVERY_S`
whatever happens, and once at the end of the load (`sample(full=True)`). PSS cannot rise
without RSS rising, or the tree's pages being unshared within it (slow drift the periodic read
finds); while the load runs, the cost is a full reading every half minute.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from autotune.engine.probes import Probe, TreeMemory

log = logging.getLogger(__name__)


@dataclass
class MemoryPeaks:
    host_pss_bytes: int = 0
    host_uss_bytes: int = 0
    host_rss_bytes: int = 0  # kept for reference: counts shared pages once per process
    # the server's processes on the watched GPUs (NVML); None where NVML does not say
    gpu_process_bytes: int | None = None
    gpu_device_used_bytes: int = 0  # the watched cards' whole "used", whoever uses it
    per_gpu_device_used: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    full_samples: int = 0  # of which PSS and USS were read too


def memory_metrics(peaks: MemoryPeaks, on_gpu: bool) -> dict[str, float]:
    """A trial's memory figures by name. `peak_memory_bytes`, the one that scores and
    constrains, is the server's own: its GPU processes on a GPU (the cards' whole use where
    NVML does not give the processes'), its host PSS on the CPU engine."""
    out = {"peak_host_pss_bytes": float(peaks.host_pss_bytes),
           "peak_host_uss_bytes": float(peaks.host_uss_bytes),
           "peak_host_rss_bytes": float(peaks.host_rss_bytes)}
    if on_gpu:
        out["peak_gpu_device_used_bytes"] = float(peaks.gpu_device_used_bytes)
        for i, used in sorted(peaks.per_gpu_device_used.items()):
            out[f"peak_gpu{i}_device_used_bytes"] = float(used)
        if peaks.gpu_process_bytes is not None:
            out["peak_gpu_process_bytes"] = float(peaks.gpu_process_bytes)
        out["peak_memory_bytes"] = float(peaks.gpu_device_used_bytes
                                         if peaks.gpu_process_bytes is None
                                         else peaks.gpu_process_bytes)
    else:
        out["peak_memory_bytes"] = float(peaks.host_pss_bytes)
    return out


RISE = 0.01  # RSS above the last full reading's by this share (and RISE_BYTES) reads PSS again
RISE_BYTES = 16 * 2**20
FULL_GAP_S = 5.0  # at most one full reading in this long on a rise
FULL_EVERY_S = 30.0  # a full reading at least this often, whatever RSS does


class MemorySampler:
    """Samples a server's memory on a thread from `watch(pid)` (or entering with a pid) until
    the `with` block ends; keeps the peaks."""

    def __init__(self, probe: Probe, pid: int | None = None, gpu_indices: Sequence[int] = (),
                 interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.pid = pid
        self.gpu_indices = tuple(gpu_indices)
        self.interval_s = interval_s
        self.clock = clock
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._full: TreeMemory | None = None  # the last full reading
        self._full_at = 0.0

    def _wants_full(self, cheap: TreeMemory, now: float) -> bool:
        last = self._full
        if last is None or set(cheap.pids) != set(last.pids):
            return True
        if now - self._full_at >= FULL_EVERY_S:
            return True
        rose = cheap.rss > last.rss * (1 + RISE) and cheap.rss - last.rss > RISE_BYTES
        return rose and now - self._full_at >= FULL_GAP_S

    def sample(self, full: bool = False) -> None:
        """RSS (and the GPUs) now; PSS and USS too where `full` or they may have moved."""
        if self.pid is None:
            return
        now = self.clock()
        tree = self.probe.process_tree_rss(self.pid)
        if full or self._wants_full(tree, now):
            tree = self.probe.process_tree_memory(self.pid)
            self._full, self._full_at = tree, now
            self.peaks.full_samples += 1
        each = {i: self.probe.gpu_memory_used([i]) for i in self.gpu_indices}
        own = (self.probe.gpu_process_memory(tree.pids, self.gpu_indices)
               if self.gpu_indices and tree.pids else None)
        p = self.peaks
        for i, used in each.items():
            p.per_gpu_device_used[i] = max(p.per_gpu_device_used.get(i, 0), used)
        p.host_pss_bytes = max(p.host_pss_bytes, tree.pss)  # (0 on a cheap reading)
        p.host_uss_bytes = max(p.host_uss_bytes, tree.uss)
        p.host_rss_bytes = max(p.host_rss_bytes, tree.rss)
        p.gpu_device_used_bytes = max(p.gpu_device_used_bytes, sum(each.values()))
        if own is not None:
            p.gpu_process_bytes = max(p.gpu_process_bytes or 0, own)
        p.samples += 1

    def sample_quietly(self, full: bool = False) -> None:
        """A sample now; a probe error is logged, never raised (the measurement goes on)."""
        try:
            self.sample(full)
        except Exception as exc:
            log.debug("memory sample failed: %s", exc)

    def watch(self, pid: int) -> None:
        """Sample `pid` from now on (call right after the server is spawned; again if it is
        started anew)."""
        self.pid = pid
        self._full = None
        self.sample_quietly()  # a probe error must not fail the start
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-sampler",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_quietly()

    def __enter__(self) -> MemorySampler:
        if self.pid is not None:
            self.watch(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# GiB of host memory that may stay missing between trials before the machine is unfit to
# measure (default: the larger of 2 GiB and a tenth of the host's memory)
HOST_TOLERANCE_ENV = "AUTOTUNE_HOST_MEMORY_TOLERANCE_GIB"


@dataclass(frozen=True)
class MemoryBaseline:
    """The machine's memory before the first server: what must come back between trials."""

    gpu_used: int
    host_available: int
    gpu_tolerance: int
    host_tolerance: int
    # each GPU's own memory in use: with trials side by side (--parallel), a trial waits only
    # for the GPUs it takes, and never for host memory that the other servers hold
    gpu_by_index: dict[int, int] = field(default_factory=dict)
    check_host: bool = True

    @classmethod
    def take(cls, probe: Probe, gpu_indices: Sequence[int]) -> MemoryBaseline:
        host_total = psutil.virtual_memory().total
        gpu_total = sum(g.memory_total_bytes for g in probe.gpus() if g.index in gpu_indices)
        # other processes on the host come and go: only a large gap counts (on a host shared
        # with jobs that take more, say how large in HOST_TOLERANCE_ENV)
        host_tolerance = max(2 * 2**30, host_total // 10)
        if os.environ.get(HOST_TOLERANCE_ENV):
            try:
                host_tolerance = int(float(os.environ[HOST_TOLERANCE_ENV]) * 2**30)
            except ValueError:
                log.warning("%s=%r is not a number of GiB: ignored", HOST_TOLERANCE_ENV,
                            os.environ[HOST_TOLERANCE_ENV])
        return cls(gpu_used=probe.gpu_memory_used(gpu_indices) if gpu_indices else 0,
                   host_available=probe.host_memory_available(),
                   gpu_tolerance=max(512 * 2**20, gpu_total // 50),
                   host_tolerance=host_tolerance,
                   gpu_by_index={i: probe.gpu_memory_used([i]) for i in gpu_indices})

    def side_by_side(self) -> MemoryBaseline:
        """The check for trials that run beside others: per GPU, no host memory."""
        return dataclasses.replace(self, check_host=False)


def wait_for_memory(probe: Probe, baseline: MemoryBaseline, gpu_indices: Sequence[int],
                    timeout_s: float, poll_s: float = 0.5) -> str | None:
    """Wait until memory is back to the baseline; return why not at the deadline, else None."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    warned = False
    while True:
        problems = []
        if baseline.gpu_by_index and gpu_indices:
            share = baseline.gpu_tolerance // max(1, len(baseline.gpu_by_index))
            for i in gpu_indices:
                over = probe.gpu_memory_used([i]) - baseline.gpu_by_index.get(i, 0)
                if over > max(512 * 2**20, share):
                    problems.append(f"GPU {i}'s memory in use is {over / 2**30:.1f} GiB "
                                    "above its baseline")
        else:
            gpu = probe.gpu_memory_used(gpu_indices) if gpu_indices else 0
            if gpu > baseline.gpu_used + baseline.gpu_tolerance:
                problems.append(f"GPU memory in use is {(gpu - baseline.gpu_used) / 2**30:.1f} "
                                "GiB above the baseline")
        host = probe.host_memory_available() if baseline.check_host else baseline.host_available
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
