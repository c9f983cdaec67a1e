"""The GPU kit on the GPU machine: its parts checked, installed privately, the checks, a run.

Standard library only until the kit is installed (the image has no pydantic). From the
repository root, with the kit's parts under .gpu-kit/ (docs/gpu-build.md, "The GPU kit"):

    python3 scripts/gpu_kit/on_gpu.py receive        # calls that bring parts: what is here
    python3 scripts/gpu_kit/on_gpu.py run            # the last call: install, then 1-3 below

writing everything under $OUT (or --out): 1. scripts/nvml_check.py, 2. one server of
builtin:qwen3-0.6b through autotune's server code (serve_once.py), 3. `autotune run --gpu auto`
on scripts/gpu_kit/space.yaml. summary.json is rewritten after every stage, so a call cut short
still says how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from scripts.gpu_kit.pack import check_parts, read_manifest, unpack  # noqa: E402

DEADLINE_S = 540.0  # a call may run 10 minutes: 9 for the work, one for the transfer back
MODEL = "builtin:qwen3-0.6b"
PREFLIGHT = ("vllm", "vllm.entrypoints.openai.api_server", "pydantic", "optuna", "scipy",
             "autotune.cli.main", "autotune.engine.server")


@dataclass
class Setup:
    """What differs between the GPU machine and the kit's tests (stand-in server, fake probe)."""

    kit: Path
    out: Path
    python: str = sys.executable
    launcher: str = ""  # empty: python -m vllm.entrypoints.openai.api_server
    gpu: str = "auto"
    run_extra: list[str] = field(default_factory=list)
    serve_extra: list[str] = field(default_factory=list)
    preflight: tuple[str, ...] = PREFLIGHT
    deadline_s: float = DEADLINE_S

    @property
    def site(self) -> Path:
        return self.kit / "site"


class Stages:
    """Runs each stage as a child with its log under out/, into summary.json as it goes."""

    def __init__(self, setup: Setup) -> None:
        self.s = setup
        self.t0 = time.monotonic()
        self.summary: dict[str, Any] = {"stages": {}}
        setup.out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.s.deadline_s - (time.monotonic() - self.t0)

    def save(self) -> None:
        (self.s.out / "summary.json").write_text(json.dumps(self.summary, indent=1) + "\n")

    def env(self) -> dict[str, str]:
        path = [str(self.s.site), str(REPO), os.environ.get("PYTHONPATH", "")]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
                "AUTOTUNE_CACHE_DIR": str(self.s.kit / "cache"),
                # no network on the lent machine: nothing may try the hub or phone home
                "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}

    def record(self, name: str, **fields: Any) -> dict[str, Any]:
        row: dict[str, Any] = self.summary["stages"].setdefault(name, {})
        row.update(fields)
        self.save()
        return row

    def child(self, name: str, argv: list[str], limit_s: float) -> int | None:
        """Run one stage; its output to out/NAME.log. None when it ran out of time."""
        limit = max(1.0, min(limit_s, self.left()))
        start = time.monotonic()
        with (self.s.out / f"{name}.log").open("w") as log:
            print(f"[{name}] {' '.join(argv)} (up to {limit:.0f} s)", flush=True)
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                    cwd=REPO, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                # the whole group: a server the stage started must not outlive it
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                rc = None
        took = round(time.monotonic() - start, 1)
        tail = (self.s.out / f"{name}.log").read_text(errors="replace").splitlines()[-3:]
        self.record(name, rc=rc, seconds=took, result="PASS" if rc == 0 else
                    "TIMEOUT" if rc is None else f"FAIL (exit {rc})", tail=tail)
        print(f"[{name}] {self.summary['stages'][name]['result']} in {took} s", flush=True)
        return rc


def install(st: Stages) -> bool:
    """Parts -> the private tree (.gpu-kit/site), never the image's site-packages."""
    start = time.monotonic()
    manifest = read_manifest(st.s.kit)
    _, bad = check_parts(st.s.kit, manifest)
    st.summary["kit"] = {"release": manifest["release"], "parts": len(manifest["parts"]),
                         "payload_bytes": manifest["payload_bytes"]}
    if bad:
        st.record("install", result="FAIL", missing=bad,
                  say=f"send these parts again: {', '.join(bad)}")
        return False
    files = unpack(st.s.kit, manifest, st.s.site)
    st.record("install", result="PASS", files=files,
              seconds=round(time.monotonic() - start, 1))
    return True


