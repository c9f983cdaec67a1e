"""Hardware keys (the profile directory's name) from a fake NVML and fake CPU flags; `--gpu
auto`; a `--gpu` that contradicts the cards."""

from __future__ import annotations

import pytest

from autotune.core.errors import UserError
from autotune.engine.hardware import cpu_key, detect_hardware, gpu_key, isa_tier
from autotune.engine.probes import CpuInfo, DeviceInfo
from autotune.profiles.identity import same_hardware
from autotune.testing.fake_probe import FakeProbe

GIB = 2**30
XEON = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
SPR = "Intel(R) Xeon(R) Platinum 8488C"
EPYC = "AMD EPYC 7R13 Processor"


@pytest.mark.parametrize(("name", "gib", "key"), [
    ("NVIDIA A10G", 22.5, "a10g"),
    ("NVIDIA L4", 22.5, "l4"),
    ("NVIDIA A100-SXM4-40GB", 40.0, "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", 79.2, "a100-80gb"),
    ("NVIDIA H100 80GB HBM3", 79.6, "h100"),
    ("NVIDIA H200", 140.4, "h200"),
    ("NVIDIA GeForce RTX 4090", 23.99, "nvidia-geforce-rtx-4090-24gb"),  # not in the table
])
def test_a_card_is_keyed_by_its_target_or_its_name_and_memory(name: str, gib: float,
                                                              key: str) -> None:
    assert gpu_key(DeviceInfo(0, name, int(gib * GIB))) == key


@pytest.mark.parametrize(("flags", "tier"), [
    ((), "base"), (("avx2",), "avx2"), (("avx2", "avx512f"), "avx512"),
    (("avx2", "avx512f", "avx512_bf16"), "avx512bf16"),
    (("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"), "amx"),
])
def test_the_instruction_set_tier_is_the_best_the_flags_allow(flags: tuple[str, ...],
                                                              tier: str) -> None:
    assert isa_tier(flags) == tier


def test_cpu_hosts_that_differ_in_what_changes_results_get_different_keys() -> None:
    avx512 = CpuInfo(XEON, ("avx2", "avx512f"), 16)
    keys = {cpu_key(avx512), cpu_key(CpuInfo(XEON, ("avx2",), 16)),
            cpu_key(CpuInfo(SPR, ("avx2", "avx512f", "avx512_bf16", "amx_bf16"), 16)),
            cpu_key(CpuInfo(XEON, ("avx2", "avx512f"), 2)),
            cpu_key(CpuInfo(EPYC, ("avx2",), 16))}
    assert len(keys) == 5
    assert cpu_key(avx512) == "cpu-intel-avx512-16c"
    assert cpu_key(CpuInfo(EPYC, ("avx2",), 16)) == "cpu-amd-avx2-16c"


def test_a_cpu_run_is_keyed_by_the_probes_cpu_and_records_the_detail() -> None:
    probe = FakeProbe(host=CpuInfo(SPR, ("avx2", "avx512_bf16", "avx512f"), 8))
    hw = detect_hardware("cpu", probe)
    assert hw.key == "cpu-intel-avx512bf16-8c"
    d = hw.describe()
    assert d["key"] == hw.key and d["cpu"] == SPR and d["cpu_count"] == 8
    # one key, another CPU model of the same tier: the same directory, but the profile's
    # figures are not compared with this machine's (same_hardware looks at the detail)
    other = detect_hardware("cpu", FakeProbe(host=CpuInfo(
        "Intel(R) Xeon(R) Gold 6430", ("avx2", "avx512_bf16", "avx512f"), 8)))
    assert other.key == hw.key and not same_hardware(other.describe(), d)


def test_gpu_runs_are_keyed_by_card_and_count_and_record_driver_and_cuda() -> None:
    cards = tuple(DeviceInfo(i, "NVIDIA A100-SXM4-80GB", int(79.2 * GIB)) for i in range(4))
    probe = FakeProbe(devices=cards, driver={"driver": "550.54.15", "cuda": "12.4"})
    one = detect_hardware("a100-80gb", probe)
    assert one.key == "a100-80gb" and one.describe()["driver"] == {"driver": "550.54.15",
                                                                   "cuda": "12.4"}
    assert detect_hardware("a100-80gb", probe, devices=[0, 1, 2, 3]).key == "a100-80gb-x4"


def test_gpu_auto_names_the_card_nvml_finds_or_the_cpu() -> None:
    probe = FakeProbe(devices=(DeviceInfo(0, "NVIDIA L4", int(22.5 * GIB)),
                               DeviceInfo(1, "NVIDIA H100 80GB HBM3", int(79.6 * GIB))))
    assert detect_hardware("auto", probe).key == "l4"
    assert detect_hardware("auto", probe, devices=[1]).target == "h100"
    cpu_only = FakeProbe(host=CpuInfo(EPYC, ("avx2",), 4))
    assert detect_hardware("auto", cpu_only).key == "cpu-amd-avx2-4c"
    unknown = FakeProbe(devices=(DeviceInfo(0, "NVIDIA GeForce RTX 4090", 24 * GIB),))
    with pytest.raises(UserError, match="no target describes; name the nearest with --gpu"):
        detect_hardware("auto", unknown)


def test_a_gpu_target_that_contradicts_the_card_is_refused_unless_vouched_for() -> None:
    probe = FakeProbe(devices=(DeviceInfo(0, "NVIDIA A10G", int(21.9 * GIB)),))
    with pytest.raises(UserError, match="--ignore-hardware-mismatch tunes it as a l4"):
        detect_hardware("l4", probe)
    hw = detect_hardware("l4", probe, mismatch_ok=True)
    # under the key asked for, with the card as NVML names it recorded
    assert hw.key == "l4" and hw.describe()["gpus"][0]["name"] == "NVIDIA A10G"
    assert hw.describe()["declared"] is True
