"""Property-based: `validate` and `run`'s checks before any start agree on every generated
space and workload (both accept it, or both refuse it with the same one line naming the file),
and what they accept can be met: some measurement satisfies every bound it declares, and the
confirmation looks when it says it will.

The generators mix valid values with the mistakes the checks exist for (sizes below 1, an
absurd or `auto` max-model-len, fractions out of (0, 1], negative or zero SLO bounds, empty
constraint intervals, a confirmation budget below its first look, a grid over a float range,
rules naming what the space lacks). vLLM's parser is left out of both (`--no-verify-options`:
these tests run with vLLM hidden); the model is the built-in tiny one (4096 positions), and
lengths stay below it, so what only a model can decide is tested on its own
(test_validate_limits.py). The example counts are fixed and the runs derandomized, so the
suite sees the same examples every time (`--hypothesis-show-statistics` prints them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.app.inputs import RunConfig, prepare
from autotune.app.validate import check_files
from autotune.core.errors import UserError
from autotune.decide.sequential import Rule
from autotune.space.search import SearchSpace, load_space
from autotune.testing.fake_probe import FakeProbe

SPACE_EXAMPLES = 150
WORKLOAD_EXAMPLES = 100
SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}

sizes = st.sampled_from([-3, 0, 1, 4, 64, 300])
model_lens = st.sampled_from([-5, -1, 0, 1, 64, 512, 4096, "auto", "1k", "2K", "0", 2**31])
fractions = st.sampled_from([-0.5, 0.0, 0.3, 0.9, 1.0, 1.5])
bounds = st.sampled_from([-10.0, 0.0, 0.5, 500.0, math.inf, math.nan])


def tuned_int(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A fixed value, an int range (by its ends), or a categorical with `null`."""
    return st.one_of(
        values,
        st.tuples(values, values).map(lambda t: {"type": "int", "low": min(t), "high": max(t)}
                                      if all(isinstance(x, int) for x in t) else t[0]),
        st.lists(values, min_size=1, max_size=3, unique_by=str).map(
            lambda c: {"type": "categorical", "choices": [None, *c]}))


def tuned_float(values: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    return st.one_of(
        values,
        st.tuples(values, values, st.sampled_from([None, 0.05])).map(
            lambda t: {"type": "float", "low": min(t[:2]), "high": max(t[:2])}
            | ({"step": t[2]} if t[2] else {})))


lengths = st.one_of(st.integers(1, 1500), st.builds(
    lambda a, b: {"dist": "uniform", "low": min(a, b), "high": max(a, b)},
    st.integers(1, 1500), st.integers(1, 1500)))
capacity = st.builds(lambda low, high, b: {"over": "rate", "low": low, "high": high,
                                           "slo": {"p95_ttft_ms": b, "error_rate": 0}},
                     st.sampled_from([1, 4]), st.sampled_from([2, 64]), bounds)
workloads = st.fixed_dictionaries(
    {"input_tokens": lengths, "output_tokens": lengths},
    optional={"concurrency": st.integers(1, 8), "num_requests": st.integers(1, 16),
              "warmup_requests": st.integers(0, 4),
              "shared_prefix_tokens": st.integers(0, 64),
              "slo": st.dictionaries(st.sampled_from(["ttft_ms", "tpot_ms", "e2el_ms"]),
                                     bounds, max_size=2),
              "measure": st.fixed_dictionaries({}, optional={
                  "min_rounds": st.integers(1, 4), "max_rounds": st.integers(1, 6)}),
              "capacity": capacity})
constraints = st.dictionaries(
    st.sampled_from(["p95_ttft_ms", "request_throughput", "error_rate"]),
    st.one_of(st.builds(lambda b: {"max": b}, bounds), st.builds(lambda b: {"min": b}, bounds),
              st.builds(lambda a, b: {"min": a, "max": b}, bounds, bounds)),
    max_size=2)
spaces = st.fixed_dictionaries(
    {"name": st.just("p")},
    optional={
        "args": st.fixed_dictionaries({}, optional={
            "max-num-seqs": tuned_int(sizes), "max-model-len": tuned_int(model_lens),
            "max-num-batched-tokens": tuned_int(sizes),
            "gpu-memory-utilization": tuned_float(fractions),
            "dtype": st.sampled_from(["float32", {"type": "categorical",
                                                  "choices": [None, "float32"]}])}),
        "env": st.fixed_dictionaries({}, optional={
            "OMP_NUM_THREADS": st.just("1"),
            "VLLM_CPU_KVCACHE_SPACE": st.just({"type": "categorical", "choices": [None, 1]})}),
        "workload": workloads,
        "objective": st.builds(lambda c: {"constraints": c}, constraints),
        "confirm": st.fixed_dictionaries({}, optional={"rounds": st.integers(1, 6),
                                                       "min_rounds": st.integers(2, 6)}),
        "sampler": st.builds(lambda n: {"name": n}, st.sampled_from(["tpe", "random", "grid"])),
        "rules": st.sampled_from([["max-num-batched-tokens >= max-num-seqs"],
                                  ["max-num-seqs <= 64"]]),
    })


def outcome_of_validate(path: Path) -> str | None:
    (checked,) = check_files([path], verify_options=False)
    return None if checked.error is None else str(checked.error)


def outcome_of_run(space: Path, workload: Path | None = None) -> str | None:
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=space,
                    workload_path=workload, verify_options=False)
    try:
        prepare(cfg, FakeProbe())
    except UserError as exc:
        return str(exc)
    return None


