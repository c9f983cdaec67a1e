"""The confirmation round's schedule and bookkeeping, with a scripted measurement."""

from __future__ import annotations

from autotune.confirm import Arm, confirm, distinct, schedule
from autotune.objective import TrialResult
from autotune.space import Objective, TrialParams
from autotune.stats import Estimate


def test_every_arm_once_per_round_and_the_order_rotates() -> None:
    order = schedule(3, 4)
    assert order == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0), (2, 2), (2, 0), (2, 1),
                     (3, 0), (3, 1), (3, 2)]
    firsts = [a for i, (r, a) in enumerate(order) if i % 3 == 0]
    assert firsts == [0, 1, 2, 0], "no arm always goes first"


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
