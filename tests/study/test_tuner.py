from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.core.errors import AutotuneError, EnvironmentFailure, FailureReason, UserError
from autotune.core.stats import Estimate
from autotune.measure.result import PruneCheck, TrialResult
from autotune.space.params import TrialParams
from autotune.space.search import parse_space
from autotune.study.opening import StudyConfig, StudyMismatch
from autotune.study.trials import best_trial, counted_trials, is_baseline, metrics_of
from autotune.study.tuner import TrialReport, tune

SPACE = parse_space({
    "name": "t",
    "args": {"max-num-seqs": {"type": "int", "low": 1, "high": 16},
             "enforce-eager": True},
    "objective": {"metric": "output_throughput", "constraints": {"p95_ttft_ms": {"max": 100}}},
    "sampler": {"n_startup_trials": 3, "seed": 0},
    "enqueue": [{"max-num-seqs": 16}, {"max-num-seqs": 4}],
})
DEFAULT_SEQS = 6  # what the scripted engine does when max-num-seqs is left unset


def result(n: int, rounds: int = 3) -> TrialResult:
    tput = 100.0 * n
    return TrialResult(status="ok", command=["vllm"], env={},
                       metrics={"output_throughput": Estimate(value=tput, low=0.99 * tput,
                                                              high=1.01 * tput, n=rounds,
                                                              basis="rounds"),
                                "p95_ttft_ms": Estimate.single(10.0 * n + (200 if n > 8
                                                                            else 0))},
                       round_values=[tput] * rounds)


def runner(params: TrialParams, number: int, prune: PruneCheck | None = None) -> TrialResult:
    """A scripted engine: more seqs is faster, but above 12 it runs out of memory and
    above 8 it misses the TTFT SLO."""
    n = params.args.get("max-num-seqs", DEFAULT_SEQS)
    assert params.args["enforce-eager"] is True
    if n > 12:
        return TrialResult(status="failed", reason=FailureReason.OOM_AT_STARTUP,
                           detail="oom", command=["vllm"], env={})
    return result(n)


def cfg(tmp_path: Path, n: int, name: str = "s") -> StudyConfig:
    return StudyConfig(storage=f"sqlite:///{tmp_path / 'study.db'}", name=name, n_trials=n)


def test_failures_and_slo_misses_are_never_best(tmp_path: Path) -> None:
    reports: list[TrialReport] = []
    study = tune(SPACE, cfg(tmp_path, 12), runner, {}, reports.append)
    assert counted_trials(study) == 12
    # vLLM's defaults go first (no tuned option passed), then the enqueued candidates
    # recorded as the unset value of every option that has one (none here: an int range)
    assert is_baseline(study.trials[0]) and study.trials[0].params == {}
    assert reports[0].baseline and reports[0].result.status == "ok"
    assert study.trials[1].params == {"max-num-seqs": 16}
    assert study.trials[1].user_attrs["reason"] == "oom_at_startup"
    assert not reports[1].feasible
    assert metrics_of(study.trials[0])["output_throughput"].value == 100.0 * DEFAULT_SEQS
    best = best_trial(study)
    assert best is not None
    assert best.params["max-num-seqs"] <= 8
    feasible_values = [t.value for t in study.trials
                       if t.user_attrs["status"] == "ok" and t.params.get("max-num-seqs",
                                                                          DEFAULT_SEQS) <= 8]
    assert best.value == max(feasible_values)
    assert all(t.constraints["trial_ok"] == 1.0 for t in study.trials
               if t.user_attrs["status"] == "failed")


