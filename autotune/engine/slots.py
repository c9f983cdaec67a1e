"""Trials side by side on one host: each server takes its own GPUs, or its own cores.

A GPU host shares out the run's GPUs (`--gpus 0,1,2,3`): a trial takes as many as its
candidate needs (tensor x pipeline parallel size), the first ones free. A CPU host running N
trials at once (`--parallel N`) splits the cores this process may use into N disjoint sets,
and a trial takes one set: its server is pinned to those cores (the process's affinity, and
vLLM's own OpenMP binding, VLLM_CPU_OMP_THREADS_BIND).

The pool is a directory of `flock`ed files, so the worker processes of one run share it (and
the kernel frees a dead worker's GPUs with the process). A trial that cannot have what it
needs waits until another ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError

OMP_BIND = "VLLM_CPU_OMP_THREADS_BIND"
POLL_S = 0.5


@dataclass(frozen=True)
class Slot:
    """What one server may use: its GPUs (CUDA_VISIBLE_DEVICES), its cores (empty: all)."""

    gpus: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.gpus:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        if self.cpus:
            out[OMP_BIND] = cpu_list(self.cpus)
        return out

    def describe(self) -> str:
        parts = []
        if self.gpus:
            parts.append(f"GPU {','.join(map(str, self.gpus))}")
        if self.cpus:
            parts.append(f"cores {cpu_list(self.cpus)}")
        return ", ".join(parts) or "the whole machine"


def cpu_list(cpus: Sequence[int]) -> str:
    """`0-3,8`: the form of taskset, cgroups and VLLM_CPU_OMP_THREADS_BIND."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def core_sets(cores: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """`cores` in n disjoint, contiguous sets as even as can be."""
    cores = sorted(cores)
    if n > len(cores):
        raise UserError(f"--parallel {n}: this process may use {len(cores)} core(s); "
                        "each server needs at least one of its own")
    size, extra = divmod(len(cores), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (1 if k < extra else 0)
        out.append(tuple(cores[i:j]))
        i = j
    return out


def gpus_needed(args: Mapping[str, Any]) -> int:
    """GPUs one server of these options uses (tensor x pipeline parallel size)."""
    def size(*names: str) -> int:
        for name in names:
            if args.get(name) is not None:
                return max(1, int(args[name]))
        return 1
    return size("tensor-parallel-size", "tp") * size("pipeline-parallel-size", "pp")


class Pool:
    """The units a run shares out: GPU indices, or core sets. Shared by every process that
    uses the same directory."""

    def __init__(self, lock_dir: Path, gpus: Sequence[int] = (),
                 cores: Sequence[tuple[int, ...]] = ()) -> None:
        self.lock_dir = lock_dir
        self.gpus = tuple(gpus)
        self.cores = tuple(cores)

    @classmethod
    def for_run(cls, lock_dir: Path, gpus: Sequence[int], parallel: int,
                cores: Sequence[int] | None = None) -> Pool:
        if gpus:
            return cls(lock_dir, gpus=gpus)
        if parallel <= 1:
            return cls(lock_dir)  # one server at a time: the whole machine, unpinned
        usable = sorted(os.sched_getaffinity(0)) if cores is None else list(cores)
        return cls(lock_dir, cores=core_sets(usable, parallel))

    def fits(self, need: int) -> str | None:
        """Why a candidate needing `need` GPUs can never run here (None: it can)."""
        if self.gpus and need > len(self.gpus):
            return f"needs {need} GPUs, the run has {len(self.gpus)} (--gpus)"
        return None

    @contextlib.contextmanager
    def take(self, need: int = 1) -> Iterator[Slot]:
        """Hold `need` GPUs (or one core set) for the block, waiting while they are taken."""
        if not self.gpus and not self.cores:
            yield Slot()
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        units = ([f"gpu-{i}" for i in self.gpus] if self.gpus
                 else [f"cores-{cpu_list(c)}" for c in self.cores])
        want = need if self.gpus else 1
        if want > len(units):
            raise UserError(f"a server {self.fits(need)}")
        while True:
            held = self._try(units, want)
            if held is not None:
                break
            time.sleep(POLL_S)
        try:
            names = [n for n, _ in held]
            if self.gpus:
                yield Slot(gpus=tuple(int(n.split("-")[1]) for n in names))
            else:
                yield Slot(cpus=self.cores[units.index(names[0])])
        finally:
            for _, fd in held:
                os.close(fd)

    def _try(self, units: list[str], want: int) -> list[tuple[str, int]] | None:
        """All `want` units at once, or none (no worker holds some while waiting for more)."""
        got: list[tuple[str, int]] = []
        for name in units:
            fd = os.open(self.lock_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            got.append((name, fd))
            if len(got) == want:
                return got
        for _, fd in got:
            os.close(fd)
        return None


__all__ = ["Pool", "Slot", "core_sets", "cpu_list", "gpus_needed"]
