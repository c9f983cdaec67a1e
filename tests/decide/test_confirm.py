"""The confirmation round's schedule and bookkeeping, with a scripted measurement."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from autotune.core.errors import EnvironmentFailure
from autotune.core.stats import Estimate
from autotune.decide.confirm import Arm, confirm, distinct, order, schedule
from autotune.decide.sequential import Rule
from autotune.measure.result import TrialResult
from autotune.space.goals import Objective
from autotune.space.params import TrialParams


@pytest.mark.parametrize("arms", range(1, 7))
def test_the_order_is_balanced_for_any_number_of_rounds_and_arms(arms: int) -> None:
    for rounds in range(1, 3 * arms + 2):
        plan = schedule(arms, rounds)
        assert sorted(plan) == sorted((r, a) for r in range(rounds) for a in range(arms))
        # every position of a round: no arm takes it more than once more than another
        for pos in range(arms):
            seen = Counter(order(arms, r)[pos] for r in range(rounds))
            counts = [seen.get(a, 0) for a in range(arms)]
            assert max(counts) - min(counts) <= 1, (arms, rounds, pos, counts)
    # over the whole design each arm follows each other arm equally often
    period = arms if arms % 2 == 0 else 2 * arms
    follows = Counter((row[k], row[k + 1]) for r in range(period)
                      for row in [order(arms, r)] for k in range(arms - 1))
    assert len(set(follows.values())) <= 1
    assert len(follows) == arms * (arms - 1)


def test_the_same_settings_are_confirmed_once_under_the_first_role() -> None:
    base = Arm("vLLM defaults", "baseline", TrialParams(args={"max-model-len": 512}))
    same = Arm("current profile", "incumbent", TrialParams(args={"max-model-len": 512}))
    other = Arm("trial 4", "finalist", TrialParams(args={"max-model-len": 512, "seed": 1}))
    assert [a.name for a in distinct([base, same, other])] == ["vLLM defaults", "trial 4"]


def result(tput: float | None, tpot: float = 5.0) -> TrialResult:
    if tput is None:
        return TrialResult(status="failed", command=[], env={}, detail="boom")
    return TrialResult(status="ok", command=[], env={}, metrics={
        "output_throughput": Estimate(value=tput, low=tput * 0.98, high=tput * 1.02, n=4,
                                      basis="rounds"),
        "median_tpot_ms": Estimate(value=tpot, n=4, basis="rounds")})


def test_confirm_measures_in_order_and_states_gains_against_the_baseline() -> None:
    drift = iter([1.0, 1.0, 0.8, 0.8, 1.2, 1.2])  # the machine changes round to round
    calls: list[str] = []

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        d = next(drift)
        fast = params.args.get("fast", False)
        return result((130.0 if fast else 100.0) * d, tpot=4.0 if fast else 5.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 2", "finalist", TrialParams(args={"fast": True}), trial=2)]
    conf = confirm(arms, 3, Objective(), runner)
    assert calls == ["confirm/round-01-vllm-defaults", "confirm/round-01-trial-2",
                     "confirm/round-02-trial-2", "confirm/round-02-vllm-defaults",
                     "confirm/round-03-vllm-defaults", "confirm/round-03-trial-2"]
    fast = conf.arm("trial 2")
    assert fast is not None
    # drift hits both arms of a round alike: the paired ratio is exactly 1.3
    g = fast.vs_baseline["output_throughput"]
    assert abs(g.value - 1.3) < 1e-9 and g.n == 3 and g.basis == "starts"
    assert abs(fast.vs_baseline["median_tpot_ms"].value - 0.8) < 1e-9
    assert fast.figures["output_throughput"].n == 3
    assert conf.verdict.winner == "trial 2"


def test_an_arm_that_fails_a_round_is_recorded_and_cannot_win() -> None:
    def runner(params: TrialParams, where: str) -> TrialResult:
        if where == "confirm/round-02-trial-1":
            return result(None)
        return result(300.0 if params.args else 100.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), trial=1)]
    conf = confirm(arms, 3, Objective(), runner)
    flaky = conf.arm("trial 1")
    assert flaky is not None and flaky.objective == [300.0, None, 300.0]
    assert flaky.failure == "failed: boom"
    assert conf.verdict.winner == "vLLM defaults"


def test_a_clear_gain_settles_in_the_minimum_rounds_and_a_close_call_uses_the_budget() -> None:
    calls: list[str] = []
    wobble = [1.0, 0.9, 1.1, 0.95, 1.05]

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        k = int(where.split("-")[1]) - 1
        return result(float(params.args.get("speed", 100)) * wobble[k % 5])

    base = Arm("vLLM defaults", "baseline", TrialParams())
    rule = Rule(max_rounds=12, min_rounds=3, detect=0.05)
    twice = confirm([base, Arm("trial 1", "finalist", TrialParams(args={"speed": 200}), 1)],
                    rule, Objective(), runner)
    assert twice.rounds == 3 and twice.max_rounds == 12 and len(calls) == 6
    assert twice.verdict.winner == "trial 1" and twice.verdict.settled
    # the same speed: within noise each round, so it is settled as not worth having only
    # when the interval excludes +5%; an exact tie does so at once
    calls.clear()
    tie = confirm([base, Arm("trial 2", "finalist", TrialParams(args={"speed": 100}), 2)],
                  rule, Objective(), runner)
    assert tie.verdict.winner == "vLLM defaults" and tie.rounds == 3

    def noisy(params: TrialParams, where: str) -> TrialResult:
        k = int(where.split("-")[1]) - 1
        jitter = [1.3, 0.75, 1.2, 0.8][k % 4] if params.args else 1.0
        return result(100.0 * jitter)

    arms = [base, Arm("trial 3", "finalist", TrialParams(args={"x": 1}), 3)]
    every = dataclasses.replace(rule, stop_below=0.0)  # never stopped as unsettleable
    close = confirm(arms, every, Objective(), noisy)
    assert close.rounds == 12 and close.verdict.winner == "vLLM defaults"
    assert not close.verdict.comparisons[0].settled
    assert "1 challenger still unsettled at the budget's end (12 rounds)" in \
        close.verdict.summary
    assert "more rounds to tell a gain of +5%" in close.verdict.summary
    # the shipped rule sees at its first look that 9 more rounds of this noise around a nil
    # gain can neither find a win nor rule out +5%: it stops there and says so
    calls.clear()
    short = confirm(arms, rule, Objective(), noisy)
    (c,) = short.verdict.comparisons
    assert short.rounds == 3 and c.stopped and not c.settled and short.verdict.settled
    assert short.verdict.winner == "vLLM defaults"
    assert "trial 3 stopped after 3 rounds: it could not be settled in the 9 rounds left" \
        in short.verdict.summary
    assert c.win_chance is not None and c.win_chance < 0.1


def test_a_fault_of_the_machine_is_measured_again_and_earlier_rounds_are_kept() -> None:
    faults = {"confirm/round-02-trial-1": 2}
    calls: list[str] = []

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        if faults.get(where, 0) > 0:
            faults[where] -= 1
            raise EnvironmentFailure("machine not back to its baseline")
        return result(300.0 if params.args else 100.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), trial=1)]
    conf = confirm(arms, 3, Objective(), runner)
    assert calls.count("confirm/round-02-trial-1") == 3
    assert conf.arm("trial 1").objective == [300.0, 300.0, 300.0]  # type: ignore[union-attr]
    assert conf.verdict.winner == "trial 1"
    # a machine that stays unfit stops the confirmation; a resumed one measures only the rest
    faults["confirm/round-02-trial-1"] = 5
    done: dict[str, TrialResult] = {}

    def recording(params: TrialParams, where: str) -> TrialResult:
        res = runner(params, where)
        done[where] = res
        return res

    with pytest.raises(EnvironmentFailure):
        confirm(arms, 3, Objective(), recording)
    before = set(done)
    assert "confirm/round-01-trial-1" in before
    faults.clear()
    calls.clear()
    again = confirm(arms, 3, Objective(), recording, previous=done.get)
    assert not set(calls) & before
    assert again.verdict.winner == "trial 1" and again.rounds == 3


def test_nothing_served_is_a_failed_round() -> None:
    def runner(params: TrialParams, where: str) -> TrialResult:
        if params.args and where.startswith(("confirm/round-01", "confirm/round-02")):
            return result(0.0)
        return result(10.0 if params.args else 5.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), trial=1)]
    conf = confirm(arms, 4, Objective(), runner)
    rec = conf.arm("trial 1")
    assert rec is not None and rec.objective == [None, None, 10.0, 10.0]
    assert rec.failure is not None and "nothing served" in rec.failure
    assert conf.verdict.winner == "vLLM defaults"


def test_an_interrupted_confirmation_resumes_and_a_finished_one_is_set_aside(
        tmp_path: Path) -> None:
    from autotune.app import resume
    from autotune.measure.records import write_json

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), trial=1)]
    assert resume.begin(tmp_path, arms)("confirm/round-01-trial-1") is None
    write_json(tmp_path / "confirm/round-01-trial-1/result.json",
               {"trial": None, "study": "s", "args": {"x": 1},
                **result(300.0).model_dump(mode="json")})
    # the same arms, not finished: the slot is taken as measured
    got = resume.begin(tmp_path, arms)("confirm/round-01-trial-1")
    assert got is not None and got.value("output_throughput") == 300.0
    # other arms: the folder is set aside, nothing is taken from it
    other = [arms[0], Arm("trial 2", "finalist", TrialParams(args={"x": 2}), trial=2)]
    assert resume.begin(tmp_path, other)("confirm/round-01-trial-1") is None
    assert len(list(tmp_path.glob("confirm.*/round-01-trial-1/result.json"))) == 1
    # a finished confirmation is set aside too: a later run confirms afresh
    resume.finish(tmp_path, {"done": True})
    assert resume.begin(tmp_path, other)("confirm/round-01-trial-1") is None
    assert len(list(tmp_path.glob("confirm.*/confirmation.json"))) == 1
    assert (tmp_path / "confirm" / "plan.json").is_file()


def test_a_broken_profile_is_replaced_and_the_change_log_says_why(tmp_path: Path) -> None:
    from autotune.profiles.changelog import entry
    from autotune.profiles.profile import Profile, ProfileMeta

    def runner(params: TrialParams, where: str) -> TrialResult:
        if "current-profile" in where and not where.startswith("confirm/round-02"):
            return result(None)  # it fails three rounds of four
        return result(100.0 if not params.args else 101.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("current profile", "incumbent", TrialParams(args={"max-num-seqs": 2})),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), trial=1)]
    conf = confirm(arms, 4, Objective(), runner, replace_gain=0.05)
    assert conf.verdict.reference == "vLLM defaults"
    assert conf.verdict.broken is not None and "failed 3 of 4 rounds" in conf.verdict.broken
    meta = ProfileMeta.model_validate({
        "autotune_version": "0", "created": "2026-12-01T00:00:00+00:00", "target": "cpu",
        "model": "m", "model_revision": "r", "hardware": {}, "vllm_version": "v",
        "space": "s", "space_fingerprint": "f", "workload": {}, "study": "s", "trial": None,
        "objective": {}, "metrics": {}, "gain": {}, "verdict": conf.verdict.summary,
        "confirmation": {}, "env": {}, "serve": "vllm serve"})
    old = Profile(settings={"model": "m", "max-num-seqs": 2}, meta=meta)
    new = Profile(settings={"model": "m"}, meta=meta)
    text = entry(tmp_path / "m.yaml", tmp_path / "old.yaml", old, new, conf,
                 conf.verdict.winner or "")
    assert "the current profile failed 3 of 4 rounds" in text
    assert "declared broken in this run's confirmation" in text
    assert "measured on other hardware" not in text


def test_a_win_at_a_look_stands_while_another_challenger_keeps_the_rounds_going() -> None:
    def runner(params: TrialParams, where: str) -> TrialResult:
        k = int(where.split("-")[1])
        if params.args.get("fast"):
            return result(200.0 if k <= 3 else 100.0)  # won at the first look, then faded
        if params.args.get("noisy"):
            return result(100.0 * [1.3, 0.75, 1.2, 0.8][k % 4])  # keeps the rounds going
        return result(100.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"fast": True}), 1),
            Arm("trial 2", "finalist", TrialParams(args={"noisy": True}), 2)]
    conf = confirm(arms, Rule(max_rounds=8, min_rounds=3), Objective(), runner)
    assert conf.rounds > 3
    assert conf.verdict.winner == "trial 1"
    (c,) = [c for c in conf.verdict.comparisons if c.challenger == "trial 1"]
    assert c.look == 3 and c.beats and "over 3 interleaved rounds" in conf.verdict.summary


def test_a_round_measured_in_part_before_an_interruption_is_measured_again_whole() -> None:
    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"x": 1}), 1),
            Arm("trial 2", "finalist", TrialParams(args={"x": 2}), 2)]
    done: dict[str, TrialResult] = {}
    calls: list[str] = []
    broken = {"on": True}

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        if broken["on"] and where.startswith("confirm/round-02") and len(
                [w for w in done if w.startswith("confirm/round-02")]) == 1:
            raise EnvironmentFailure("port taken")
        done[where] = result(100.0 + len(params.args))
        return done[where]

    with pytest.raises(EnvironmentFailure):
        confirm(arms, 3, Objective(), runner)
    partial = [w for w in done if w.startswith("confirm/round-02")]
    assert len(partial) == 1
    broken["on"] = False
    calls.clear()
    again = confirm(arms, 3, Objective(), runner, previous=done.get)
    assert not any(w.startswith("confirm/round-01") for w in calls)
    assert partial[0] in calls  # the part measured before is measured again with the rest
    assert sum(w.startswith("confirm/round-02") for w in calls) == 3
    assert again.rounds == 3


def test_a_profile_that_breaks_its_slo_in_a_start_is_replaced_and_the_log_says_why(
        tmp_path: Path) -> None:
    from autotune.profiles.changelog import entry
    from autotune.profiles.profile import Profile, ProfileMeta

    def runner(params: TrialParams, where: str) -> TrialResult:
        if "current-profile" in where and where.startswith("confirm/round-02"):
            return result(None)  # one start of three fails
        return result(100.0 if params.args else 50.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("current profile", "incumbent", TrialParams(args={"x": 100.0})),
            Arm("trial 1", "finalist", TrialParams(args={"y": 100.0}), trial=1)]
    conf = confirm(arms, Rule(max_rounds=3), Objective(), runner, replace_gain=0.05)
    v = conf.verdict
    assert v.reference == "current profile" and v.broken is None
    assert v.winner == "trial 1", v.summary
    assert "failed or broke a constraint in 1 of 3 rounds that trial 1 served" in v.summary
    meta = ProfileMeta.model_validate({
        "autotune_version": "0", "created": "2026-12-01T00:00:00+00:00", "target": "cpu",
        "model": "m", "model_revision": "r", "hardware": {}, "vllm_version": "v",
        "space": "s", "space_fingerprint": "f", "workload": {}, "study": "s", "trial": None,
        "objective": {}, "metrics": {}, "gain": {}, "verdict": v.summary,
        "confirmation": {}, "env": {}, "serve": "vllm serve"})
    old = Profile(settings={"model": "m", "x": 100}, meta=meta)
    new = Profile(settings={"model": "m", "y": 100}, meta=meta)
    text = entry(tmp_path / "m.yaml", tmp_path / "old.yaml", old, new, conf, "trial 1")
    assert "- why: the replaced profile failed or broke a constraint in 1 of 3 rounds" in text


def test_arms_that_cannot_win_are_measured_no_further_and_ties_go_to_fewer_changes() -> None:
    calls: list[str] = []

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        if params.args.get("slow"):
            return result(50.0)
        return result(200.0 if params.args else 100.0)

    base = Arm("vLLM defaults", "baseline", TrialParams())
    arms = [base, Arm("trial 1", "finalist", TrialParams(args={"a": 1, "b": 2, "c": 3}), 1),
            Arm("trial 2", "finalist", TrialParams(args={"a": 1}), 2),
            Arm("trial 3", "finalist", TrialParams(args={"slow": True}), 3)]
    conf = confirm(arms, Rule(max_rounds=8), Objective(), runner)
    # the two fast ones tie: the one with one change wins, whatever the list order
    assert conf.verdict.winner == "trial 2"
    assert "trial 1, trial 2 cannot be told apart" in conf.verdict.choice
    # the slow one was ruled out at the first look and every arm settled there
    assert conf.rounds == 3 and len(calls) == 12


def test_a_finalist_that_failed_a_round_is_not_measured_after_the_look_that_saw_it() -> None:
    calls: list[str] = []

    def runner(params: TrialParams, where: str) -> TrialResult:
        calls.append(where)
        k = int(where.split("-")[1])
        if params.args.get("flaky") and k == 2:
            return result(None)
        if params.args.get("noisy"):
            return result(100.0 * [1.3, 0.75, 1.2, 0.8][k % 4])  # keeps the rounds going
        return result(100.0)

    arms = [Arm("vLLM defaults", "baseline", TrialParams()),
            Arm("trial 1", "finalist", TrialParams(args={"flaky": True}), 1),
            Arm("trial 2", "finalist", TrialParams(args={"noisy": True}), 2)]
    conf = confirm(arms, Rule(max_rounds=6, stop_below=0.0), Objective(), runner)
    assert conf.rounds == 6 and conf.verdict.out == ["trial 1"]
    assert sum("trial-1" in c for c in calls) == 3  # rounds 1-3, then out
    assert sum("trial-2" in c for c in calls) == 6
    assert conf.verdict.winner == "vLLM defaults"
