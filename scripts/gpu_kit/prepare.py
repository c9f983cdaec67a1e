"""Build the GPU kit on a CPU machine: vLLM and what the GPU image lacks, chosen, packed, listed.

    .venv/bin/python -m scripts.gpu_kit.prepare --release 0.26.0 [--out .gpu-kit]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.gpu_kit.imports import closure, guarded_everywhere
from scripts.gpu_kit.pack import PART_BYTES, install_wheel, pack, sha256, write_manifest

REPO = Path(__file__).resolve().parents[2]
KIT_DIR = REPO / ".gpu-kit"
# The lent GPU machines' image (docs/gpu-build.md): these and what they depend on are there.
IMAGE_ROOTS: tuple[str, ...] = (
    "torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0", "transformers>=5.17,<5.18",
    "nvidia-ml-py", "psutil", "aiohttp", "httpx", "rich", "pyyaml", "numpy", "tokenizers")
# torch's own requirements (the image installed them with it). torch itself is never resolved:
# its CUDA wheels' pins (nvidia-*) need not be on the index prepare reads from
TORCH = ("torch", "torchvision", "torchaudio")
TORCH_DEPS = ("sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec", "filelock",
              "typing-extensions", "setuptools", "triton", "pillow")
# what the image is known to lack (docs/gpu-build.md), though a root may declare it (an image's
# own install may have skipped an optional requirement): always in the kit
NOT_IN_IMAGE = frozenset({"pydantic", "pydantic-core", "optuna", "scipy"})
TARGET = {"python_version": "3.12", "platform": "manylinux_2_28_x86_64", "abi": "cp312"}
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "extra": ""}
# import name -> distribution, where the two differ beyond case and - / _
DISTRIBUTION = {"zmq": "pyzmq", "yaml": "pyyaml", "PIL": "pillow", "cv2": "opencv-python-headless",
                "cpuinfo": "py-cpuinfo", "google": "protobuf", "cutlass": "nvidia-cutlass-dsl",
                "flashinfer": "flashinfer-python", "tvm_ffi": "apache-tvm-ffi",
                "pythonjsonlogger": "python-json-logger", "sklearn": "scikit-learn"}
# vLLM requirements imported only inside functions that a dense bf16 model's start-up and
# plain completions do not call; left out on purpose (the others imported that way are small
# and come along, as set_process_title's setproctitle and the prefix hash's blake3 do)
ON_DEMAND = {
    "flashinfer-python": "FlashInfer kernels, built with nvcc at first use; on Hopper attention "
                         "is FA3 (vllm_flash_attn) and sampling falls back to PyTorch",
    "compressed-tensors": "quantized checkpoints only",
    "mistral-common": "Mistral tokenizers and models only",
    "mcp": "tool servers only",
    "nvtx": "profiling ranges only",
    "depyf": "torch.compile debug dumps only",
    "nvidia-cutlass-dsl": "CuTe DSL kernels (FA4 on Blackwell) only",
    "pynvvideocodec": "video decoding only",
}
# autotune's own requirements that `autotune run` on a GPU does not import
AUTOTUNE_LEAVE_OUT = {"psycopg": "PostgreSQL studies only (the kit's run uses SQLite)",
                      "plotly": "the HTML report only"}
# compiled parts of the wheel a dense model on an H100/H200 does not load: each is left out
# only when every import of it in the wheel's source is guarded (checked, not assumed)
TRIM = {
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": ("vllm.vllm_flash_attn._vllm_fa2_C",
                                                 "FlashAttention 2: Hopper uses FA3"),
    "vllm/_moe_C_stable_libtorch.abi3.so": ("vllm._moe_C_stable_libtorch",
                                            "mixture-of-experts kernels: a dense model"),
    "vllm/vllm-rs": (None, "the Rust frontend, run only with VLLM_USE_RUST_FRONTEND=1"),
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    requires: tuple[str, ...] = ()


Resolver = Callable[[Sequence[str]], list[Package]]
Downloader = Callable[[Sequence[Package], Path], list[Path]]


# pip takes --platform literally: every manylinux tag glibc 2.28 runs must be named
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
             "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")


def _pip_target() -> list[str]:
    out = ["--only-binary=:all:", "--python-version", TARGET["python_version"],
           "--implementation", "cp"]
    for plat in PLATFORMS:
        out += ["--platform", plat]
    for abi in (TARGET["abi"], "abi3", "none"):
        out += ["--abi", abi]
    return out


def pip_resolve(reqs: Sequence[str]) -> list[Package]:
    """What pip installs for `reqs` on the GPU image's Python (metadata only, nothing kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                        "--quiet", "--disable-pip-version-check", *_pip_target(), "--target",
                        str(Path(tmp) / "t"), "--report", str(report), *reqs], check=True)
        data = json.loads(report.read_text())
    return [Package(i["metadata"]["name"], i["metadata"]["version"],
                    tuple(i["metadata"].get("requires_dist") or ())) for i in data["install"]]


