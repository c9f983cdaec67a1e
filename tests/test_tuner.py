from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.errors import AutotuneError, EnvironmentFailure, FailureReason, UserError
from autotune.objective import TrialResult
from autotune.space import TrialParams, parse_space
from autotune.tuner import StudyConfig, TrialReport, best_trial, counted_trials, tune

SPACE = parse_space({
    "name": "t",
    "args": {"max-num-seqs": {"type": "int", "low": 1, "high": 16},
             "enforce-eager": True},
    "objective": {"metric": "output_throughput", "constraints": {"p95_ttft_ms": {"max": 100}}},
    "sampler": {"n_startup_trials": 3, "seed": 0},
    "enqueue": [{"max-num-seqs": 16}, {"max-num-seqs": 4}],
})


def runner(params: TrialParams, number: int) -> TrialResult:
    """A scripted engine: more seqs is faster, but above 12 it runs out of memory and
    above 8 it misses the TTFT SLO."""
    n = params.args["max-num-seqs"]
    assert params.args["enforce-eager"] is True
    if n > 12:
        return TrialResult(status="failed", reason=FailureReason.OOM_AT_STARTUP,
                           detail="oom", command=["vllm"], env={})
    return TrialResult(status="ok", command=["vllm"], env={},
                       metrics={"output_throughput": 100.0 * n,
                                "p95_ttft_ms": 10.0 * n + (200 if n > 8 else 0)})


def cfg(tmp_path: Path, n: int, name: str = "s") -> StudyConfig:
    return StudyConfig(storage=f"sqlite:///{tmp_path / 'study.db'}", name=name, n_trials=n)


def test_failures_and_slo_misses_are_never_best(tmp_path: Path) -> None:
    reports: list[TrialReport] = []
    study = tune(SPACE, cfg(tmp_path, 12), runner, {}, reports.append)
    assert len(study.trials) == 12
    # the enqueued vLLM-default-like candidates go first
    assert study.trials[0].params == {"max-num-seqs": 16}
    assert study.trials[0].user_attrs["reason"] == "oom_at_startup"
    assert not reports[0].feasible
    best = best_trial(study)
    assert best is not None
    assert best.params["max-num-seqs"] <= 8
    feasible_values = [t.value for t in study.trials
                       if t.user_attrs["status"] == "ok" and t.params["max-num-seqs"] <= 8]
    assert best.value == max(feasible_values)
    assert all(t.constraints["trial_ok"] == 1.0 for t in study.trials
               if t.user_attrs["status"] == "failed")


def test_budget_is_total_and_a_rerun_continues(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting(params: TrialParams, number: int) -> TrialResult:
        calls.append(number)
        return runner(params, number)

    tune(SPACE, cfg(tmp_path, 4), counting, {})
    assert calls == [0, 1, 2, 3]
    study = tune(SPACE, cfg(tmp_path, 6), counting, {})
    assert calls == [0, 1, 2, 3, 4, 5]
    assert counted_trials(study) == 6
    tune(SPACE, cfg(tmp_path, 6), counting, {})
    assert len(calls) == 6, "a finished budget runs nothing more"


def test_interrupted_trial_is_rerun_on_resume(tmp_path: Path) -> None:
    c = StudyConfig(storage=f"sqlite:///{tmp_path / 'study.db'}", name="s", n_trials=3,
                    heartbeat_s=1, grace_s=1)

    def dies(params: TrialParams, number: int) -> TrialResult:
        if number == 1:
            raise KeyboardInterrupt
        return runner(params, number)

    with pytest.raises(KeyboardInterrupt):
        tune(SPACE, c, dies, {})
    study = optuna.load_study(study_name="s", storage=c.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[1].user_attrs["interrupted"] is True
    study = tune(SPACE, c, runner, {})
    assert counted_trials(study) == 3
    # the interrupted candidate (the second enqueued one) was tried again, not skipped
    assert {"max-num-seqs": 4} in [t.params for t in study.trials
                                   if t.state.name == "COMPLETE"]


def test_study_refuses_a_different_space(tmp_path: Path) -> None:
    tune(SPACE, cfg(tmp_path, 1), runner, {})
    other = SPACE.model_copy(update={"workload": SPACE.workload.model_copy(
        update={"concurrency": 99})})
    with pytest.raises(UserError, match="different search space"):
        tune(other, cfg(tmp_path, 2), runner, {})


@pytest.mark.parametrize("url", ["not-a-url", "nosuchdb://x/y"])
def test_bad_storage_url_is_a_user_error(tmp_path: Path, url: str) -> None:
    with pytest.raises(UserError, match="--storage"):
        tune(SPACE, StudyConfig(storage=url, name="s", n_trials=1), runner, {})


def test_no_feasible_trial_gives_no_best(tmp_path: Path) -> None:
    def all_fail(params: TrialParams, number: int) -> TrialResult:
        return TrialResult(status="failed", reason=FailureReason.STARTUP_CRASH, command=[],
                           env={})

    study = tune(SPACE, cfg(tmp_path, 3), all_fail, {})
    assert best_trial(study) is None


def test_environment_failures_are_retried_not_learned_and_stop_a_dirty_machine(
        tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(params: TrialParams, number: int) -> TrialResult:
        calls.append(number)
        if number == 1:
            raise EnvironmentFailure("machine not back to its baseline")
        return runner(params, number)

    study = tune(SPACE, cfg(tmp_path, 3), flaky, {})
    states = [(t.state.name, t.user_attrs.get("reason")) for t in study.trials]
    assert states[1] == ("FAIL", "environment")
    assert counted_trials(study) == 3
    # the candidate the machine could not measure was measured on the next trial
    assert study.trials[2].params == study.trials[1].params

    def dirty(params: TrialParams, number: int) -> TrialResult:
        raise EnvironmentFailure("6 GiB still in use")

    with pytest.raises(AutotuneError, match="3 trials in a row"):
        tune(SPACE, cfg(tmp_path, 3, name="dirty"), dirty, {})
