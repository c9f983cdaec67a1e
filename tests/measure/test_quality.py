"""The quality guard: agreement arithmetic, and greedy outputs of the real CPU engine on fixed
random weights (safetensors, the same weights under every setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.measure.quality import Quality, agreement, changes_numerics, prefix_agreement


def test_prefix_agreement_counts_the_reference_tokens_reproduced_before_a_difference() -> None:
    assert prefix_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert prefix_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5  # nothing after a difference
    assert prefix_agreement([1, 2, 3, 4], [7, 2, 3, 4]) == 0.0
    assert prefix_agreement([1, 2, 3, 4], [1, 2]) == 0.5
    assert prefix_agreement([], []) == 1.0
    e = agreement([[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 3, 4], [1, 9, 3, 4]])
    assert e.value == pytest.approx(0.625) and e.n == 2


def test_only_settings_that_change_numerics_are_asked() -> None:
    q = Quality()
    assert changes_numerics(q, {"dtype": "float32"}, {})
    assert changes_numerics(q, {"kv-cache-dtype": "fp8"}, {"kv-cache-dtype": None})
    assert not changes_numerics(q, {"max-num-seqs": 4}, {})
    assert not changes_numerics(q, {"dtype": "float32"}, {"dtype": "float32"})


def test_a_verdict_says_when_its_winner_changes_numerics() -> None:
    from autotune.core.stats import Estimate
    from autotune.measure.quality import numerics_note

    guard = Quality(min_agreement=0.9)
    fp8 = {"quantization": "fp8", "kv-cache-dtype": "fp8", "max-num-seqs": 64}
    assert numerics_note(guard, fp8, {}, Estimate(value=0.95, n=8)) == (
        "its settings change numerics (quantization fp8, kv-cache-dtype fp8): its greedy "
        "outputs agree 95% with vLLM's defaults' on 8 fixed prompts (min 90%)")
    # no guard in the space: the guard's own options, and a warning
    assert numerics_note(None, {"dtype": "float16"}, {"dtype": "bfloat16"}, None) == (
        "its settings change numerics (dtype float16), and the space has no quality guard: "
        "check its outputs before deploying")
    # an option the space fixes and the winner leaves unset is a change too
    assert "(dtype unset)" in numerics_note(guard, {}, {"dtype": "float32"}, None)
    assert "not compared with vLLM's defaults' in this run" in numerics_note(
        guard, {"dtype": "float16"}, {}, None)
    # float32 over a bf16 checkpoint widens every value: no precision lost, nothing to say
    assert numerics_note(None, {"dtype": "float32"}, {}, None) == ""
    # settings that change nothing numeric: nothing said
    assert numerics_note(guard, {"max-num-seqs": 64}, {}, None) == ""
    assert numerics_note(guard, {"dtype": "float32"}, {"dtype": "float32"}, None) == ""


def test_the_verdict_of_a_winner_that_changes_numerics_carries_the_guards_finding() -> None:
    import optuna

    from autotune.app.conclude import _with_numerics
    from autotune.decide.confirm import Arm
    from autotune.space.params import TrialParams
    from autotune.space.search import parse_space

    space = parse_space({"name": "q", "args": {
        "quantization": {"type": "categorical", "choices": [None, "fp8"]},
        "max-num-seqs": {"type": "categorical", "choices": [None, 64]}}, "quality": {}})
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={
        "metrics": {"quality_agreement": {"value": 0.9375, "n": 8}}}))
    verdict = "trial 0 beats vLLM defaults beyond noise"
    fp8 = Arm("trial 0", "finalist", TrialParams(args={"quantization": "fp8"}), 0)
    assert _with_numerics(verdict, space, study, fp8) == (
        f"{verdict}; its settings change numerics (quantization fp8): its greedy outputs "
        "agree 94% with vLLM's defaults' on 8 fixed prompts (min 90%)")
    plain = Arm("trial 0", "finalist", TrialParams(args={"max-num-seqs": 64}), 0)
    assert _with_numerics(verdict, space, study, plain) == verdict


@pytest.mark.engine
def test_the_real_engine_agrees_with_itself_and_the_guard_rejects_changed_numerics(
        tmp_path: Path) -> None:
    from autotune.app.guard import guard
    from autotune.app.trial import TrialSetup, run_trial
    from autotune.measure.plan import Plan
    from autotune.measure.quality import prompts_for
    from autotune.model.tokens import ModelTokenizer
    from autotune.space.params import TrialParams
    from autotune.space.search import EngineSettings, parse_space
    from autotune.testing.fake_probe import FakeProbe
    from autotune.testing.models import make_fixed_weights_model
    from tests.conftest import ONE_PROCESS_ENV, REAL_LAUNCHER

    model = make_fixed_weights_model(tmp_path / "model")
    space = parse_space({
        "name": "q", "args": {"max-model-len": 512, "gpu-memory-utilization": 0.3,
                              "enforce-eager": True,
                              "dtype": {"type": "categorical", "choices": [None, "bfloat16"]},
                              "hf-overrides": {"type": "categorical",
                                               "choices": [None, '{"rms_norm_eps": 0.5}']}},
        "quality": {"prompts": 4, "max_tokens": 12, "min_agreement": 0.9,
                    "options": ["dtype", "hf-overrides"]},
        "workload": {"num_requests": 4, "concurrency": 2, "input_tokens": 16,
                     "output_tokens": 8, "warmup_requests": 0,
                     "measure": {"min_rounds": 1, "max_rounds": 1, "min_s": 0}}})
    assert space.quality is not None
    tok = ModelTokenizer(str(model))
    setup = TrialSetup(model=str(model), launcher=REAL_LAUNCHER, plan=Plan(space.workload, tok),
                       engine=EngineSettings(startup_timeout_s=300, stop_timeout_s=20),
                       probe=FakeProbe(), api_key="k", base_env=ONE_PROCESS_ENV,
                       base_args={"max-model-len": 512, "gpu-memory-utilization": 0.3,
                                  "enforce-eager": True},
                       quality_prompts=tuple(prompts_for(space.quality, tok, 0)),
                       quality_max_tokens=12)
    reference = run_trial(TrialParams(), setup, tmp_path / "defaults")
    assert reference.status == "ok", reference.log_tail[-2000:]
    outputs = reference.quality_outputs
    assert len(outputs) == 4 and all(len(o) == 12 for o in outputs)

    # the checkpoint's own dtype, named: the same numerics, the same words
    same_params = TrialParams(args={"dtype": "bfloat16"})
    same = guard(space, same_params, run_trial(same_params, setup, tmp_path / "same"), setup,
                 lambda: outputs)
    assert same.status == "ok", same.detail
    assert same.metrics["quality_agreement"].value == 1.0
    # the same weights computed otherwise (every RMSNorm's epsilon 0.5): other words, rejected
    changed_params = TrialParams(args={"hf-overrides": '{"rms_norm_eps": 0.5}'})
    changed = guard(space, changed_params,
                    run_trial(changed_params, setup, tmp_path / "changed"), setup,
                    lambda: outputs)
    assert changed.status == "failed" and changed.reason is not None
    assert changed.reason.value == "low_agreement", changed.detail
    assert changed.metrics["quality_agreement"].value < 0.9