def image(st: Stages) -> None:
    """What the image has that the kit relies on: Python, torch, CUDA, the card."""
    code = ("import json,sys,importlib.metadata as m\nout={'python':sys.version.split()[0]}\n"
            "for d in ('torch','torchvision','transformers','triton','numpy','nvidia-ml-py'):\n"
            "  try: out[d]=m.version(d)\n  except Exception: out[d]=None\n"
            "try:\n  import torch; out['cuda']=torch.version.cuda; "
            "out['gpu']=torch.cuda.get_device_name() if torch.cuda.is_available() else None\n"
            "except Exception as e: out['torch_error']=repr(e)\nprint(json.dumps(out))")
    proc = subprocess.run([st.s.python, "-c", code], capture_output=True, text=True,
                          env=st.env(), timeout=max(1.0, min(60.0, st.left())))
    lines = proc.stdout.strip().splitlines()
    st.summary["image"] = json.loads(lines[-1]) if proc.returncode == 0 and lines else \
        {"error": proc.stderr[-500:]}
    st.save()


def run_all(setup: Setup) -> int:
    st = Stages(setup)
    if not install(st):
        return 1
    image(st)
    imports = "; ".join(f"import {m}" for m in setup.preflight)
    if st.child("preflight", [setup.python, "-c", imports], 120) != 0:
        return 1  # a missing module: the log names it; nothing below could start
    st.child("nvml", [setup.python, str(REPO / "scripts" / "nvml_check.py")], 150)
    launcher = setup.launcher or f"{setup.python} -m vllm.entrypoints.openai.api_server"
    st.child("serve", [setup.python, str(HERE / "serve_once.py"), "--out", str(setup.out / "serve"),
                       "--model", MODEL, "--launcher", launcher, *setup.serve_extra], 300)
    serve = setup.out / "serve" / "serve.json"
    if serve.is_file():
        st.record("serve", figures=json.loads(serve.read_text()))
    runs = setup.out / "run"
    extra = list(setup.run_extra)
    if setup.launcher == "" and not _parser_module(st):
        # a vLLM that keeps make_arg_parser where autotune.engine.vllm_args does not look: the
        # run checks no options rather than stop (and summary.json says so)
        extra.append("--no-verify-options")
        st.record("run", verify_options="off: autotune cannot build this vLLM's parser")
    argv = [setup.python, "-m", "autotune.cli", "run", "--gpu", setup.gpu, "--model", MODEL,
            "--space", str(HERE / "space.yaml"), "--trials", "3", "--runs-dir", str(runs / "runs"),
            "--profiles-dir", str(runs / "profiles"), "--storage",
            f"sqlite:///{runs / 'autotune.db'}", "--json", str(runs / "run.json"),
            *([] if setup.launcher == "" else ["--launcher", launcher]), *extra]
    runs.mkdir(parents=True, exist_ok=True)
    rc = st.child("run", argv, st.left() - 10)
    if (runs / "run.json").is_file():
        st.record("run", json=json.loads((runs / "run.json").read_text()))
    st.record("run", profiles=[str(p.relative_to(runs)) for p in runs.glob("profiles/**/*.yaml")])
    st.summary["seconds"] = round(time.monotonic() - st.t0, 1)
    st.save()
    return 0 if rc == 0 else 1


def _parser_module(st: Stages) -> bool:
    # autotune's own lookup of vLLM's parser (its PARSER_MODULES), never a copy of the list
    code = ("import sys\nfrom autotune.engine.vllm_args import parser_module\n"
            "sys.exit(parser_module() is None)")
    return subprocess.run([st.s.python, "-c", code], env=st.env(), capture_output=True,
                          timeout=max(1.0, min(120.0, st.left()))).returncode == 0


def receive(kit: Path) -> int:
    manifest = read_manifest(kit)
    good, bad = check_parts(kit, manifest)
    print(f"kit for vLLM {manifest['release']}: {len(good)} of {len(manifest['parts'])} parts "
          f"here ({', '.join(good) or 'none'}); still to send: {', '.join(bad) or 'none'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("step", choices=["receive", "run"])
    ap.add_argument("--kit", type=Path, default=REPO / ".gpu-kit")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-kit-out")))
    ap.add_argument("--deadline-s", type=float, default=DEADLINE_S)
    ns = ap.parse_args(argv)
    if ns.step == "receive":
        return receive(ns.kit)
    return run_all(Setup(kit=ns.kit, out=ns.out, deadline_s=ns.deadline_s))


if __name__ == "__main__":
    sys.exit(main())
