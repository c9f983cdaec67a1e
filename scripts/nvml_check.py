#!/usr/bin/env python3
"""Check autotune's NVML code on a real NVIDIA GPU: naming the card, its memory, per-process
attribution, and the between-trials release check. A prepared check, run by hand, not in CI.

Needs: an NVIDIA GPU with its driver, PyTorch with CUDA, nvidia-ml-py, and autotune's own
light dependency psutil; no vLLM (it imports only autotune.engine.hardware,
autotune.engine.memory and autotune.engine.probes, which never import vLLM). From a checkout:

    python scripts/nvml_check.py [--device 0] [--gib 4]

It takes under a minute (at most 5: a deadline stops it, FAIL) and prints PASS or FAIL per check:

  a. name: autotune's NVML probe (`autotune.engine.probes.SystemProbe`) names the card, `--gpu auto`
     resolves to its target, `--gpu <its target>` is accepted and every other known target
     (`autotune.engine.hardware.KNOWN_TARGETS`: on an H200, h100 and b200 among them) is refused,
     as `autotune.engine.hardware.detect_hardware` does for `--gpu`. Prints the hardware key.
  b. memory: NVML's total memory for the card agrees with CUDA's (torch.cuda.mem_get_info, in
     a worker) within 1%.
  c. attribution: a worker process, started below a holder process the way vLLM's engine
     runs below its API server, allocates a known amount (4 GiB by default) with torch;
     autotune's sampler (`autotune.engine.memory.MemorySampler`, the server's process tree through
     NVML's per-process figures) must see the allocation within max(128 MiB, 3%) of it on
     top of the worker's CUDA context, and that figure must be the one that scores
     (`peak_memory_bytes`).
  d. release: autotune's between-trials check (`autotune.engine.memory.wait_for_memory` against a
     `MemoryBaseline` taken before the worker started) must refuse while the memory is held
     and pass within 60 s of the worker's exit.

Exit status: 0 when every check passes, 1 when one fails, 2 when there is no NVIDIA GPU or
NVML here (one line says so) or a module is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GiB = 2**30
DEADLINE_S = 300  # the whole check
WORKER_START_S = 120.0  # torch's import and the CUDA context
SETTLE_S = 10.0  # NVML's per-process figure catches up with an allocation
RELEASE_S = 60.0  # memory back to the baseline after the worker exits


def tolerance(nbytes: int) -> int:
    """How far NVML's per-process figure may stray from an allocation: the caching
    allocator's rounding and NVML's granularity, not a second context."""
    return max(128 * 2**20, nbytes * 3 // 100)


# ---- the worker: the only process that imports torch ------------------------------------------

def worker(nbytes: int) -> int:
    """Create a CUDA context, report it, allocate `nbytes` on "alloc", exit on "exit"."""
    import torch

    def say(**event: Any) -> None:
        print(json.dumps(event), flush=True)

    if not torch.cuda.is_available():
        say(event="error", error="torch sees no CUDA device (a CPU build of torch?)")
        return 1
    torch.zeros(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    say(event="context", pid=os.getpid(), name=torch.cuda.get_device_name(), free=free,
        total=total, torch=torch.__version__)
    held = None
    for line in sys.stdin:
        if line.strip() == "alloc":
            held = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            held.fill_(1)  # touched: the pages are really there
            torch.cuda.synchronize()
            say(event="allocated", reserved=torch.cuda.memory_reserved())
        elif line.strip() == "exit":
            break
    del held
    return 0


def holder(argv: list[str]) -> int:
    """Start the worker below this process (like vLLM's engine below its API server) and wait."""
    return subprocess.call(argv)


class Worker:
    """Owns the holder and its worker: nothing outlives the `with` block."""

    def __init__(self, device: int, nbytes: int) -> None:
        here = str(Path(__file__).resolve())
        worker_argv = [sys.executable, here, "--worker", "--bytes", str(nbytes)]
        # as autotune.engine.argv.build_env: NVML and CUDA number the GPUs alike
        env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
               "CUDA_VISIBLE_DEVICES": str(device)}
        self.proc = subprocess.Popen([sys.executable, here, "--holder", "--", *worker_argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     text=True, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def read(self, wanted: str, timeout_s: float) -> dict[str, Any]:
        """The worker's next event, which must be `wanted`."""
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = out.readline()
            if not line:
                raise RuntimeError(f"the worker exited (code {self.proc.poll()}) before "
                                   f"{wanted!r}")
            with contextlib.suppress(json.JSONDecodeError):
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == "error":
                    raise RuntimeError(f"the worker: {event['error']}")
                if event.get("event") == wanted:
                    return event
        raise RuntimeError(f"no {wanted!r} from the worker in {timeout_s:.0f} s")

    def finish(self, timeout_s: float = 30.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send("exit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# ---- the checks --------------------------------------------------------------------------------

class Results:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def record(self, name: str, ok: bool, text: str) -> None:
        print(f"{name:<14} {'PASS' if ok else 'FAIL'}  {text}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)


def nvml_here() -> str | None:
    """Why NVML cannot be used here (None: it can), in a few words."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return f"NVML: {exc}"
    return None if count > 0 else "NVML sees no GPU"


def check_name(probe: Any, device: int, results: Results) -> None:
    from autotune.core.errors import UserError
    from autotune.engine.hardware import (
        KNOWN_TARGETS,
        detect_hardware,
        gpu_key,
        gpu_target,
        resolve_target,
    )

    gpu = next(g for g in probe.gpus() if g.index == device)
    own = gpu_target(gpu)
    print(f"card           {gpu.name!r}, {gpu.memory_total_bytes / GiB:.1f} GiB (NVML); "
          f"target {own or 'none'}; key {gpu_key(gpu)}")
    accepted, refused = [], []
    for target in (t for t, kind in KNOWN_TARGETS.items() if kind is not None):
        try:
            info = detect_hardware(target, probe, [device])
            accepted.append(f"{target} (key {info.key})")
        except UserError:
            refused.append(target)
    auto = resolve_target("auto", probe, [device]) if own else None
    print(f"--gpu          accepted: {', '.join(accepted) or 'none'}; refused: "
          f"{', '.join(refused) or 'none'}; auto: {auto}")
    if own is None:
        results.record("a. name", False, f"no --gpu target describes {gpu.name!r} with "
                       f"{gpu.memory_total_bytes / GiB:.1f} GiB (autotune.engine.hardware."
                       "KNOWN_TARGETS)")
        return
    ok = accepted == [f"{own} (key {own})"] and auto == own
    results.record("a. name", ok, f"--gpu {own} matches and --gpu auto names it; the "
                   f"{len(refused)} other targets are refused" if ok else
                   f"expected exactly {own} accepted and auto -> {own}")


def check_memory(probe: Any, device: int, context: dict[str, Any], results: Results) -> None:
    gpu = next(g for g in probe.gpus() if g.index == device)
    nvml, cuda = gpu.memory_total_bytes, int(context["total"])
    ok = abs(nvml - cuda) <= nvml // 100
    results.record("b. memory", ok, f"NVML total {nvml / GiB:.2f} GiB, CUDA total "
                   f"{cuda / GiB:.2f} GiB (torch {context['torch']}, "
                   f"{context['name']!r}); in use before: "
                   f"{probe.gpu_memory_used([device]) / GiB:.2f} GiB")


def attributed(probe: Any, pid: int, device: int) -> tuple[int | None, float]:
    """What autotune's sampler attributes to the process tree at `pid` on `device`, and the
    figure that would score (`peak_memory_bytes`)."""
    from autotune.engine.memory import MemorySampler, memory_metrics

    sampler = MemorySampler(probe, pid=pid, gpu_indices=[device])
    sampler.sample()
    return (sampler.peaks.gpu_process_bytes,
            memory_metrics(sampler.peaks, on_gpu=True)["peak_memory_bytes"])


def check_attribution(probe: Any, w: Worker, device: int, nbytes: int,
                      results: Results) -> bool:
    ctx, _ = attributed(probe, w.pid, device)
    if ctx is None:
        results.record("c. attribution", False, "NVML reports no memory for the worker's "
                       "process tree (a container whose PIDs NVML cannot see?): autotune "
                       "would fall back to the whole card's use")
        return False
    w.send("alloc")
    w.read("allocated", WORKER_START_S)
    deadline = time.monotonic() + SETTLE_S
    while True:
        got, scored = attributed(probe, w.pid, device)
        delta = (got or 0) - ctx
        ok = abs(delta - nbytes) <= tolerance(nbytes) and scored == got
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    results.record("c. attribution", ok,
                   f"worker tree: {ctx / GiB:.2f} GiB (CUDA context) -> {(got or 0) / GiB:.2f} "
                   f"GiB; +{delta / GiB:.3f} GiB for {nbytes / GiB:.3f} GiB allocated "
                   f"(tolerance {tolerance(nbytes) / 2**20:.0f} MiB); peak_memory_bytes "
                   f"{'is' if scored == got else 'is NOT'} that figure")
    return True


def run(device: int, gib: float) -> int:
    why = nvml_here()
    if why is not None:
        print(f"nvml_check: no NVIDIA GPU/NVML here ({why})")
        return 2
    from autotune.engine.memory import MemoryBaseline, wait_for_memory
    from autotune.engine.probes import SystemProbe

    probe = SystemProbe()
    if device not in {g.index for g in probe.gpus()}:
        print(f"nvml_check: no GPU with index {device} (NVML sees {len(probe.gpus())})")
        return 2
    print(f"nvml_check: driver {probe.gpu_driver()}")
    results = Results()
    check_name(probe, device, results)
    baseline = MemoryBaseline.take(probe, [device])
    # enough to stand clear of the baseline check's tolerance, whatever the card
    nbytes = max(int(gib * GiB), baseline.gpu_tolerance * 3 // 2)
    with Worker(device, nbytes) as w:
        try:
            context = w.read("context", WORKER_START_S)
        except RuntimeError as exc:
            results.record("b. memory", False, str(exc))
            print(f"nvml_check: FAIL ({', '.join(results.failed)})")
            return 1
        check_memory(probe, device, context, results)
        held = check_attribution(probe, w, device, nbytes, results)
        refused = wait_for_memory(probe, baseline, [device], timeout_s=2.0) if held else None
        w.finish()
    t0 = time.monotonic()
    after = wait_for_memory(probe, baseline, [device], timeout_s=RELEASE_S)
    took = time.monotonic() - t0
    ok = held and refused is not None and f"GPU {device}" in refused and after is None
    if not held:
        text = "not checked: the worker's memory was not attributed"
    else:
        text = f"while held, the baseline check refused ({refused}); after the worker exited, "
        text += (f"it passed in {took:.1f} s" if after is None else f"it still refused ({after})")
    results.record("d. release", ok, text)
    total = results.passed + len(results.failed)
    if results.failed:
        print(f"nvml_check: FAIL ({', '.join(results.failed)}; {results.passed} of {total} "
              "passed)")
        return 1
    print(f"nvml_check: PASS ({total} of {total})")
    return 0


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the check took over {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--holder"]:
        return holder(args[2:])  # after "--holder --"
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--device", type=int, default=0, help="NVML index of the GPU (default 0)")
    ap.add_argument("--gib", type=float, default=4.0, help="GiB the worker allocates "
                    "(default 4; raised to clear the baseline check's tolerance)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bytes", type=int, default=0, help=argparse.SUPPRESS)
    ns = ap.parse_args(args)
    if ns.worker:
        return worker(ns.bytes)
    try:
        import psutil  # noqa: F401  (autotune's probes need it)
    except ImportError:
        print("nvml_check: psutil is missing (pip install psutil nvidia-ml-py)")
        return 2
    try:
        with deadline(DEADLINE_S):
            return run(ns.device, ns.gib)
    except (TimeoutError, RuntimeError) as exc:
        print(f"nvml_check: FAIL ({exc})")
        return 1


if __name__ == "__main__":
    sys.exit(main())