def pip_download(pkgs: Sequence[Package], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--disable-pip-version-check", *_pip_target(), "-d", str(dest),
                    *(f"{p.name}=={p.version}" for p in pkgs)], check=True)
    found = {norm(w.name.split("-")[0]): w for w in dest.glob("*.whl")}
    return [found[norm(p.name)] for p in pkgs]


def requirements(wheel: Path) -> list[Any]:
    """The wheel's Requires-Dist that apply on the GPU image (Linux, x86-64, Python 3.12)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    out = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(MARKERS):
                out.append(req)
    return out


def choose(wheel: Path, source: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(vLLM requirements to install, why each, left out and why), from the import graph."""
    g = closure(source)
    imported = {norm(DISTRIBUTION.get(k, k)): ("required", v) for k, v in g.lazy.items()}
    imported |= {norm(DISTRIBUTION.get(k, k)): ("guarded", v) for k, v in g.guarded.items()}
    imported |= {norm(DISTRIBUTION.get(k, k)): ("required", v) for k, v in g.required.items()}
    lazy = {norm(DISTRIBUTION.get(k, k)) for k in g.lazy}
    take, why, left = [], {}, {}
    for req in requirements(wheel):
        n = norm(req.name)
        how, where = imported.get(n, (None, ""))
        if how is None:
            left[n] = "not imported by a dense model's start-up"
        elif how == "guarded":
            left[n] = f"its import is optional or conditional ({where}): vLLM runs without it"
        elif n in ON_DEMAND:
            left[n] = f"imported on demand only ({where}): {ON_DEMAND[n]}"
        else:
            take.append(str(req))
            why[n] = ("vLLM: imported inside a function of " if n in lazy else
                      "vLLM: imported at start-up by ") + where
    return take, why, left


def autotune_requirements() -> list[str]:
    import tomllib

    deps: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"]
    return [d for d in deps if norm(re.split(r"[<>=\[ ;]", d)[0]) not in AUTOTUNE_LEAVE_OUT]


def closure_of(roots: Sequence[str], pkgs: Sequence[Package]) -> set[str]:
    from packaging.requirements import Requirement

    by = {norm(p.name): p for p in pkgs}
    seen: set[str] = set()
    todo = [norm(Requirement(r).name) for r in roots]
    todo = [t for t in todo if t in by]
    while todo:
        n = todo.pop()
        if n in seen or n not in by:
            continue
        seen.add(n)
        for line in by[n].requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(MARKERS):
                todo.append(norm(req.name))
    return seen


