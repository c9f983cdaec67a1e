from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.core.errors import ConfigError
from autotune.space.params import CategoricalParam
from autotune.space.search import (
    SearchSpace,
    baseline_params,
    load_space,
    parse_space,
    resolve,
    suggest,
)

ROOT = Path(__file__).resolve().parents[2]


def space(**kw: object) -> dict[str, object]:
    return {"name": "t", **kw}


def test_plain_values_are_fixed_and_mappings_are_tuned() -> None:
    s = parse_space(space(
        args={"enforce_eager": True, "max-num-seqs": {"type": "int", "low": 1, "high": 8},
              "dtype": {"type": "categorical", "choices": ["bfloat16", "float32"]}},
        env={"VLLM_CPU_KVCACHE_SPACE": {"type": "int", "low": 1, "high": 3},
             "VLLM_CPU_OMP_THREADS_BIND": "auto"}))
    assert set(s.tuned()) == {"max-num-seqs", "dtype", "env:VLLM_CPU_KVCACHE_SPACE"}
    # underscores are normalized to vLLM's dashed long names
    assert s.args["enforce-eager"] is True
    p = resolve(s, {"max-num-seqs": 4, "dtype": "float32", "env:VLLM_CPU_KVCACHE_SPACE": 2})
    assert p.args == {"enforce-eager": True, "max-num-seqs": 4, "dtype": "float32"}
    assert p.env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "auto"}


def test_suggest_uses_optuna_distributions() -> None:
    s = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 2, "high": 64, "log": True},
                                "gpu-memory-utilization": {"type": "float", "low": 0.5,
                                                           "high": 0.9, "step": 0.1}}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(20):
        t = study.ask()
        p = suggest(s, t)
        assert 2 <= p.args["max-num-seqs"] <= 64
        assert 0.5 <= p.args["gpu-memory-utilization"] <= 0.9 + 1e-9
        seen.add(p.args["max-num-seqs"])
        study.tell(t, 0.0)
    assert len(seen) > 3
    assert isinstance(study.trials[0].distributions["max-num-seqs"],
                      optuna.distributions.IntDistribution)
    assert study.trials[0].distributions["max-num-seqs"].log


@pytest.mark.parametrize(("data", "field", "words"), [
    (space(args={"max-num-seqs": {"type": "int", "low": 9, "high": 8}}),
     "args.max-num-seqs", "above high"),
    (space(args={"dtype": {"type": "categorical", "choices": []}}),
     "args.dtype.choices", "at least 1"),
    (space(args={"max-num-seqs": {"type": "integer", "low": 1, "high": 8}}),
     "args.max-num-seqs", "type must be int, float or categorical"),
    (space(args={"max-num-seqs": {"low": 1, "high": 8}}),
     "args.max-num-seqs", "needs type"),
    (space(args={"max-num-seqs": {"type": "int", "low": "one", "high": 8}}),
     "args.max-num-seqs.low", "valid integer"),
    (space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 8, "stepp": 2}}),
     "args.max-num-seqs.stepp", "unknown key"),
    (space(args={"port": 8000}), "args", "set by autotune"),
    (space(env={"not a name": 1}), "env", "not an environment variable"),
    (space(objective={"metric": "tokens_per_banana"}), "objective.metric", "unknown metric"),
    (space(objective={"constraints": {"p95_ttft_ms": {}}}),
     "objective.constraints.p95_ttft_ms", "give max or min"),
    (space(workload={"concurrency": 0}), "workload.concurrency", "greater than 0"),
    (space(colour="blue"), "colour", "unknown key"),
    ({"args": {}}, "name", "required"),
    (space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 8}},
           enqueue=[{"max-num-seqs": 99}]), "(top level)", "outside its range"),
    (space(args={"max-num-seqs": {"type": "float", "low": 0, "high": 1, "log": True}}),
     "args.max-num-seqs", "log scale needs low > 0"),
])
def test_bad_spaces_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_space(data, "s.yaml")
    msg = str(e.value)
    assert msg.startswith(f"s.yaml: {field}: "), msg
    assert words in msg
    assert "\n" not in msg


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nargs:\n  max-num-seqs: {type: int, low: 1\n")
    with pytest.raises(ConfigError) as e:
        load_space(f)
    assert str(e.value).startswith(f"{f}: malformed YAML: line ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_space(tmp_path / "nope.yaml")


def test_fingerprint_changes_with_what_is_measured() -> None:
    a = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 8}}))
    b = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 9}}))
    c = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 8}},
                          description="same thing, other words"))
    d = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 1, "high": 8}},
                          workload={"concurrency": 3}))
    assert a.fingerprint() == c.fingerprint()
    explicit_default = parse_space(space(args={"max-num-seqs": {"type": "int", "low": 1,
                                                                 "high": 8}},
                                         workload={"concurrency": 3, "warmup_requests": 2}))
    assert explicit_default.fingerprint() == d.fingerprint()
    assert len({a.fingerprint(), b.fingerprint(), d.fingerprint()}) == 3


