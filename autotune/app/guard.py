"""The quality guard on a measured trial: a candidate that changes numerics is compared with
vLLM's defaults' greedy outputs (measure/quality.py does the arithmetic)."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autotune.app.trial import TrialSetup
from autotune.core.errors import FailureReason
from autotune.measure.quality import AGREEMENT, agreement, changes_numerics
from autotune.measure.result import TrialResult
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, baseline_params
from autotune.study.trials import is_baseline


def reference_outputs(storage: str, study: str) -> list[list[int]]:
    """vLLM's defaults' greedy outputs, as recorded on the study's baseline trial."""
    s = optuna.load_study(study_name=study, storage=storage)
    return next((list(t.user_attrs.get("quality_outputs") or []) for t in s.trials
                 if is_baseline(t) and t.user_attrs.get("status") == "ok"), [])


def guard(space: SearchSpace, params: TrialParams, result: TrialResult, setup: TrialSetup,
          reference: Callable[[], list[list[int]]]) -> TrialResult:
    """The quality guard (quality.py): a candidate that changes numerics and whose greedy
    outputs agree less than `min_agreement` with vLLM's defaults' fails as low_agreement."""
    spec = space.quality
    if spec is None or result.status != "ok" or not changes_numerics(
            spec, params.args, baseline_params(space).args):
        return result
    ref = reference()
    if not ref or len(result.quality_outputs) != len(ref):
        why = ("vLLM's defaults have no greedy outputs to compare with" if not ref else
               "its greedy outputs could not be read")
        return result.model_copy(update={
            "status": "failed", "reason": FailureReason.LOW_AGREEMENT,
            "detail": f"quality guard: {why}"})
    agree = agreement(ref, result.quality_outputs)
    result = result.model_copy(update={"metrics": {**result.metrics, AGREEMENT: agree}})
    if agree.value >= spec.min_agreement:
        return result
    return result.model_copy(update={
        "status": "failed", "reason": FailureReason.LOW_AGREEMENT,
        "detail": f"greedy outputs agree {agree.value:.0%} with vLLM's defaults' on "
                  f"{agree.n} fixed prompts (min {spec.min_agreement:.0%}): its numerics "
                  "change what the model says"})
