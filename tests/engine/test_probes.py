from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from autotune.core.errors import UserError
from autotune.engine.hardware import detect_hardware
from autotune.engine.memory import (
    FULL_EVERY_S,
    FULL_GAP_S,
    RISE_BYTES,
    MemorySampler,
    memory_metrics,
)
from autotune.engine.probes import (
    DeviceInfo,
    SystemProbe,
    TreeMemory,
    process_tree_memory,
    process_tree_rss,
)
from autotune.testing.fake_probe import FakeProbe

A10G = DeviceInfo(0, "NVIDIA A10G", 24 * 2**30)
H100 = DeviceInfo(1, "NVIDIA H100 80GB HBM3", 80 * 2**30)


def test_cpu_target_needs_no_gpu() -> None:
    hw = detect_hardware("cpu", FakeProbe())
    assert hw.gpus == () and hw.cpu_count >= 1 and hw.memory_total_bytes > 0


def test_gpu_target_must_match_the_device() -> None:
    probe = FakeProbe(devices=(A10G, H100))
    assert detect_hardware("a10g", probe).gpus == (A10G,)
    assert detect_hardware("h100", probe, devices=[1]).gpus == (H100,)
    with pytest.raises(UserError, match="GPU 0 is a 'NVIDIA A10G'"):
        detect_hardware("h100", probe)
    with pytest.raises(UserError, match="--devices: no GPU with index 7"):
        detect_hardware("a10g", probe, devices=[7])
    with pytest.raises(UserError, match="no NVIDIA GPU"):
        detect_hardware("l4", FakeProbe())
    with pytest.raises(UserError, match="unknown target"):
        detect_hardware("tpu-v5", probe)


GIB = 2**30


@pytest.mark.parametrize(("target", "name", "gib", "ok"), [
    ("a10g", "NVIDIA A10G", 22.5, True),
    ("a10", "NVIDIA A10G", 22.5, False),  # an A10 is not an A10G
    ("a10", "NVIDIA A100-SXM4-40GB", 40.0, False),  # nor an A100
    ("a10", "NVIDIA A10", 22.5, True),
    ("l4", "NVIDIA L4", 22.5, True),
    ("l4", "NVIDIA L40S", 45.0, False),
    ("l40s", "NVIDIA L40S", 45.0, True),
    ("a100-40gb", "NVIDIA A100-SXM4-40GB", 40.0, True),
    ("a100-40gb", "NVIDIA A100-SXM4-80GB", 79.2, False),  # told apart by memory
    ("a100-80gb", "NVIDIA A100 80GB PCIe", 79.2, True),
    ("a100-80gb", "NVIDIA A100-PCIE-40GB", 40.0, False),
    ("h100", "NVIDIA H100 80GB HBM3", 79.6, True),
    ("h100", "NVIDIA H100 NVL", 93.6, True),
    ("h100", "NVIDIA H200", 140.4, False),
    ("h200", "NVIDIA H200", 140.4, True),
    ("t4", "Tesla T4", 15.0, True),
])
def test_gpu_names_match_exactly_and_memory_is_checked(target: str, name: str, gib: float,
                                                       ok: bool) -> None:
    probe = FakeProbe(devices=(DeviceInfo(0, name, int(gib * GIB)),))
    if ok:
        assert detect_hardware(target, probe).gpus[0].name == name
    else:
        with pytest.raises(UserError, match=f"--gpu {target}: GPU 0 is a '{name}' with"):
            detect_hardware(target, probe)


