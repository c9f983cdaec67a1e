"""What the run measures on, and its key: the name of the profile directory it writes to.

A key names what changes the results: the GPU model (and memory, where one model comes in
two sizes) and how many of them, or for a CPU host its vendor, the instruction-set tier that
decides which dtype and kernels are fast (AVX2, AVX-512, AVX-512 with BF16, AMX), and the
cores the process may use. Two machines with one key may still differ in detail (another CPU
model of the same tier): the detail is recorded too, and a profile is compared only with
figures measured on the same detail (`identity.same_hardware`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune.core.errors import UserError
from autotune.engine.probes import CpuInfo, DeviceInfo, Probe


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
AUTO = "auto"


def gpu_target(gpu: DeviceInfo) -> str | None:
    """The `--gpu` target a card is, or None for a card this table does not know."""
    for target, kind in KNOWN_TARGETS.items():
        if kind is not None and kind.matches(gpu.name, gpu.memory_total_bytes):
            return target
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def gpu_key(gpu: DeviceInfo) -> str:
    """A card's key: its target name, or for a card not in the table its name and memory
    (`nvidia-geforce-rtx-4090-24gb`), so unknown cards still never share a key by accident."""
    known = gpu_target(gpu)
    if known is not None:
        return known
    return f"{_slug(gpu.name)}-{round(gpu.memory_total_bytes / 2**30)}gb"


def isa_tier(flags: Sequence[str]) -> str:
    """The instruction-set tier that decides which CPU kernels and dtypes are fast."""
    have = set(flags)
    if "amx_bf16" in have:
        return "amx"
    if "avx512_bf16" in have:
        return "avx512bf16"
    if "avx512f" in have:
        return "avx512"
    if "avx2" in have:
        return "avx2"
    return "base"


def cpu_vendor(name: str) -> str:
    lowered = name.lower()
    for word, vendor in (("intel", "intel"), ("xeon", "intel"), ("amd", "amd"),
                         ("epyc", "amd"), ("ryzen", "amd"), ("neoverse", "arm"),
                         ("graviton", "arm")):
        if word in lowered:
            return vendor
    return _slug(name.split()[0]) if name.split() else "cpu"


def cpu_key(cpu: CpuInfo) -> str:
    """`cpu-intel-avx512bf16-16c`: vendor, instruction-set tier, usable cores."""
    return f"cpu-{cpu_vendor(cpu.name)}-{isa_tier(cpu.flags)}-{cpu.cores}c"


@dataclass(frozen=True)
class HardwareInfo:
    target: str
    cpu: str
    cpu_count: int
    memory_total_bytes: int
    gpus: tuple[DeviceInfo, ...] = ()
    cpu_flags: tuple[str, ...] = ()
    driver: dict[str, str] = field(default_factory=dict)  # NVML: driver and CUDA versions
    declared: bool = False  # the cards are not what `target` says; the user vouched for them

    @property
    def key(self) -> str:
        """The profile directory's name: the GPUs' key (`-xN` for N cards), or the CPU's."""
        if not self.gpus:
            return cpu_key(CpuInfo(self.cpu, self.cpu_flags, self.cpu_count))
        keys = [self.target] if self.declared else sorted({gpu_key(g) for g in self.gpus})
        base = keys[0] if len(keys) == 1 else "+".join(keys)
        return base if len(self.gpus) == 1 else f"{base}-x{len(self.gpus)}"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "target": self.target,
            "cpu": self.cpu,
            "cpu_flags": list(self.cpu_flags),
            "cpu_count": self.cpu_count,
            "memory_total_gib": round(self.memory_total_bytes / 2**30, 1),
            "gpus": [{"index": g.index, "name": g.name,
                      "memory_total_gib": round(g.memory_total_bytes / 2**30, 1)}
                     for g in self.gpus],
        }
        if self.driver:
            out["driver"] = dict(self.driver)
        if self.declared:
            out["declared"] = True
        return out


def resolve_target(target: str, probe: Probe, devices: Sequence[int] | None = None) -> str:
    """`auto`: the detected card's target (the first of `devices`), or `cpu` without one."""
    if target != AUTO:
        return target
    gpus = probe.gpus()
    if not gpus:
        return "cpu"
    first = next((g for g in gpus if g.index == devices[0]), gpus[0]) if devices else gpus[0]
    known = gpu_target(first)
    if known is None:
        raise UserError(f"--gpu auto: GPU {first.index} is a {first.name!r} with "
                        f"{first.memory_total_bytes / 2**30:.1f} GiB, which no target "
                        "describes; name the nearest with --gpu (known: "
                        f"{', '.join(KNOWN_TARGETS)})")
    return known


def detect_hardware(target: str, probe: Probe, devices: Sequence[int] | None = None,
                    mismatch_ok: bool = False) -> HardwareInfo:
    """Check `--gpu` against the machine; one clear line when they disagree, unless
    `mismatch_ok` (the run then records the cards it found, under the key of `--gpu`)."""
    target = resolve_target(target, probe, devices)
    if target not in KNOWN_TARGETS:
        known = ", ".join([*KNOWN_TARGETS, AUTO])
        raise UserError(f"--gpu: unknown target {target!r} (known: {known})")
    gpus = probe.gpus()
    kind = KNOWN_TARGETS[target]
    chosen: tuple[DeviceInfo, ...] = ()
    declared = False
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
            if kind.matches(g.name, g.memory_total_bytes):
                continue
            declared = True
            if not mismatch_ok:
                raise UserError(f"--gpu {target}: GPU {g.index} is a {g.name!r} with "
                                f"{g.memory_total_bytes / 2**30:.1f} GiB (a {target} is an "
                                f"{kind.model} with {kind.min_gib:g}-{kind.max_gib:g} GiB); "
                                "--gpu auto names it, --ignore-hardware-mismatch tunes it "
                                f"as a {target} anyway")
    cpu = probe.cpu()
    info = HardwareInfo(target=target, cpu=cpu.name, cpu_count=cpu.cores,
                        memory_total_bytes=probe.host_memory_total(), gpus=chosen,
                        cpu_flags=tuple(sorted(cpu.flags)),
                        driver=probe.gpu_driver() if chosen else {}, declared=declared)
    return info