def agree(said_validate: str | None, said_run: str | None, path: Path) -> None:
    assert said_validate == said_run, (said_validate, said_run)
    if said_run is not None:
        assert "\n" not in said_run and said_run.startswith(f"{path}: "), said_run


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    ensure_builtin_model(TINY_QWEN3)  # once, before the first example's clock
    return tmp_path_factory.mktemp("properties")


@settings(max_examples=SPACE_EXAMPLES, **SETTINGS)
@given(data=spaces)
def test_validate_and_run_agree_on_every_space(folder: Path, data: dict[str, Any]) -> None:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    agree(outcome_of_validate(path), outcome_of_run(path), path)


BASE_SPACE = {"name": "base", "args": {"max-num-seqs": 4}}


@settings(max_examples=WORKLOAD_EXAMPLES, **SETTINGS)
@given(data=workloads)
def test_validate_and_run_agree_on_every_workload(folder: Path, data: dict[str, Any]) -> None:
    """A workload file alone, against `run --workload` with a space that accepts any."""
    space, path = folder / "base.yaml", folder / "workload.yaml"
    space.write_text(yaml.safe_dump(BASE_SPACE))
    path.write_text(yaml.safe_dump(data))
    agree(outcome_of_validate(path), outcome_of_run(space, path), path)


def unmeetable(space: SearchSpace) -> list[str]:
    """What no measurement could satisfy, from the metrics' nature alone: every metric is 0
    or more, and a time is more than 0 (a request takes some time)."""
    out = []
    goals = [(n, b.min, b.max) for n, b in space.objective.constraints.items()]
    goals += [(f"{n}_ms", None, b) for n, b in space.workload.slo.items()]
    if space.workload.capacity is not None:
        goals += [(n, None, b) for n, b in space.workload.capacity.slo.items()]
    for name, low, high in goals:
        low = max(0.0, -math.inf if low is None else low)
        high = math.inf if high is None else high
        timed = name.endswith(("_ms", "_s"))
        if not low <= high or (timed and not high > 0):
            out.append(f"{name}: no value in [{low}, {high}]")
    confirm = space.confirm
    if "min_rounds" in confirm.model_fields_set:
        rule = Rule(max_rounds=confirm.rounds, min_rounds=confirm.min_rounds)
        if rule.first_look != confirm.min_rounds:
            out.append(f"confirm: first look at {rule.first_look}, not {confirm.min_rounds}")
    return out


@settings(max_examples=SPACE_EXAMPLES, **SETTINGS)
@given(data=spaces)
def test_what_validate_accepts_can_be_met(folder: Path, data: dict[str, Any]) -> None:
    path = folder / "met.yaml"
    path.write_text(yaml.safe_dump(data))
    if outcome_of_validate(path) is None:
        assert unmeetable(load_space(path)) == []
