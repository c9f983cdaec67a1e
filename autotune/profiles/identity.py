"""What a measurement depends on: the model's revision, the hardware, vLLM, space and workload.

A study holds only numbers measured under one identity, and a profile's figures are only
compared with figures measured on the same hardware.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from autotune.engine.hardware import HardwareInfo
from autotune.measure.workload import Workload
from autotune.space.search import SearchSpace

# Model files whose contents change what is measured (weights are covered by their index or
# single file's size and name, not hashed: they can be tens of GB).
_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "model.safetensors.index.json")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def model_revision(model: str, path: str) -> str:
    """A short hash of the model as vLLM loads it: a local directory's config and tokenizer
    files (and the names and sizes of its weight files), or a hub id's cached commit."""
    p = Path(path).expanduser()
    if p.is_dir():
        h = hashlib.sha256()
        for name in _MODEL_FILES:
            f = p / name
            if f.is_file():
                h.update(name.encode() + b"\0" + f.read_bytes())
        for w in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
            h.update(f"{w.name}:{w.stat().st_size}".encode())
        return h.hexdigest()[:12]
    try:
        import huggingface_hub as hf

        cached = hf.try_to_load_from_cache(model, "config.json")
    except Exception:
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent.name[:12]  # snapshots/<commit>/config.json
    return "unknown"


NEWER_FIELDS: dict[str, Any] = {"capacity": None}


def workload_digest(w: Workload) -> str:
    """The workload as declared, plus the contents of its dataset file (not only its path)."""
    doc = w.model_dump(mode="json")
    # fields added after studies existed count only when set, so those studies stay
    # comparable with the same workload under a newer autotune
    for name, default in NEWER_FIELDS.items():
        if doc.get(name) == default:
            doc.pop(name, None)
    if w.dataset is not None:
        doc["dataset"]["path"] = Path(w.dataset.path).name
        try:
            doc["dataset_sha256"] = _digest(Path(w.dataset.path).read_bytes())
        except OSError:
            doc["dataset_sha256"] = "unreadable"
    return _digest(json.dumps(doc, sort_keys=True).encode())


def hardware_key(hardware: dict[str, Any]) -> dict[str, Any]:
    """The parts of a hardware description that change results (memory totals wobble with
    what the kernel reserves and are left out; GPU memory sizes stay in)."""
    return {"target": hardware.get("target"), "cpu": hardware.get("cpu"),
            "cpu_flags": sorted(hardware.get("cpu_flags") or []),
            "cpu_count": hardware.get("cpu_count"),
            "gpus": [(g.get("name"), g.get("memory_total_gib"))
                     for g in hardware.get("gpus") or []]}


def same_hardware(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return hardware_key(a) == hardware_key(b)


# What the GPU runs under, as NVML reports it (`HardwareInfo.describe()["driver"]`), and how
# `retune` names a change of it.
DRIVER_FIELDS = {"driver": "GPU driver", "cuda": "CUDA"}


def driver_key(hardware: dict[str, Any]) -> dict[str, str]:
    """The GPU driver's version and the CUDA version it supports, where recorded (a CPU host,
    or a description from before they were recorded, has none: absent on both sides, they
    compare equal).

    They change what is measured, so they are part of the study's identity (an upgrade starts
    a new study) and `retune` reports a change of them; they are not part of
    `same_hardware`: the profile stays comparable across a driver upgrade, so the confirmation
    round measures it again and the regression alarm can judge it, as across a vLLM upgrade."""
    recorded = hardware.get("driver") or {}
    return {k: str(recorded[k]) for k in DRIVER_FIELDS if recorded.get(k)}


def driver_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`GPU driver 550.54.15 -> 560.35.03`, `CUDA 12.4 -> 12.6`: what changed of
    `driver_key` (a side that did not record one: `unrecorded`)."""
    a, b = driver_key(old), driver_key(new)
    return [f"{label} {a.get(k, 'unrecorded')} -> {b.get(k, 'unrecorded')}"
            for k, label in DRIVER_FIELDS.items() if a.get(k) != b.get(k)]


def hardware_identity(hardware: dict[str, Any]) -> dict[str, Any]:
    """What a study's `hardware` digest covers: `hardware_key` and, on a GPU, `driver_key`
    (left out where there is none, so a CPU host's digest is what it was before they were
    recorded)."""
    driver = driver_key(hardware)
    return {**hardware_key(hardware), **({"driver": driver} if driver else {})}


def study_identity(model: str, model_path: str, hardware: HardwareInfo, vllm: str,
                   space: SearchSpace) -> dict[str, str]:
    return {
        "model": model,
        "model_revision": model_revision(model, model_path),
        "hardware": _digest(json.dumps(hardware_identity(hardware.describe()),
                                       sort_keys=True).encode()),
        "vllm": vllm,
        "space": space.fingerprint(),
        "workload": workload_digest(space.workload),
    }


def identity_digest(identity: dict[str, str]) -> str:
    return _digest(json.dumps(identity, sort_keys=True).encode())[:8]