def test_budget_is_total_and_a_rerun_continues(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
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

    def dies(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        if number == 1:
            raise KeyboardInterrupt
        return runner(params, number)

    with pytest.raises(KeyboardInterrupt):
        tune(SPACE, c, dies, {})
    study = optuna.load_study(study_name="s", storage=c.storage)
    # the baseline, the interrupted first enqueued candidate, the second still queued, and
    # the interrupted one queued again
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "WAITING", "WAITING"]
    assert study.trials[1].user_attrs["interrupted"] is True
    study = tune(SPACE, c, runner, {})
    assert counted_trials(study) == 3
    # the interrupted candidate (the first enqueued one) was tried again, not skipped
    assert {"max-num-seqs": 16} in [t.params for t in study.trials
                                    if t.state.name == "COMPLETE"]


def test_study_refuses_other_conditions(tmp_path: Path) -> None:
    ident = {"model": "m", "vllm": "vllm==1.0", "space": "abc", "workload": "w1"}
    tune(SPACE, StudyConfig(cfg(tmp_path, 1).storage, "s", 1, identity=ident), runner, {})
    upgraded = {**ident, "vllm": "vllm==1.1"}
    with pytest.raises(StudyMismatch, match=r"--study s: .*\(vllm differ\); pass a new"):
        tune(SPACE, StudyConfig(cfg(tmp_path, 1).storage, "s", 2, identity=upgraded), runner,
             {})
    study = tune(SPACE, StudyConfig(cfg(tmp_path, 1).storage, "s", 2, identity=ident),
                 runner, {})
    assert counted_trials(study) == 2


@pytest.mark.parametrize("url", ["not-a-url", "nosuchdb://x/y"])
def test_bad_storage_url_is_a_user_error(tmp_path: Path, url: str) -> None:
    with pytest.raises(UserError, match="--storage"):
        tune(SPACE, StudyConfig(storage=url, name="s", n_trials=1), runner, {})


def test_no_feasible_trial_gives_no_best(tmp_path: Path) -> None:
    def all_fail(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        return TrialResult(status="failed", reason=FailureReason.STARTUP_CRASH, command=[],
                           env={})

    study = tune(SPACE, cfg(tmp_path, 3), all_fail, {})
    assert best_trial(study) is None


def test_environment_failures_are_retried_not_learned_and_stop_a_dirty_machine(
        tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        calls.append(number)
        if number == 1:
            raise EnvironmentFailure("machine not back to its baseline")
        return runner(params, number)

    study = tune(SPACE, cfg(tmp_path, 3), flaky, {})
    states = [(t.state.name, t.user_attrs.get("reason")) for t in study.trials]
    assert states[1] == ("FAIL", "environment")
    assert counted_trials(study) == 3
    # the candidate the machine could not measure was measured on a later trial
    assert study.trials[1].params in [t.params for t in study.trials[2:]
                                      if t.state.name == "COMPLETE"]

    def dirty(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        raise EnvironmentFailure("6 GiB still in use")

    with pytest.raises(AutotuneError, match="3 trials in a row"):
        tune(SPACE, cfg(tmp_path, 3, name="dirty"), dirty, {})


def test_the_baseline_passes_no_tuned_option_and_a_null_choice_returns_to_defaults(
        tmp_path: Path) -> None:
    space = parse_space({
        "name": "n",
        "args": {"enforce-eager": True,
                 "max-num-seqs": {"type": "categorical", "choices": [None, 2, 4]}},
        "env": {"VLLM_CPU_KVCACHE_SPACE": {"type": "categorical", "choices": [None, 1]},
                "OMP_NUM_THREADS": "1"},
        "sampler": {"n_startup_trials": 2, "seed": 3},
        "enqueue": [{"max-num-seqs": 4}],
    })
    seen: list[TrialParams] = []

    def record(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        seen.append(params)
        return runner(params, number)

    study = tune(space, cfg(tmp_path, 8), record, {})
    base = seen[0]
    assert base.args == {"enforce-eager": True} and base.env == {"OMP_NUM_THREADS": "1"}
    assert is_baseline(study.trials[0])
    # an enqueued candidate is vLLM's defaults plus what it names, nothing drawn
    assert seen[1].args == {"enforce-eager": True, "max-num-seqs": 4}
    assert seen[1].env == {"OMP_NUM_THREADS": "1"}
    # later candidates may leave either option unset: the search can return to a default
    unset = [p for p in seen[1:] if "max-num-seqs" not in p.args]
    assert unset, [p.args for p in seen]
    assert all(p.env["OMP_NUM_THREADS"] == "1" for p in seen)


def test_a_hopeless_candidate_is_pruned_and_never_best(tmp_path: Path) -> None:
    space = SPACE.model_copy(update={"enqueue": [{"max-num-seqs": 1}]})

    def measured(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        n = params.args.get("max-num-seqs", DEFAULT_SEQS)
        values = [100.0 * n * f for f in (1.0, 1.01, 0.99, 1.0)]
        for step, x in enumerate(values):
            if prune(step, x):
                r = result(n, rounds=step + 1)
                return r.model_copy(update={"status": "pruned", "saved_s": 5.0,
                                            "round_values": values[:step + 1]})
        return result(n).model_copy(update={"round_values": values})

    study = tune(space, cfg(tmp_path, 2), measured, {})
    base, slow = study.trials
    assert base.state.name == "COMPLETE" and not base.user_attrs.get("saved_s")
    # max-num-seqs 1 measures 100 against the defaults' 600: stopped after its 3rd round
    assert slow.state.name == "PRUNED"
    assert len(slow.intermediate_values) == 3 and slow.user_attrs["saved_s"] == 5.0
    assert best_trial(study) is not None and best_trial(study).number == base.number


def test_no_pruning_for_an_objective_that_is_not_a_per_round_figure(tmp_path: Path) -> None:
    # a memory-minimizing study: the rounds give output throughput, not memory, so the
    # pruner cannot judge a candidate from them (it would stop one twice as fast as the best
    # as "hopeless", its throughput far "above" the best's in the minimizing direction)
    space = parse_space({
        "name": "mem",
        "args": {"max-num-seqs": {"type": "int", "low": 1, "high": 16},
                 "enforce-eager": True},
        "objective": {"metric": "peak_memory_bytes", "direction": "minimize"},
        "sampler": {"n_startup_trials": 3, "seed": 0},
        "enqueue": [{"max-num-seqs": 12}],
    })
    checked: list[bool] = []

    def measured(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        n = params.args.get("max-num-seqs", DEFAULT_SEQS)
        values = [100.0 * n * f for f in (1.0, 1.01, 0.99, 1.0)]  # output throughput
        for step, x in enumerate(values):
            checked.append(prune(step, x))
            if checked[-1]:
                return result(n, rounds=step + 1).model_copy(update={
                    "status": "pruned", "round_values": values[:step + 1]})
        r = result(n).model_copy(update={"round_values": values})
        return r.model_copy(update={"metrics": {**r.metrics, "peak_memory_bytes":
                                                Estimate.single(1e9 * n)}})

    study = tune(space, cfg(tmp_path, 2), measured, {})
    base, fast = study.trials
    assert fast.params == {"max-num-seqs": 12}
    # max-num-seqs 12 measures 1200 against the defaults' 600: more memory, never pruned
    assert fast.state.name == "COMPLETE" and not any(checked)
    # the throughput rounds are not the objective's: none is reported as an intermediate value
    assert not base.intermediate_values and not fast.intermediate_values
    assert best_trial(study) is not None and best_trial(study).number == base.number


def test_the_study_keeps_every_level_with_its_intervals(tmp_path: Path) -> None:
    from autotune.measure.metrics import LevelResult

    def with_levels(params: TrialParams, number: int, prune: PruneCheck | None = None
                    ) -> TrialResult:
        r = result(4)
        est = Estimate(value=50.0, low=45.0, high=55.0, n=3, basis="rounds")
        levels = [LevelResult(label=f"concurrency={c}", level={"concurrency": c},
                              metrics={"output_throughput": est}, server={}, rounds=[])
                  for c in (1, 8)]
        return r.model_copy(update={"levels": levels})

    study = tune(SPACE, cfg(tmp_path, 1), with_levels, {})
    t = study.trials[0]
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}"
                               ).trials[0].user_attrs
    assert t.user_attrs["levels"] == stored["levels"]
    assert [lv["label"] for lv in stored["levels"]] == ["concurrency=1", "concurrency=8"]
    assert stored["levels"][1]["metrics"]["output_throughput"] == {
        "value": 50.0, "low": 45.0, "high": 55.0, "n": 3, "basis": "rounds"}
    assert stored["round_values"] == [400.0] * 3


def test_a_repeat_draw_is_answered_from_the_study_without_a_start(tmp_path: Path) -> None:
    # two tuned values plus vLLM's defaults (None): 3 distinct candidates, 8 trials
    space = parse_space({
        "name": "tiny",
        "args": {"max-num-seqs": {"type": "categorical", "choices": [None, 2, 4]},
                 "enforce-eager": True},
        "objective": {"metric": "output_throughput"},
        "sampler": {"n_startup_trials": 2, "seed": 3},
    })
    started: list[TrialParams] = []

    def counting(params: TrialParams, number: int, prune: PruneCheck | None = None
                 ) -> TrialResult:
        started.append(params)
        return runner(params, number, prune)

    reports: list[TrialReport] = []
    study = tune(space, cfg(tmp_path, 8), counting, {}, reports.append)
    # every candidate measured once (None is vLLM's defaults, the baseline trial's settings);
    # then the space is exhausted and the run ends below its budget of 8
    assert len(started) == len({repr(p) for p in started}) == 3
    assert counted_trials(study) == 3
    repeats = [t for t in study.trials if t.user_attrs.get("repeat_of") is not None]
    assert repeats and len(study.trials) == 3 + len(repeats)
    # a repeat is followed by a candidate not seen before (the sampler cannot stay stuck)
    for t in repeats:
        if t.number + 1 < len(study.trials):
            assert study.trials[t.number + 1].user_attrs.get("repeat_of") is None
    for t in repeats:
        twin = study.trials[t.user_attrs["repeat_of"]]
        assert t.value == twin.value and twin.user_attrs.get("repeat_of") is None
        assert t.user_attrs["metrics"] == twin.user_attrs["metrics"]
        assert "answered from its measurement (no server started)" in t.user_attrs["detail"]
    assert {r.repeat_of for r in reports} - {None} == {t.user_attrs["repeat_of"]
                                                      for t in repeats}
    # vLLM's defaults drawn again by the sampler are not a finalist: they are the baseline
    from autotune.space.search import baseline_params, resolve
    from autotune.study.trials import finalists

    def settings(t: optuna.trial.FrozenTrial) -> TrialParams:
        return baseline_params(space) if is_baseline(t) else resolve(space, t.params)

    chosen = finalists(study, 3, settings)
    assert baseline_params(space) not in [settings(t) for t in chosen]
    assert len({repr(settings(t)) for t in chosen}) == len(chosen)
