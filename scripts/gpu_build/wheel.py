"""A vLLM release's wheel: downloaded, unpacked, its missing side dependencies installed beside it,
and the environment that makes a child Python see it first."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from scripts.gpu_build import cpu_platform
from scripts.gpu_build.common import CHILD_ENV, REPO


class FetchError(Exception):
    """A release's wheel could not be downloaded or unpacked."""


def cache_dir() -> Path:
    from autotune.model.builtin import cache_root

    return cache_root() / "gpu-build"


def fetch(release: str, cache: Path) -> Path:
    """The unpacked wheel of `vllm==release` (downloaded and unpacked once, then reused)."""
    root = cache / f"vllm-{release}"
    if (root / ".unpacked").is_file():
        return root
    wheels = cache / "wheels" / release
    found = sorted(wheels.glob("vllm-*.whl"))
    if not found:
        print(f"downloading vllm=={release} (the wheel alone, a few hundred MB) ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
             "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(wheels)],
            capture_output=True, text=True, check=False)
        found = sorted(wheels.glob("vllm-*.whl"))
        if proc.returncode != 0 or not found:
            said = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FetchError(f"pip download vllm=={release} failed: {said}")
    shutil.rmtree(root, ignore_errors=True)
    try:
        with zipfile.ZipFile(found[0]) as z:
            z.extractall(root)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"cannot unpack {found[0]}: {exc}") from exc
    (root / ".unpacked").write_text(found[0].name)
    return root


def wheel_version(root: Path) -> str:
    info = sorted(root.glob("vllm-*.dist-info"))
    return info[0].name.removeprefix("vllm-").removesuffix(".dist-info") if info else "?"


# The wheel's requirements that are CUDA builds or GPU kernels: never installed beside it (a
# CUDA torchvision breaks the CPU torch; vLLM imports these where it runs on a GPU).
GPU_PACKAGES = re.compile(
    r"torch|torchvision|torchaudio|torchcodec|triton|xformers|flashinfer.*|nvidia-.*|nvtx|"
    r"pynvvideocodec|cupy.*|tilelang|fastsafetensors|instanttensor|quack-kernels|"
    r"tokenspeed-mla|humming-kernels|deep-gemm|deep-ep|cuda.*", re.IGNORECASE)


def side_deps(root: Path, install: bool = True) -> tuple[list[str], list[str], list[str]]:
    """Install beside the wheel (`root/_deps`, --no-deps) the requirements of its METADATA
    that the venv lacks and that are not GPU packages. Returns (those, GPU packages left
    out, requirements whose pin the venv's version does not meet)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    info = sorted(root.glob("vllm-*.dist-info"))
    if not info:
        return [], [], []
    lacking: list[str] = []
    gpu: list[str] = []
    differ: list[str] = []
    for line in (info[0] / "METADATA").read_text().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            (gpu if GPU_PACKAGES.fullmatch(req.name) else lacking).append(str(req))
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            differ.append(f"{req} (the venv has {have})")
    target = root / "_deps"
    if install and lacking and not target.is_dir():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
             "-q", "--target", str(target), *lacking], capture_output=True, text=True,
            check=False)
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise FetchError(f"pip install --target {target} {' '.join(lacking)}: {said}")
    return lacking, gpu, differ


def child_env(root: Path) -> dict[str, str]:
    """PYTHONPATH for a child Python that sees the wheel: the wheel, what was installed
    beside it, the plugin that selects its CPU platform (scripts/gpu_build/cpu_platform.py),
    this checkout (autotune), then whatever was there."""
    path = [str(root), str(root / "_deps"), str(cpu_platform.install(root / "_platform")),
            str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**CHILD_ENV, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in os.environ while the block runs (autotune's children inherit it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
