"""Warm starts: other hardware's profiles of the same model, mapped into this run's space and
queued right after vLLM's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.core.stats import Estimate
from autotune.measure.result import PruneCheck, TrialResult
from autotune.profiles.catalog import Entry
from autotune.profiles.profile import Profile, write_profile
from autotune.profiles.warm import (
    MAX_WARM_STARTS,
    WARM_FROM,
    WarmStart,
    fit,
    for_run,
    mapped,
    other_hardware,
    warm_starts,
)
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, parse_space
from autotune.study.opening import StudyConfig
from autotune.study.screening import screens
from autotune.study.trials import BASELINE, ROLE, counted_trials
from autotune.study.tuner import tune
from tests.profiles.test_profile import meta

SPACE = parse_space({
    "name": "w",
    "args": {
        "max-model-len": 1024,
        "dtype": {"type": "categorical", "choices": [None, "float32"]},
        "enforce-eager": {"type": "categorical", "choices": [None, True]},
        "max-num-seqs": {"type": "int", "low": 4, "high": 64, "step": 4},
        "gpu-memory-utilization": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.05},
        "max-cudagraph-capture-size": {"type": "categorical", "choices": [None, 64],
                                       "when": {"enforce-eager": None}},
    },
    "env": {"VLLM_CPU_KVCACHE_SPACE": {"type": "categorical", "choices": [None, 1, 4]},
            "OMP_NUM_THREADS": "1"},
    "sampler": {"warm_start": True},
})


def profile(settings: dict[str, Any], env: dict[str, str] | None = None,
            trial: int | None = 3) -> Profile:
    return Profile(settings={"model": "/elsewhere/m", **settings},
                   meta=meta(env=env or {}, trial=trial))


def entry(key: str, p: Profile | None, problem: str = "") -> Entry:
    return Entry(Path("profiles") / key / "m.yaml", p, problem)


# -- mapping into the space's ranges ----------------------------------------------------------

def test_a_choice_of_the_space_is_taken_and_one_it_lacks_dropped() -> None:
    values, notes = mapped(SPACE, {"dtype": "float32", "enforce-eager": True}, {}, {})
    assert values == {"dtype": "float32", "enforce-eager": True} and notes == []
    values, notes = mapped(SPACE, {"dtype": "bfloat16", "enforce-eager": True}, {}, {})
    assert values == {"enforce-eager": True}
    assert notes == ["dropped: dtype='bfloat16' (not among its choices [None, 'float32'])"]


def test_a_switch_is_not_the_number_one() -> None:
    space = parse_space({"name": "b", "args": {
        "x": {"type": "categorical", "choices": [None, 1]},
        "y": {"type": "categorical", "choices": [None, True]}}})
    assert mapped(space, {"x": True, "y": 1}, {}, {})[0] == {}


def test_a_range_takes_the_nearest_allowed_value_and_says_so() -> None:
    values, notes = mapped(SPACE, {"max-num-seqs": 30, "gpu-memory-utilization": 0.87}, {}, {})
    assert values == {"max-num-seqs": 28, "gpu-memory-utilization": 0.85}
    assert notes == ["max-num-seqs 30 -> 28 (the nearest allowed)",
                     "gpu-memory-utilization 0.87 -> 0.85 (the nearest allowed)"]
    # on a step already: no note
    assert mapped(SPACE, {"max-num-seqs": 32}, {}, {}) == ({"max-num-seqs": 32}, [])


@pytest.mark.parametrize(("spec", "value", "expected"), [
    ({"type": "int", "low": 4, "high": 64, "step": 4}, 63, 64),
    ({"type": "int", "low": 4, "high": 66, "step": 4}, 66, 64),  # the top off the step
    ({"type": "int", "low": 1, "high": 512, "log": True}, 100, 100),
    ({"type": "int", "low": 1, "high": 512, "log": True}, 99.6, 100),
    ({"type": "float", "low": 0.5, "high": 0.95}, 0.913, 0.913),
    ({"type": "categorical", "choices": [None, 8, 32]}, "32", 32),  # YAML text of a number
])
def test_fit_inside_a_range(spec: dict[str, Any], value: Any, expected: Any) -> None:
    space = parse_space({"name": "f", "args": {"x": spec}})
    got = fit(space.tuned()["x"], value)
    assert got == expected and type(got) is type(expected)


def test_a_value_outside_the_range_is_dropped_not_clamped() -> None:
    values, notes = mapped(SPACE, {"max-num-seqs": 256, "dtype": "float32"}, {}, {})
    assert values == {"dtype": "float32"}
    assert notes == ["dropped: max-num-seqs=256 (outside [4, 64])"]


def test_options_the_space_fixes_or_does_not_know_are_dropped() -> None:
    values, notes = mapped(SPACE, {"max-model-len": 4096, "swap-space": 8, "dtype": "float32",
                                   "load-format": "dummy"}, {}, {"load-format": "dummy"})
    assert values == {"dtype": "float32"}
    assert notes == ["dropped: max-model-len (fixed here), swap-space (not in this space)"]
    # the same value as the one fixed here is no change: nothing to say
    assert mapped(SPACE, {"max-model-len": 1024, "dtype": "float32"}, {}, {}) == (
        {"dtype": "float32"}, [])


def test_environment_variables_are_mapped_by_their_text() -> None:
    values, notes = mapped(SPACE, {}, {"VLLM_CPU_KVCACHE_SPACE": "4", "OMP_NUM_THREADS": "1"},
                           {})
    assert values == {"env:VLLM_CPU_KVCACHE_SPACE": 4} and notes == []
    values, notes = mapped(SPACE, {}, {"VLLM_CPU_KVCACHE_SPACE": "40", "OMP_NUM_THREADS": "2",
                                       "VLLM_OTHER": "x"}, {})
    assert values == {}
    assert notes == ["dropped: env:VLLM_CPU_KVCACHE_SPACE='40' (not among its choices "
                     "[None, 1, 4]), env:OMP_NUM_THREADS (fixed here), env:VLLM_OTHER (not in "
                     "this space)"]


def test_an_option_whose_condition_fails_is_dropped() -> None:
    values, notes = mapped(SPACE, {"enforce-eager": True, "max-cudagraph-capture-size": 64},
                           {}, {})
    assert values == {"enforce-eager": True}
    assert notes == ["dropped: max-cudagraph-capture-size (tuned here only when "
                     "{'enforce-eager': None})"]
    assert mapped(SPACE, {"max-cudagraph-capture-size": 64}, {}, {})[0] == {
        "max-cudagraph-capture-size": 64}


# -- which profiles become warm starts, and why not ---------------------------------------------

def test_skipped_profiles_say_why() -> None:
    starts = warm_starts(SPACE, [
        entry("a", profile({"dtype": "float32"}, trial=None)),
        entry("b", profile({"dtype": "bfloat16", "max-model-len": 2048})),
        entry("c", profile({"max-model-len": 1024})),
        entry("d", None, "no autotune metadata block"),
        entry("e", profile({"enforce-eager": True}, {"VLLM_CPU_KVCACHE_SPACE": "1"})),
    ])
    assert [w.line() for w in starts] == [
        "warm start: a/m.yaml skipped: it is vLLM's defaults, the first trial already",
        "warm start: b/m.yaml skipped: this space can express none of it (dropped: "
        "dtype='bfloat16' (not among its choices [None, 'float32']), max-model-len (fixed "
        "here))",
        "warm start: c/m.yaml skipped: in this space it is vLLM's defaults, the first trial "
        "already",
        "warm start: d/m.yaml skipped: unreadable (no autotune metadata block)",
        "warm start: e/m.yaml -> {'enforce-eager': True, 'env:VLLM_CPU_KVCACHE_SPACE': 1}",
    ]


def test_the_same_candidate_is_used_once_and_at_most_a_few() -> None:
    same = [entry(k, profile({"dtype": "float32", "max-model-len": 4096})) for k in "ab"]
    starts = warm_starts(SPACE, same)
    assert [w.params for w in starts] == [{"dtype": "float32"}, None]
    assert starts[0].note == "dropped: max-model-len (fixed here)"
    assert starts[1].note == "the same candidate as a/m.yaml"
    many = [entry(str(n), profile({"max-num-seqs": 4 * n})) for n in range(1, 6)]
    starts = warm_starts(SPACE, many)
    assert sum(w.params is not None for w in starts) == MAX_WARM_STARTS
    assert starts[-1].note.startswith(f"{MAX_WARM_STARTS} warm starts already")


def test_profiles_of_this_hardware_key_are_the_incumbent_not_warm_starts(tmp_path: Path
                                                                         ) -> None:
    root = tmp_path / "profiles"
    here = root / "cpu-intel-avx512-2c" / "m.yaml"
    for path in (here, root / "h100" / "m.yaml", root / "h100" / "other-model.yaml",
                 root / "l4" / "m.yaml", root / "h100" / "history" / "m.yaml"):
        write_profile(profile({"dtype": "float32"}), path)
    (root / "a10g").mkdir()
    (root / "a10g" / "m.yaml").write_text("dtype: float32\n")  # no metadata
    found = other_hardware(here)
    assert [(e.path.parent.name, e.profile is not None) for e in found] == [
        ("a10g", False), ("h100", True), ("l4", True)]
    # the first start from elsewhere, the unreadable one said, the same candidate once
    assert [w.line() for w in warm_starts(SPACE, found)] == [
        "warm start: a10g/m.yaml skipped: unreadable (" + found[0].problem + ")",
        "warm start: h100/m.yaml -> {'dtype': 'float32'}",
        "warm start: l4/m.yaml skipped: the same candidate as h100/m.yaml"]
    assert for_run(SPACE, here, {})[1].params == {"dtype": "float32"}
    # off unless the space asks for it, and never under the grid sampler
    for sampler in ({"warm_start": False}, {"name": "grid", "warm_start": True}):
        off = SPACE.model_copy(update={"sampler": SPACE.sampler.model_copy(update=sampler)})
        assert for_run(off, here, {}) == ()


def test_the_shipped_catalog_gives_warm_starts_after_the_users_own(tmp_path: Path) -> None:
    root, shipped = tmp_path / "profiles", tmp_path / "shipped"
    here = root / "cpu-intel-avx512-2c" / "m.yaml"
    write_profile(profile({"dtype": "float32"}), root / "h100" / "m.yaml")
    # the catalog's, this hardware key's among them (another machine of this kind)
    write_profile(profile({"max-num-seqs": 8}), shipped / "cpu-intel-avx512-2c" / "m.yaml")
    write_profile(profile({"max-num-seqs": 8}), shipped / "cpu-intel-avx512-2c" / "x.yaml")
    found = other_hardware(here, shipped)
    assert [(e.path.parent.parent.name, e.shipped) for e in found] == [
        ("profiles", False), ("shipped", True)]
    assert [w.line() for w in warm_starts(SPACE, found)][1].startswith(
        "warm start: shipped cpu-intel-avx512-2c/m.yaml -> ")
    # run from the project's checkout, the catalog is the user's own folder: listed once
    assert len(other_hardware(shipped / "cpu-intel-avx512-2c" / "m.yaml", shipped)) == 0


def test_warm_start_is_off_by_default() -> None:
    assert parse_space({"name": "d"}).sampler.warm_start is False


# -- where they go in the queue ------------------------------------------------------------------

def queued_space() -> SearchSpace:
    return parse_space({
        "name": "q",
        "args": {"dtype": {"type": "categorical", "choices": [None, "float32"]},
                 "max-num-seqs": {"type": "categorical", "choices": [None, 4, 16]},
                 "enforce-eager": {"type": "categorical", "choices": [None, True]}},
        "enqueue": [{"max-num-seqs": 4}],
        "sampler": {"n_startup_trials": 3, "seed": 0, "warm_start": True},
    })


def ok(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
    v = 100.0 + number
    return TrialResult(status="ok", command=[], env={}, round_values=[v] * 3,
                       metrics={"output_throughput": Estimate(value=v, low=v, high=v, n=3,
                                                              basis="rounds")})


def test_warm_starts_come_after_vllms_defaults_and_before_the_enqueued_and_the_screens(
        tmp_path: Path) -> None:
    space = queued_space()
    warm = (WarmStart("h100/m.yaml", {"dtype": "float32", "max-num-seqs": 16}),
            WarmStart("l4/m.yaml", None, "it is vLLM's defaults, the first trial already"),
            WarmStart("a10g/m.yaml", {"enforce-eager": True}))
    first = [{"dtype": "float32", "max-num-seqs": 16, "enforce-eager": None},
             {"dtype": None, "max-num-seqs": None, "enforce-eager": True},
             {"dtype": None, "max-num-seqs": 4, "enforce-eager": None}]
    # the screens (one option changed at a time) not queued already
    rest = [s for s in screens(space, space.sampler.seed) if s not in first]
    assert rest
    notes: list[str] = []
    n = 4 + len(rest)
    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", n, warm=warm),
                 ok, {}, on_note=notes.append)
    trials = study.trials
    assert trials[0].user_attrs[ROLE] == BASELINE
    assert [t.params for t in trials[1:4]] == first
    assert [t.user_attrs.get(WARM_FROM) for t in trials[:4]] == [
        None, "h100/m.yaml", "a10g/m.yaml", None]
    assert [t.params for t in trials[4:n]] == rest
    assert [t.user_attrs.get(ROLE) for t in trials[4:n]] == ["screen"] * len(rest)
    # measured like any other trial and counted toward the budget
    assert counted_trials(study) == n and all(t.state.name == "COMPLETE" for t in trials[:n])
    assert notes[:3] == [w.line() for w in warm]


def test_a_study_that_exists_takes_no_warm_start(tmp_path: Path) -> None:
    cfg = StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 2)
    tune(queued_space(), cfg, ok, {})
    notes: list[str] = []
    warm = (WarmStart("h100/m.yaml", {"dtype": "float32", "max-num-seqs": 16}),)
    study = tune(queued_space(), StudyConfig(cfg.storage, "s", 3, warm=warm), ok, {},
                 on_note=notes.append)
    assert not notes
    assert all(WARM_FROM not in t.user_attrs for t in study.trials)
