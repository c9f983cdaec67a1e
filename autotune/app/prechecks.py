"""What refuses a candidate before its server starts (a rule is the space's own): more GPUs
than the run has, weights and one sequence's KV cache that cannot fit; and the memory in use
before the first start."""

from __future__ import annotations

from typing import Any

from autotune.core.errors import FailureReason
from autotune.engine.fit import Target as FitTarget
from autotune.engine.fit import need, numa_node_bytes, read_shape
from autotune.engine.hardware import HardwareInfo
from autotune.engine.memory import MemoryBaseline
from autotune.engine.probes import Probe
from autotune.engine.slots import Pool, gpus_needed
from autotune.model.tokens import context_length, local_file
from autotune.space.params import TrialParams
from autotune.study.tuner import Precheck


def gpu_precheck(pool: Pool, model_args: dict[str, Any]) -> Precheck | None:
    """Refuses, without a start, a candidate that needs more GPUs than the run has."""
    if not pool.gpus:
        return None

    def check(params: TrialParams) -> tuple[FailureReason, str] | None:
        why = pool.fits(gpus_needed({**model_args, **params.args}))
        return None if why is None else (FailureReason.CANNOT_FIT, f"cannot fit: {why}")
    return check


def memory_precheck(model_path: str, model_args: dict[str, Any], hardware: HardwareInfo
                    ) -> Precheck | None:
    """Refuses, without a start, a candidate whose weights and one max-model-len sequence of
    KV cache cannot fit its memory budget (fit.py); None when the model's config is not
    readable here (nothing is refused then)."""
    shape = read_shape(local_file(model_path, "config.json"))
    if shape is None:
        return None
    gpu = hardware.gpus[0].memory_total_bytes if hardware.gpus else None
    target = FitTarget(gpu, numa_node_bytes(hardware.memory_total_bytes))
    context = context_length(model_path)

    def check(params: TrialParams) -> tuple[FailureReason, str] | None:
        n = need(shape, {**model_args, **params.args}, params.env, target, context)
        if n is None or n.fits:
            return None
        return FailureReason.CANNOT_FIT, f"cannot fit: {n.why_not()}"
    return check


def chain(*checks: Precheck | None) -> Precheck | None:
    """The first reason any of the checks gives (None: every one lets the candidate start)."""
    live = [c for c in checks if c is not None]
    if not live:
        return None

    def check(params: TrialParams) -> tuple[FailureReason, str] | None:
        return next((why for c in live if (why := c(params)) is not None), None)
    return check


def memory_baseline(parallel: int, probe: Probe, hardware: HardwareInfo) -> MemoryBaseline:
    """The memory in use before any trial starts, as each trial's start compares it."""
    base = MemoryBaseline.take(probe, [g.index for g in hardware.gpus])
    # beside other trials only the trial's own GPUs can be checked
    return base.side_by_side() if parallel > 1 else base