def trim_list(source: Path, wheel_names: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The wheel's files to leave out (with why) and those kept although listed (with why)."""
    out, kept = [], []
    for path, (module, why) in TRIM.items():
        if path not in wheel_names:
            continue
        if module is not None:
            ok, where = guarded_everywhere(source, module)
            if not ok:
                kept.append(f"{path}: kept, imported unguarded by {', '.join(where)}")
                continue
        out.append({"file": path, "why": why})
    return out, kept


def build_kit(wheel: Path, out: Path, resolve: Resolver = pip_resolve,
              download: Downloader = pip_download, full_wheel: bool = False,
              part_bytes: int = PART_BYTES, preset: int = 6) -> dict[str, Any]:
    """The whole `prepare`: choose, resolve, download, install into one tree, pack, list."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, site = Path(tmp) / "src", Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            z.extractall(source, [n for n in names if n.endswith(".py")])
        take, why, left = choose(wheel, source)
        ours = autotune_requirements()
        wanted = [r for r in [*take, *ours, *IMAGE_ROOTS]
                  if norm(re.split(r"[<>=!\[ ;]", r)[0]) not in TORCH]
        pkgs = resolve(wanted)
        image = closure_of(IMAGE_ROOTS, pkgs) | set(TORCH) | set(TORCH_DEPS) | {
            norm(p.name) for p in pkgs if norm(p.name).startswith("nvidia-")
            and norm(p.name) != "nvidia-ml-py"}
        image -= NOT_IN_IMAGE
        theirs = closure_of(take, pkgs)
        mine = closure_of(ours, pkgs)
        kit = [p for p in pkgs if norm(p.name) not in image and norm(p.name) != "vllm"]
        wheels = download(kit, out / "wheels")
        trimmed, kept = ([], []) if full_wheel else trim_list(source, names)
        with zipfile.ZipFile(wheel) as z:
            sizes = {i.filename: i.file_size for i in z.infolist()}
        for t in trimmed:
            t["bytes"] = sizes[t["file"]]
        rows = [{"name": "vllm", "version": _version(wheel), "why": "the engine",
                 "wheel": wheel.name, "bytes": wheel.stat().st_size, "sha256": sha256(wheel)}]
        install_wheel(wheel, site, frozenset(t["file"] for t in trimmed))
        for p, w in zip(kit, wheels, strict=True):
            n = norm(p.name)
            reason = why.get(n) or ("autotune" if n in {norm(r.split(">")[0].split("=")[0].split(
                "[")[0]) for r in ours} else "a dependency of " + (
                "vLLM's" if n in theirs else "autotune's" if n in mine else "the above")
                + " requirements")
            rows.append({"name": p.name, "version": p.version, "why": reason, "wheel": w.name,
                         "bytes": w.stat().st_size, "sha256": sha256(w)})
            install_wheel(w, site)
        payload = pack(site, out, part_bytes, preset)
    manifest = {"release": rows[0]["version"], "target": TARGET, "packages": rows,
                "left_out": [{"name": k, "why": v} for k, v in sorted(left.items())] +
                [{"name": k, "why": "autotune: " + v} for k, v in AUTOTUNE_LEAVE_OUT.items()],
                "image": sorted(image), "trimmed": trimmed, "trim_kept": kept, **payload}
    write_manifest(out, manifest)
    return manifest


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def fetch_wheel(release: str) -> Path:
    from scripts.gpu_build.wheel import cache_dir

    dest = cache_dir() / "wheels" / release
    found = sorted(dest.glob("vllm-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
                        "--only-binary=:all:", "--quiet", "-d", str(dest)], check=True)
        found = sorted(dest.glob("vllm-*.whl"))
    return found[0]


def summary(m: dict[str, Any]) -> str:
    mib = 2**20
    lines = [f"vLLM {m['release']}: {len(m['packages'])} packages, "
             f"{sum(p['bytes'] for p in m['packages']) / mib:.1f} MiB of wheels; "
             f"{m['unpacked_bytes'] / mib:.0f} MiB installed; payload "
             f"{m['payload_bytes'] / mib:.1f} MiB (xz) in {len(m['parts'])} parts"]
    lines += [f"  {p['name']}=={p['version']}  {p['bytes'] / mib:.2f} MiB  {p['why']}"
              for p in sorted(m["packages"], key=lambda p: -p["bytes"])]
    lines += [f"  left out of the wheel: {t['file']} ({t['bytes'] / mib:.0f} MiB): {t['why']}"
              for t in m["trimmed"]]
    lines += [f"  not in the kit: {x['name']}: {x['why']}" for x in m["left_out"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--release", default="0.26.0",
                    help="the vLLM release (default 0.26.0, the newest that pins the image's "
                         "torch 2.11.0)")
    ap.add_argument("--wheel", type=Path, help="a vLLM wheel on disk instead of --release")
    ap.add_argument("--out", type=Path, default=KIT_DIR)
    ap.add_argument("--full-wheel", action="store_true",
                    help="keep the wheel's every file (FA2, MoE kernels, vllm-rs): more parts")
    ap.add_argument("--part-mib", type=int, default=PART_BYTES // 2**20)
    # 6, not the fast 0: a part is a device call, and device time is what is scarce (0.26.0's
    # kit: 2 parts in about 10 minutes here at 6; 3 parts in under 4 at 0)
    ap.add_argument("--preset", type=int, default=6,
                    help="xz preset (0-9; 0 packs 3-4 times faster into one more part)")
    ns = ap.parse_args(argv)
    wheel = ns.wheel or fetch_wheel(ns.release)
    if ns.out.exists():
        shutil.rmtree(ns.out)
    m = build_kit(wheel, ns.out, full_wheel=ns.full_wheel, part_bytes=ns.part_mib * 2**20,
                  preset=ns.preset)
    print(summary(m))
    print(f"kit in {ns.out}: {', '.join(p['name'] for p in m['parts'])} and {ns.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