def test_process_tree_memory_counts_children_and_shared_pages_once(tmp_path: Path) -> None:
    # a parent fills 100 MiB, then forks 3 children that share those pages without writing
    # them: RSS counts the 100 MiB in each of the 4 processes, PSS once, USS in none
    code = ("import os,time\n"
            "b=bytearray(b'\\x01')*(100*2**20)\n"
            "kids=[os.fork() for _ in range(1)]\n"
            "kids+=[os.fork() for _ in range(1)]\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        tree = process_tree_memory(parent.pid)
        while len(tree.pids) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            tree = process_tree_memory(parent.pid)
        assert len(tree.pids) == 4
        assert tree.rss >= 4 * 100 * 2**20
        assert 100 * 2**20 <= tree.pss < 1.5 * 100 * 2**20
        assert tree.uss < 100 * 2**20
        cheap = process_tree_rss(parent.pid)  # the per-second reading: RSS alone, same tree
        assert cheap.pids == tree.pids and cheap.pss == cheap.uss == 0
        assert cheap.rss >= 4 * 100 * 2**20
    finally:
        for pid in process_tree_memory(parent.pid).pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
    assert process_tree_memory(parent.pid) == TreeMemory() == process_tree_rss(parent.pid)


def test_pss_is_read_only_when_it_can_have_moved_and_its_peak_is_kept() -> None:
    """RSS every sample; PSS/USS (a page-table walk of every process) at the first sample, when
    the tree changes, when RSS rises past the last full reading (not more often than
    FULL_GAP_S), every FULL_EVERY_S, and when asked."""
    now = [0.0]
    rss = [TreeMemory(rss=1000 * 2**20, pids=(7, 8))]
    full: list[float] = []

    def reading(pid: int) -> TreeMemory:
        full.append(now[0])
        r = rss[0]
        return TreeMemory(pss=r.rss // 2, uss=r.rss // 4, rss=r.rss, pids=r.pids)

    m = MemorySampler(FakeProbe(tree=reading, rss=lambda pid: rss[0]), 1, clock=lambda: now[0])
    for t in range(0, 20):  # steady: the first sample only
        now[0] = float(t)
        m.sample()
    assert full == [0.0] and m.peaks.samples == 20 and m.peaks.full_samples == 1
    now[0] = 20.0
    rss[0] = TreeMemory(rss=rss[0].rss + RISE_BYTES // 2, pids=(7, 8))  # a rise within noise
    m.sample()
    assert full == [0.0]
    rss[0] = TreeMemory(rss=1100 * 2**20, pids=(7, 8))  # a real rise: its PSS is read
    now[0] = 21.0
    m.sample()
    now[0] = 21.0 + FULL_GAP_S / 2  # rising on: not again before FULL_GAP_S
    rss[0] = TreeMemory(rss=1200 * 2**20, pids=(7, 8))
    m.sample()
    assert full == [0.0, 21.0]
    now[0] = 21.0 + FULL_GAP_S
    m.sample()
    assert full == [0.0, 21.0, 21.0 + FULL_GAP_S]
    assert m.peaks.host_pss_bytes == 600 * 2**20 and m.peaks.host_uss_bytes == 300 * 2**20
    rss[0] = TreeMemory(rss=1200 * 2**20, pids=(7, 8, 9))  # a new process: read at once
    now[0] += 1
    m.sample()
    now[0] += FULL_EVERY_S  # nothing moved for half a minute: read anyway
    m.sample()
    m.sample(full=True)  # the end of the load
    assert len(full) == 6 and m.peaks.full_samples == 6
    assert m.peaks.host_rss_bytes == 1200 * 2**20


def test_sampler_keeps_peaks() -> None:
    readings = iter([TreeMemory(1, 1, 2, (7,)), TreeMemory(5, 4, 9, (7, 8)),
                     TreeMemory(3, 2, 4, (7,))] + [TreeMemory()] * 1000)
    probe = FakeProbe(gpu_used=lambda idx: sum(10 * (i + 1) for i in idx),
                      gpu_process=lambda pids, idx: 3 * len(pids),
                      tree=lambda pid: next(readings), rss=lambda pid: TreeMemory(rss=2))
    with MemorySampler(probe, os.getpid(), gpu_indices=(0, 1), interval_s=0.01) as m:
        deadline = time.monotonic() + 30
        while m.peaks.samples < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    p = m.peaks
    # each cheap reading's tree (none) differs from the last full one's: all are full here
    assert (p.host_pss_bytes, p.host_uss_bytes, p.host_rss_bytes) == (5, 4, 9)
    assert p.gpu_device_used_bytes == 30
    assert p.per_gpu_device_used == {0: 10, 1: 20}
    assert p.gpu_process_bytes == 6
    assert p.samples >= 4
    figures = memory_metrics(p, on_gpu=True)
    # on a GPU the score is the server's own processes, not the whole card
    assert figures["peak_memory_bytes"] == figures["peak_gpu_process_bytes"] == 6
    assert figures["peak_gpu_device_used_bytes"] == 30
    assert figures["peak_gpu1_device_used_bytes"] == 20
    # where NVML does not give the processes' memory, the cards' use stands in, named as such
    p.gpu_process_bytes = None
    figures = memory_metrics(p, on_gpu=True)
    assert "peak_gpu_process_bytes" not in figures and figures["peak_memory_bytes"] == 30
    assert memory_metrics(p, on_gpu=False)["peak_memory_bytes"] == 5


def test_system_probe_reads_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """SystemProbe against a stand-in `pynvml` module (no GPU on CI)."""
    nv = types.SimpleNamespace()
    handles = {0: "h0", 1: "h1"}
    used = {"h0": 3 * 2**30, "h1": 5 * 2**30}
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = lambda i: handles[i]
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA L4" if h == "h0" else "NVIDIA L4"
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=24 * 2**30,
                                                                 used=used[h])
    procs = {"h0": [types.SimpleNamespace(pid=11, usedGpuMemory=2 * 2**30),
                    types.SimpleNamespace(pid=99, usedGpuMemory=1 * 2**30)],  # not ours
             "h1": [types.SimpleNamespace(pid=12, usedGpuMemory=None)]}  # hidden by the driver
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: procs[h]
    nv.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nv.nvmlSystemGetCudaDriverVersion = lambda: 12040  # what NVML gives for CUDA 12.4
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    probe = SystemProbe()
    assert [g.name for g in probe.gpus()] == ["NVIDIA L4", "NVIDIA L4"]
    assert probe.gpu_memory_used([0, 1]) == 8 * 2**30
    assert probe.gpu_process_memory([11, 12], [0, 1]) == 2 * 2**30
    assert probe.gpu_process_memory([12], [1]) is None
    assert probe.gpu_process_memory([11], [1]) is None
    assert detect_hardware("l4", probe, devices=[1]).gpus[0].index == 1
    assert probe.gpu_driver() == {"driver": "550.54.15", "cuda": "12.4"}
    assert detect_hardware("l4", probe).describe()["driver"] == probe.gpu_driver()


def test_system_probe_without_nvml_is_a_cpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=fail))
    probe = SystemProbe()
    assert probe.gpus() == ()
    assert probe.gpu_driver() == {}
    assert probe.gpu_memory_used([0]) == 0


def test_the_host_memory_tolerance_can_be_widened_for_a_shared_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.engine.memory import HOST_TOLERANCE_ENV, MemoryBaseline

    probe = FakeProbe(host_available=lambda: 20 * 2**30)
    monkeypatch.delenv(HOST_TOLERANCE_ENV)
    default = MemoryBaseline.take(probe, []).host_tolerance
    assert default >= 2 * 2**30
    monkeypatch.setenv(HOST_TOLERANCE_ENV, "12.5")
    assert MemoryBaseline.take(probe, []).host_tolerance == int(12.5 * 2**30)
    monkeypatch.setenv(HOST_TOLERANCE_ENV, "lots")
    assert MemoryBaseline.take(probe, []).host_tolerance == default