SHIPPED = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))


def test_each_target_gets_its_own_shipped_space() -> None:
    from autotune.app.inputs import default_space_path

    assert {"cpu.yaml", "a10g.yaml", "l4.yaml", "a100-80gb.yaml", "h100.yaml"} <= set(SHIPPED)
    for target in ("cpu", "a10g", "l4", "a100-80gb", "h100"):
        assert default_space_path(target).name == f"{target}.yaml"
    assert default_space_path("t4").name == "default.yaml"  # no space of its own


def test_fp8_is_searched_only_on_cards_with_fp8_units() -> None:
    for name in SHIPPED:
        s = load_space(ROOT / "search_spaces" / name)
        fp8 = any("fp8" in spec.choices for spec in s.tuned().values()
                  if isinstance(spec, CategoricalParam))
        assert fp8 == (name in ("l4.yaml", "h100.yaml")), name
        # and a space says why its ranges are what they are
        assert (ROOT / "search_spaces" / name).read_text().count("#") >= 5, name


# vLLM options whose values change what the model computes, not only how fast
NUMERICS = {"dtype", "quantization", "kv-cache-dtype"}


def lossy(s: SearchSpace, option: str) -> bool:
    """Whether a tuned option can compute with less precision than vLLM's default: any value
    but vLLM's default (None) and those that only widen (float32, quality.widens)."""
    from autotune.measure.quality import widens

    choices = getattr(s.args[option], "choices", None) or [object()]
    return any(c is not None and not widens(option, c) for c in choices)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_space_that_varies_numerics_has_the_quality_guard_on_them(name: str) -> None:
    s = load_space(ROOT / "search_spaces" / name)
    varied = {o for o in NUMERICS & set(s.tuned()) if lossy(s, o)}
    if varied:
        assert s.quality is not None, f"{name} varies {sorted(varied)} with no quality guard"
        assert varied <= set(s.quality.options), name


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "cpu.yaml"])
def test_no_shipped_gpu_space_caps_the_context(name: str, tmp_path: Path) -> None:
    """A fixed max-model-len lands in the profile and caps every deployed request: a GPU
    space leaves it to vLLM (the model's own context), and its workload fits any model the
    spaces served before, at their old 4096-token cap."""
    import json

    from autotune.app.inputs import smallest_context
    from autotune.model.resolve import ResolvedModel

    s = load_space(ROOT / "search_spaces" / name)
    assert "max-model-len" not in s.args and "max-model-len" not in baseline_params(s).args
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 40960}))
    model = ResolvedModel("m", str(tmp_path))
    assert smallest_context(s, model) == (40960, "the model's max_position_embeddings")
    w = s.workload
    assert isinstance(w.input_tokens, int) and isinstance(w.output_tokens, int)
    assert w.input_tokens + w.output_tokens <= 4096


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load_and_can_return_to_every_default(name: str) -> None:
    s = load_space(ROOT / "search_spaces" / name)
    assert s.tuned()
    # every tuned option can also be left to vLLM: the search can return to a default
    for key, spec in s.tuned().items():
        assert isinstance(spec, CategoricalParam) and None in spec.choices, key
    assert s.confirm.rounds >= 3 and s.confirm.finalists >= 1
    assert s.workload.measure.max_s <= 120


def test_null_leaves_an_option_unset_and_the_baseline_sets_no_tuned_option() -> None:
    s = parse_space(space(
        args={"max-model-len": 512, "max-num-seqs": {"type": "categorical",
                                                     "choices": [None, 8]}},
        env={"OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": {"type": "categorical",
                                                               "choices": [None, 2]}},
        enqueue=[{"max-num-seqs": None, "env:VLLM_CPU_KVCACHE_SPACE": 2}]))
    p = resolve(s, {"max-num-seqs": None, "env:VLLM_CPU_KVCACHE_SPACE": 2})
    assert p.args == {"max-model-len": 512} and p.env == {"OMP_NUM_THREADS": "1",
                                                          "VLLM_CPU_KVCACHE_SPACE": "2"}
    base = baseline_params(s)
    assert base.args == {"max-model-len": 512} and base.env == {"OMP_NUM_THREADS": "1"}
    with pytest.raises(ConfigError, match=r"args\.max-model-len"):
        parse_space(space(args={"max-model-len": None}))


def test_confirm_and_pruning_sections_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"confirm\.rounds"):
        parse_space(space(confirm={"rounds": 1}))
    with pytest.raises(ConfigError, match=r"pruning\.margin"):
        parse_space(space(pruning={"margin": -0.1}))


def test_cpu_space_tunes_server_environment() -> None:
    s = load_space(ROOT / "search_spaces" / "cpu.yaml")
    assert isinstance(s.tuned()["env:VLLM_CPU_OMP_THREADS_BIND"], CategoricalParam)
    assert "env:VLLM_CPU_KVCACHE_SPACE" in s.tuned()
