from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.probes import (
    DeviceInfo,
    MemorySampler,
    SystemProbe,
    detect_hardware,
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


def test_process_tree_rss_counts_children(tmp_path: Path) -> None:
    code = ("import subprocess,sys,time;"
            "c=subprocess.Popen([sys.executable,'-c','b=bytearray(80*2**20);import time;"
            "time.sleep(30)']);time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while process_tree_rss(parent.pid) < 80 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_tree_rss(parent.pid) >= 80 * 2**20
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    assert process_tree_rss(parent.pid) == 0


def test_sampler_keeps_peaks() -> None:
    readings = iter([1, 5, 3, 2] + [0] * 1000)
    probe = FakeProbe(gpu_used=lambda idx: sum(10 * (i + 1) for i in idx),
                      rss=lambda pid: next(readings))
    with MemorySampler(probe, os.getpid(), gpu_indices=(0, 1), interval_s=0.01) as m:
        time.sleep(0.1)
    assert m.peaks.rss_bytes == 5
    assert m.peaks.gpu_bytes == 30
    assert m.peaks.per_gpu == {0: 10, 1: 20}
    assert m.peaks.samples >= 4


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
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    probe = SystemProbe()
    assert [g.name for g in probe.gpus()] == ["NVIDIA L4", "NVIDIA L4"]
    assert probe.gpu_memory_used([0, 1]) == 8 * 2**30
    assert detect_hardware("l4", probe, devices=[1]).gpus[0].index == 1


def test_system_probe_without_nvml_is_a_cpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=fail))
    probe = SystemProbe()
    assert probe.gpus() == ()
    assert probe.gpu_memory_used([0]) == 0
