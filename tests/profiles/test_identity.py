"""What makes two measurements comparable: the model's revision, hardware, vLLM, space, load."""

from __future__ import annotations

import json
from pathlib import Path

from autotune.engine.hardware import HardwareInfo
from autotune.engine.probes import DeviceInfo
from autotune.profiles.identity import hardware_key, model_revision, same_hardware, study_identity
from autotune.profiles.incumbent import find_incumbent
from autotune.profiles.profile import Profile, write_profile
from autotune.space.search import parse_space
from tests.profiles.test_profile import meta

HW = HardwareInfo(target="cpu", cpu="Xeon", cpu_count=2, memory_total_bytes=24 * 2**30,
                  cpu_flags=("avx2", "avx512f"))


def test_model_revision_follows_the_files_that_change_what_is_measured(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 256}))
    a = model_revision("m", str(tmp_path))
    assert model_revision("m", str(tmp_path)) == a
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 512}))
    assert model_revision("m", str(tmp_path)) != a


def test_study_identity_changes_with_each_condition(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a b"}\n')
    space = parse_space({"name": "s", "workload": {"dataset": {"path": str(data)}}})
    base = study_identity("m", str(tmp_path), HW, "vllm==1.0", space)
    assert study_identity("m", str(tmp_path), HW, "vllm==1.0", space) == base
    assert study_identity("m", str(tmp_path), HW, "vllm==1.1", space)["vllm"] != base["vllm"]
    bf16 = HardwareInfo(**{**HW.__dict__, "cpu_flags": ("avx2", "avx512f", "avx512_bf16")})
    assert study_identity("m", str(tmp_path), bf16, "vllm==1.0", space)["hardware"] != \
        base["hardware"]
    # the same path with other contents is another workload
    data.write_text('{"prompt": "c d e f"}\n')
    assert study_identity("m", str(tmp_path), HW, "vllm==1.0", space)["workload"] != \
        base["workload"]


def test_hardware_that_looks_alike_but_differs_in_what_matters_is_not_the_same() -> None:
    a = HW.describe()
    assert same_hardware(a, {**a, "memory_total_gib": 23.4})  # what the kernel reserves
    assert not same_hardware(a, {**a, "cpu_flags": ["avx2"]})
    assert not same_hardware(a, {**a, "cpu_count": 4})
    gpu = HardwareInfo(**{**HW.__dict__, "target": "a100-40gb",
                          "gpus": (DeviceInfo(0, "NVIDIA A100-SXM4-40GB", 40 * 2**30),)})
    big = HardwareInfo(**{**gpu.__dict__, "gpus": (DeviceInfo(0, "NVIDIA A100-SXM4-80GB",
                                                              80 * 2**30),)})
    assert hardware_key(gpu.describe()) != hardware_key(big.describe())


def test_the_incumbent_is_comparable_only_on_the_same_hardware(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    assert find_incumbent(path, HW.describe(), {}) is None
    settings = {"model": "/m", "load-format": "dummy", "max-num-seqs": 8}
    write_profile(Profile(settings=settings, meta=meta(hardware=HW.describe())), path)
    inc = find_incumbent(path, HW.describe(), {"load-format": "dummy"})
    assert inc is not None and inc.comparable and inc.params is not None
    # its settings as a candidate: not the model, not what the model itself brings
    assert inc.params.args == {"max-num-seqs": 8}
    assert inc.params.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    other = find_incumbent(path, {**HW.describe(), "cpu": "EPYC"}, {})
    assert other is not None and not other.comparable
    assert "other hardware (cpu: Xeon here EPYC)" in other.why
    path.write_text("max-num-seqs: [\n")
    broken = find_incumbent(path, HW.describe(), {})
    assert broken is not None and not broken.comparable and "cannot be read" in broken.why


def test_a_workload_field_added_later_does_not_change_the_digest_until_set() -> None:
    from autotune.measure.capacity import Capacity
    from autotune.measure.workload import Workload
    from autotune.profiles.identity import workload_digest

    w = Workload(concurrency=4)
    doc = w.model_dump(mode="json")
    doc.pop("capacity")
    import hashlib
    import json

    # what the digest was before the field existed
    before = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    assert workload_digest(w) == before
    with_cap = Workload(capacity=Capacity(high=8, slo={"p95_ttft_ms": 100}))
    assert workload_digest(with_cap) != workload_digest(Workload())


def test_a_driver_or_cuda_upgrade_starts_a_new_study_but_keeps_the_profile_comparable(
        tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    space = parse_space({"name": "s"})
    gpu = HardwareInfo(**{**HW.__dict__, "target": "a100-80gb",
                          "gpus": (DeviceInfo(0, "NVIDIA A100-SXM4-80GB", 80 * 2**30),),
                          "driver": {"driver": "550.54.15", "cuda": "12.4"}})

    def digest(hw: HardwareInfo) -> str:
        return study_identity("m", str(tmp_path), hw, "vllm==1.0", space)["hardware"]

    base = digest(gpu)
    assert digest(HardwareInfo(**{**gpu.__dict__})) == base
    driver = HardwareInfo(**{**gpu.__dict__, "driver": {"driver": "560.35.03", "cuda": "12.4"}})
    cuda = HardwareInfo(**{**gpu.__dict__, "driver": {"driver": "550.54.15", "cuda": "12.6"}})
    assert digest(driver) != base and digest(cuda) != base and digest(driver) != digest(cuda)
    # the same machine all the same: its profile joins the confirmation round, so the
    # regression alarm can judge it after the upgrade (as after a vLLM upgrade)
    assert same_hardware(gpu.describe(), driver.describe())
    assert same_hardware(gpu.describe(), cuda.describe())


def test_hardware_recorded_without_a_driver_keeps_its_study_identity(tmp_path: Path) -> None:
    # digests as they were before the driver and CUDA versions joined the identity: a CPU
    # host (none to read) and a description that did not record them keep their studies
    (tmp_path / "config.json").write_text("{}")
    space = parse_space({"name": "s"})
    assert study_identity("m", str(tmp_path), HW, "vllm==1.0", space)["hardware"] == \
        "2b9c7b7d0c90"
    gpu = HardwareInfo(**{**HW.__dict__, "target": "a100-80gb",
                          "gpus": (DeviceInfo(0, "NVIDIA A100-SXM4-80GB", 80 * 2**30),)})
    assert study_identity("m", str(tmp_path), gpu, "vllm==1.0", space)["hardware"] == \
        "146c07e1a2f4"
    # absent on both sides: equal; recorded on one side only: a change
    from autotune.profiles.identity import driver_changes, driver_key

    assert driver_key(HW.describe()) == {} and driver_changes(HW.describe(), {"cpu": "x"}) == []
    assert driver_changes({}, {"driver": {"driver": "550.54.15"}}) == [
        "GPU driver unrecorded -> 550.54.15"]
