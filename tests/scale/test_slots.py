"""The pool of GPUs and cores that trials side by side share (slots.py), and the memory check
beside other trials (memory.py): pure, no server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from autotune.engine.slots import Pool, Slot, core_sets, cpu_list, gpus_needed

# -- the pool of GPUs and cores ------------------------------------------------------------

def test_cores_split_into_disjoint_sets_and_print_as_taskset_does() -> None:
    assert core_sets([0, 1, 2, 3, 4, 5], 4) == [(0, 1), (2, 3), (4,), (5,)]
    assert cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert Slot(cpus=(2, 3)).env() == {"VLLM_CPU_OMP_THREADS_BIND": "2-3"}
    assert Slot(gpus=(1, 3)).env() == {"CUDA_VISIBLE_DEVICES": "1,3"}
    with pytest.raises(Exception, match="each server needs at least one"):
        core_sets([0, 1], 3)


def test_a_tensor_parallel_candidate_takes_its_gpus_and_the_next_waits(tmp_path: Path) -> None:
    assert gpus_needed({"tensor-parallel-size": 2, "pipeline-parallel-size": 2}) == 4
    assert gpus_needed({}) == 1
    pool = Pool(tmp_path, gpus=(0, 1, 2, 3))
    assert pool.fits(8) == "needs 8 GPUs, the run has 4 (--gpus)" and pool.fits(4) is None
    with pytest.raises(Exception, match="needs 8 GPUs"), pool.take(8):
        pass  # never waits for what the run does not have
    got: list[tuple[int, ...]] = []
    with pool.take(2) as a, Pool(tmp_path, gpus=(0, 1, 2, 3)).take(2) as b:
        assert set(a.gpus).isdisjoint(b.gpus) and len(a.gpus) == len(b.gpus) == 2

        def third() -> None:
            with pool.take(1) as c:
                got.append(c.gpus)
        t = threading.Thread(target=third)
        t.start()
        time.sleep(1.0)
        assert got == [], "a third server started on GPUs in use"
    t.join(timeout=5)
    assert len(got) == 1 and len(got[0]) == 1


def test_beside_other_trials_the_memory_check_is_per_gpu_and_skips_the_host() -> None:
    from autotune.engine.memory import MemoryBaseline, wait_for_memory
    from autotune.engine.probes import DeviceInfo
    from autotune.testing.fake_probe import FakeProbe

    gib = 2**30
    used = {0: 1 * gib, 1: 1 * gib}
    host = [64 * gib]
    probe = FakeProbe(devices=tuple(DeviceInfo(i, "NVIDIA H100 80GB HBM3", 80 * gib)
                                    for i in (0, 1)),
                      gpu_used=lambda idx: sum(used[i] for i in idx),
                      host_available=lambda: host[0])
    base = MemoryBaseline.take(probe, [0, 1]).side_by_side()
    assert base.gpu_by_index == {0: gib, 1: gib}
    # another trial's server holds 40 GiB on GPU 1 and 30 GiB of host memory
    used[1] += 40 * gib
    host[0] -= 30 * gib
    assert wait_for_memory(probe, base, [0], timeout_s=0.2) is None
    why = wait_for_memory(probe, base, [1], timeout_s=0.2)
    assert why is not None and "GPU 1's memory in use is 40.0 GiB above its baseline" in why
    # one trial at a time, the host's memory is checked as before
    whole = MemoryBaseline.take(probe, [0, 1])
    host[0] -= 30 * gib
    assert "host memory available" in (wait_for_memory(probe, whole, [0], 0.2) or "")
