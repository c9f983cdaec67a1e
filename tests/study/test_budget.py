"""The shared budget's decisions between trials of several workers (budget.py), on a study in
memory: which trial measures a candidate two workers drew at once, whatever the machine's
speed."""

from __future__ import annotations

import itertools
import time

import optuna
import pytest

from autotune.space.search import parse_space, resolve
from autotune.study import budget

SPACE = parse_space({"name": "b", "args": {"fake-tpot-ms": {
    "type": "categorical", "choices": [None, 1, 4]}},
    "objective": {"metric": "output_throughput"}})
CHOICES: list[float | None] = [None, 1, 4]


def drawn(study: optuna.Study, value: float | None, mark: bool = True) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_categorical("fake-tpot-ms", CHOICES)  # type: ignore[arg-type]
    study._storage.set_trial_param(  # the value this test wants, whatever was sampled
        trial._trial_id, "fake-tpot-ms", CHOICES.index(value),
        optuna.distributions.CategoricalDistribution(CHOICES))  # type: ignore[arg-type]
    if mark:
        trial.set_user_attr(budget.DRAWN, True)
    return trial


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def test_the_later_trial_gives_way_to_an_earlier_one_measuring_the_same_settings(
        study: optuna.Study) -> None:
    first = drawn(study, 4)
    other = drawn(study, 1)
    later = drawn(study, 4)
    params = resolve(SPACE, {"fake-tpot-ms": 4})
    twin = budget.running_twin(study, SPACE, params, later.number)
    assert twin is not None and twin.number == first.number
    assert budget.running_twin(study, SPACE, params, first.number) is None
    assert budget.running_twin(study, SPACE, resolve(SPACE, {"fake-tpot-ms": 1}),
                               later.number).number == other.number  # type: ignore[union-attr]


def test_a_slow_draw_of_an_earlier_trial_is_waited_for_on_a_slow_machine(
        study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> None:
    # every look at the clock costs 5 s, as on a machine so loaded that a trial takes many
    # seconds to draw its settings: the later trial still waits for the earlier one's draw
    first = drawn(study, 4, mark=False)
    later = drawn(study, 4)
    # (the earlier trial's draw lands at the clock's fifth look: no wall clock involved)
    looks = itertools.count()

    def clock() -> float:
        n = next(looks)
        if n == 5:
            first.set_user_attr(budget.DRAWN, True)
        return n * 5.0

    monkeypatch.setattr("autotune.study.budget.monotonic", clock)
    twin = budget.running_twin(study, SPACE, resolve(SPACE, {"fake-tpot-ms": 4}), later.number)
    assert twin is not None and twin.number == first.number
    assert next(looks) > 5  # it waited for the draw


def test_of_two_trials_started_at_once_the_later_is_the_one_beyond_the_budget(
        study: optuna.Study) -> None:
    a, b = drawn(study, 1), drawn(study, 4)
    assert not budget.surplus(study, a.number, total=1)
    assert budget.surplus(study, b.number, total=1)
    assert budget.left(study, total=3) == 1


def test_a_candidate_taken_from_the_queue_after_a_new_trial_started_is_the_later_one(
        study: optuna.Study) -> None:
    # a candidate handed back waits in the queue with its number; one worker creates a new
    # trial (a higher number) and finds one slot left; a moment later another worker takes
    # the queued candidate (the lower number): it started later, so it is the one too many
    study.enqueue_trial({})  # number 0
    new_id = study._storage.create_new_trial(study._study_id)
    new = study._storage.get_trial(new_id).number
    assert not budget.surplus(study, new, total=1)
    time.sleep(0.01)
    taken = study.ask()
    assert taken.number < new
    assert budget.surplus(study, taken.number, total=1)
    assert not budget.surplus(study, new, total=1)


def test_a_trial_created_while_its_twin_was_queued_gives_way_to_it(
        study: optuna.Study) -> None:
    # one worker queues vLLM's defaults and a candidate; another worker, which looked at the
    # queue a moment before, creates a new trial behind them and draws the same settings
    study.enqueue_trial({"fake-tpot-ms": None}, user_attrs={"role": "baseline"})
    study.enqueue_trial({"fake-tpot-ms": 4})
    study.enqueue_trial({})  # the sampler will draw it: nobody's twin
    new_id = study._storage.create_new_trial(study._study_id)
    number = study._storage.get_trial(new_id).number
    defaults = resolve(SPACE, {"fake-tpot-ms": None})
    twin = budget.running_twin(study, SPACE, defaults, number)
    assert twin is not None and twin.number == 0
    twin = budget.running_twin(study, SPACE, resolve(SPACE, {"fake-tpot-ms": 4}), number)
    assert twin is not None and twin.number == 1
    assert budget.running_twin(study, SPACE, resolve(SPACE, {"fake-tpot-ms": 1}), number) is None
    # the queued trials themselves measure: nothing queued before them has their settings
    assert budget.running_twin(study, SPACE, defaults, 0) is None


def test_a_dead_workers_trial_queued_again_is_a_twin_by_its_params(study: optuna.Study) -> None:
    # the heartbeat's retry queues a copy that carries params, not a queue entry
    dist = optuna.distributions.CategoricalDistribution(CHOICES)  # type: ignore[arg-type]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params={"fake-tpot-ms": 4},
        distributions={"fake-tpot-ms": dist}))
    number = study._storage.get_trial(study._storage.create_new_trial(study._study_id)).number
    twin = budget.running_twin(study, SPACE, resolve(SPACE, {"fake-tpot-ms": 4}), number)
    assert twin is not None and twin.number == 0
