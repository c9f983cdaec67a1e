"""Never start what cannot work: rules between parameters, conditional parameters, and the
memory pre-check's arithmetic, and how the tuner records what they refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.app.prechecks import memory_precheck
from autotune.core.errors import AutotuneError, ConfigError, FailureReason
from autotune.core.stats import Estimate
from autotune.engine.fit import GiB, ModelShape, Target, need, read_shape
from autotune.engine.hardware import HardwareInfo
from autotune.engine.probes import DeviceInfo
from autotune.measure.result import PruneCheck, TrialResult
from autotune.space.params import TrialParams
from autotune.space.rules import parse_rule
from autotune.space.search import broken_rule, parse_space, resolve
from autotune.study.opening import StudyConfig
from autotune.study.trials import counted_trials, no_starts
from autotune.study.tuner import tune

# Qwen/Qwen3-0.6B's config.json (the fields memory depends on)
QWEN3_06B = {"num_hidden_layers": 28, "hidden_size": 1024, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
             "vocab_size": 151936, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
             "max_position_embeddings": 40960}
# Qwen/Qwen3-32B's
QWEN3_32B = {"num_hidden_layers": 64, "hidden_size": 5120, "num_attention_heads": 64,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 25600,
             "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# meta-llama/Llama-3.1-8B's
LLAMA31_8B = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 14336,
              "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "max_position_embeddings": 131072}
A10G = Target(gpu_bytes=23028 * 2**20, node_bytes=0)  # what NVML reports for an A10G


# -- the arithmetic ----------------------------------------------------------------------------

def test_qwen3_0_6b_shape_matches_its_published_size() -> None:
    s = ModelShape.from_config(QWEN3_06B)
    # 0.6B parameters, 0.44B of them outside the (tied) embedding, as Qwen publishes
    assert s.params() == pytest.approx(0.596e9, rel=0.01)
    assert s.linear_params() == pytest.approx(0.44e9, rel=0.01)
    assert s.weight_bytes(None, None) == pytest.approx(2 * s.params(), rel=1e-6)
    assert s.weight_bytes("float32", None) == 2 * s.weight_bytes(None, None)
    # K and V x 28 layers x 8 KV heads x 128 x 2 bytes = 112 KiB per token
    assert s.kv_bytes_per_token(None, None) == 2 * 28 * 8 * 128 * 2 == 114688
    assert s.kv_bytes_per_token(None, "fp8") == 114688 // 2
    # fp8 weights: the projections at one byte, the embedding still at two
    assert s.weight_bytes(None, "fp8") == s.linear_params() + 2 * s.embedding_params()


def test_qwen3_0_6b_on_a_24_gb_a10g() -> None:
    s = ModelShape.from_config(QWEN3_06B)
    # vLLM's defaults: 0.9 x 22.5 GiB holds 1.1 GiB of weights + 4.4 GiB for one 40960-token
    # sequence
    n = need(s, {}, {}, A10G, 40960)
    assert n is not None and n.fits
    assert n.kv == 114688 * 40960 and n.kv / GiB == pytest.approx(4.375)
    assert n.budget == int(0.9 * 23028 * 2**20)
    # 5% of the card cannot hold even the weights plus one sequence
    tight = need(s, {"gpu-memory-utilization": 0.2}, {}, A10G, 40960)
    assert tight is not None and not tight.fits
    assert "exceed gpu-memory-utilization 0.2 x 22.5 GiB" in tight.why_not()
    # the same budget with a short context fits
    assert need(s, {"gpu-memory-utilization": 0.2, "max-model-len": 4096}, {}, A10G,
                40960).fits  # type: ignore[union-attr]


def test_the_shipped_gpu_spaces_are_checked_at_the_models_full_context(tmp_path: Path) -> None:
    """The shipped a10g space fixes no max-model-len: vLLM's defaults get the model's own
    context (max_position_embeddings), and that one sequence is what must fit."""
    from autotune.model.tokens import context_length
    from autotune.space.search import baseline_params, load_space

    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "a10g.yaml")
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_06B))
    defaults = baseline_params(space).args
    n = need(ModelShape.from_config(QWEN3_06B), defaults, {}, A10G,
             context_length(str(tmp_path)))
    assert n is not None and n.fits and n.kv == 114688 * 40960
    hw = HardwareInfo("a10g", "x", 8, 64 * GiB,
                      gpus=(DeviceInfo(0, "NVIDIA A10G", 23028 * 2**20),))
    check = memory_precheck(str(tmp_path), {}, hw)
    assert check is not None and check(TrialParams(args=defaults)) is None
    # Llama 3.1 8B: 15 GiB of weights + 16 GiB for one 131072-token sequence; the refusal
    # says where the context came from and how to cap it
    llama = ModelShape.from_config(LLAMA31_8B)
    full = need(llama, defaults, {}, A10G, 131072)
    assert full is not None and not full.fits
    assert ("max-model-len unset: the model's full context, 131072 tokens; fix max-model-len "
            "in the space to cap it") in full.why_not()
    capped = need(llama, {**defaults, "max-model-len": 4096}, {}, A10G, 131072)
    assert capped is not None and capped.fits and capped.full_context is None


def test_a_32b_model_does_not_fit_one_a10g_but_fits_split_over_four() -> None:
    s = ModelShape.from_config(QWEN3_32B)
    assert s.params() == pytest.approx(32.8e9, rel=0.02)
    one = need(s, {"max-model-len": 4096}, {}, A10G, None)
    assert one is not None and not one.fits and one.weights / GiB > 60
    four = need(s, {"max-model-len": 4096, "tensor-parallel-size": 4}, {}, A10G, None)
    assert four is not None and four.fits


def test_cpu_budget_is_the_numa_nodes_share_or_the_explicit_kv_space() -> None:
    s = ModelShape.from_config(QWEN3_06B)
    node = Target(gpu_bytes=None, node_bytes=13 * GiB)
    assert need(s, {"gpu-memory-utilization": 0.3}, {}, node, 8192).fits  # type: ignore[union-attr]
    # 0.05 x 13 GiB = 0.65 GiB: not even the weights
    assert not need(s, {"gpu-memory-utilization": 0.05}, {}, node, 8192).fits  # type: ignore[union-attr]
    # VLLM_CPU_KVCACHE_SPACE=1: 40960 tokens need 4.4 GiB of KV cache
    n = need(s, {"gpu-memory-utilization": 0.3}, {"VLLM_CPU_KVCACHE_SPACE": "1"}, node, 40960)
    assert n is not None and not n.fits and "VLLM_CPU_KVCACHE_SPACE" in n.why_not()


def test_an_unreadable_config_refuses_nothing(tmp_path: Path) -> None:
    assert read_shape(None) is None
    (tmp_path / "config.json").write_text("{not json")
    assert read_shape(tmp_path / "config.json") is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert read_shape(tmp_path / "config.json") is None
    hw = HardwareInfo("cpu", "x", 2, 16 * GiB)
    assert memory_precheck(str(tmp_path), {}, hw) is None


def test_the_precheck_reads_the_models_own_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_06B))
    hw = HardwareInfo("a10g", "x", 8, 64 * GiB,
                      gpus=(DeviceInfo(0, "NVIDIA A10G", 23028 * 2**20),))
    check = memory_precheck(str(tmp_path), {}, hw)
    assert check is not None
    assert check(TrialParams(args={"gpu-memory-utilization": 0.9})) is None
    reason, detail = check(TrialParams(args={"gpu-memory-utilization": 0.2}))  # type: ignore[misc]
    assert reason is FailureReason.CANNOT_FIT and "cannot fit" in detail


def test_the_builtin_qwen3_0_6b_costs_what_the_real_model_costs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the generated model's own config.json, read as the pre-check reads any model's
    from autotune.model.builtin import QWEN3_0_6B, ensure_builtin_model

    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    d = ensure_builtin_model(QWEN3_0_6B)
    s = read_shape(d / "config.json")
    assert s == ModelShape.from_config(QWEN3_06B)
    hw = HardwareInfo("a10g", "x", 8, 64 * GiB,
                      gpus=(DeviceInfo(0, "NVIDIA A10G", 23028 * 2**20),))
    check = memory_precheck(str(d), {}, hw)
    assert check is not None and check(TrialParams(args={})) is None
    assert check(TrialParams(args={"gpu-memory-utilization": 0.2})) is not None


# -- rules and conditional parameters ---------------------------------------------------------

SPACE = {
    "name": "r",
    "args": {"max-num-seqs": {"type": "categorical", "choices": [None, 8, 64, 256]},
             "max-num-batched-tokens": {"type": "categorical", "choices": [None, 16, 512]},
             "kv-cache-dtype": {"type": "categorical", "choices": [None, "fp8"]},
             "calculate-kv-scales": {"type": "categorical", "choices": [None, True],
                                     "when": {"kv-cache-dtype": "fp8"}}},
    "rules": ["max-num-batched-tokens >= max-num-seqs"],
    "sampler": {"seed": 0, "n_startup_trials": 2},
}


def test_rules_parse_and_refuse_what_they_do_not_name() -> None:
    names = {"max-num-seqs", "max-num-batched-tokens", "env:VLLM_CPU_KVCACHE_SPACE"}
    r = parse_rule("max_num_batched_tokens >= 2 * max-num-seqs", names)
    assert r.broken_by({"max-num-batched-tokens": 100, "max-num-seqs": 64})
    assert not r.broken_by({"max-num-batched-tokens": 128, "max-num-seqs": 64})
    assert not r.broken_by({"max-num-seqs": 64})  # unset: vLLM's default, not checked
    assert parse_rule("env:VLLM_CPU_KVCACHE_SPACE <= 8", names).broken_by(
        {"env:VLLM_CPU_KVCACHE_SPACE": "16"})
    for bad, why in (("max-num-seqs => 3", "is not a parameter"),
                     ("max-num-seqs", "is not 'A op B'"),
                     ("1 < 2", "names no parameter"),
                     ("max-num-sequences <= 8", "not a parameter of this space")):
        with pytest.raises(ValueError, match=why):
            parse_rule(bad, names)
    space = parse_space(SPACE)
    why = broken_rule(space, TrialParams(args={"max-num-seqs": 64, "max-num-batched-tokens": 16}))
    assert why == ("breaks the rule 'max-num-batched-tokens >= max-num-seqs' "
                   "(max-num-batched-tokens=16, max-num-seqs=64)")
    assert broken_rule(space, TrialParams(args={"max-num-seqs": 8,
                                                "max-num-batched-tokens": 16})) is None
    with pytest.raises(ConfigError, match=r"rules\[0\]: 'max-num-sequences'"):
        parse_space({**SPACE, "rules": ["max-num-sequences <= 8"]})


def test_a_conditional_parameter_must_follow_what_it_depends_on() -> None:
    args = dict(SPACE["args"])  # type: ignore[call-overload]
    moved = {"calculate-kv-scales": args.pop("calculate-kv-scales"), **args}
    with pytest.raises(ConfigError, match="must come before"):
        parse_space({**SPACE, "args": moved})
    with pytest.raises(ConfigError, match="is not a tuned parameter"):
        parse_space({**SPACE, "args": {**args, "calculate-kv-scales": {
            "type": "categorical", "choices": [True], "when": {"dtype": "x"}}}})


def ok(params: TrialParams, number: int, prune: PruneCheck | None = None) -> TrialResult:
    seqs = params.args.get("max-num-seqs", 256)
    if "max-num-seqs" in params.args:  # a rule is checked where both sides are set
        assert params.args.get("max-num-batched-tokens", 10**6) >= seqs, "rule not enforced"
    assert "calculate-kv-scales" not in params.args or params.args["kv-cache-dtype"] == "fp8"
    v = float(seqs)
    return TrialResult(status="ok", command=[], env={}, round_values=[v] * 3,
                       metrics={"output_throughput": Estimate(value=v, low=v, high=v, n=3,
                                                              basis="rounds")})


def test_the_tuner_never_starts_a_candidate_that_breaks_a_rule(tmp_path: Path) -> None:
    # the first candidate after vLLM's defaults breaks the rule; the sampler may draw more
    space = parse_space({**SPACE, "enqueue": [{"max-num-seqs": 64,
                                               "max-num-batched-tokens": 16}]})
    started: list[TrialParams] = []

    def runner(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        started.append(params)
        return ok(params, number)

    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 8), runner, {})
    assert counted_trials(study) == 8  # the budget is of measured candidates
    refused = [t for t in study.trials if t.user_attrs.get("no_start")]
    assert refused and no_starts(study) == len(refused)
    for t in refused:
        assert t.user_attrs["reason"] == "breaks_rule"
        assert "max-num-batched-tokens >= max-num-seqs" in t.user_attrs["detail"]
        assert t.constraints["trial_ok"] == 1.0  # infeasible: the sampler learns from it
    assert len(started) + len(refused) + sum(
        1 for t in study.trials if t.user_attrs.get("repeat_of") is not None) == len(
        study.trials)
    # the conditional parameter is drawn only when its condition holds
    for t in study.trials:
        if t.params.get("kv-cache-dtype") != "fp8":
            assert "calculate-kv-scales" not in t.params
    assert resolve(space, {"kv-cache-dtype": None}).args == {}


def test_a_space_whose_rules_leave_nothing_stops_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(AutotuneError, match="candidates in a row broke a rule"):
        tune(parse_space({"name": "n", "args": {"max-num-seqs": {"type": "int", "low": 1,
                                                                 "high": 64}},
                          "rules": ["max-num-seqs < 0"], "sampler": {"name": "random"}}),
             StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 5, max_no_starts=8), ok, {})


def test_a_candidate_that_cannot_fit_is_recorded_without_a_start(tmp_path: Path) -> None:
    space = parse_space({"name": "m", "args": {
        "gpu-memory-utilization": {"type": "categorical", "choices": [None, 0.05, 0.9]}},
        "sampler": {"name": "grid", "seed": 0}})

    def precheck(params: TrialParams) -> tuple[FailureReason, str] | None:
        if params.args.get("gpu-memory-utilization") == 0.05:
            return FailureReason.CANNOT_FIT, "cannot fit: weights exceed the budget"
        return None

    started: list[TrialParams] = []

    def runner(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        started.append(params)
        return ok(params, number)

    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 3), runner, {},
                 precheck=precheck)
    assert all(p.args.get("gpu-memory-utilization") != 0.05 for p in started)
    refused = [t for t in study.trials if t.user_attrs.get("no_start")]
    assert [t.user_attrs["reason"] for t in refused] == ["cannot_fit"]
    assert "no server started" in refused[0].user_attrs["detail"]


# -- combinations the installed vLLM refuses ---------------------------------------------------

@pytest.mark.engine  # vLLM's own SchedulerConfig, in a child process
def test_vllm_itself_says_which_combinations_it_refuses() -> None:
    from autotune.space.combos import scheduler_check

    space = parse_space({"name": "c", "args": {
        "max-model-len": 1024,
        "max-num-batched-tokens": {"type": "categorical", "choices": [None, 8, 2048]},
        "max-num-seqs": {"type": "categorical", "choices": [None, 16]}}})
    check = scheduler_check(space, {}, 4096, "c.yaml")
    assert check is not None
    refused = check(TrialParams(args={"max-model-len": 1024, "max-num-batched-tokens": 8,
                                      "max-num-seqs": 16}))
    assert refused is not None and refused[0] is FailureReason.BREAKS_RULE
    assert "vLLM refuses this combination: max_num_batched_tokens (8) must be greater than " \
           "or equal to max_num_seqs (16)" in refused[1]
    assert check(TrialParams(args={"max-model-len": 1024, "max-num-batched-tokens": 2048,
                                   "max-num-seqs": 16})) is None
    # max-num-seqs left to vLLM: its default could be anything, so nothing is refused
    assert check(TrialParams(args={"max-model-len": 1024, "max-num-batched-tokens": 8})) is None


def test_a_space_that_leaves_the_context_to_vllm_is_checked_at_the_models_context() -> None:
    # the shipped GPU spaces set no max-model-len (vLLM takes the model's): their combinations
    # are still put to vLLM before the first start, at the model's own context
    from autotune.space.combos import combinations

    space = parse_space({"name": "g", "args": {
        "max-num-batched-tokens": {"type": "categorical", "choices": [2048, 8192]},
        "max-num-seqs": {"type": "categorical", "choices": [64, 256]}}})
    found = combinations(space, {}, 40960)
    assert found is not None and len(found.combos) == 4
    assert {c["max-model-len"] for c in found.combos} == {40960}
    assert combinations(space, {"max-model-len": 4096}, 40960).combos[0]["max-model-len"] \
        == 4096  # type: ignore[union-attr]


@pytest.mark.engine
def test_a_space_whose_every_combination_vllm_refuses_stops_before_any_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    from autotune.cli.main import main
    from tests.conftest import FAKE_LAUNCHER

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        "name: s\nargs:\n  max-model-len: 1024\n  enable-chunked-prefill: false\n"
        "  max-num-batched-tokens: {type: categorical, choices: [256, 512]}\n")
    code = main(["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space",
                 str(tmp_path / "s.yaml"), "--launcher", shlex.join(FAKE_LAUNCHER)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "s.yaml: args: vLLM refuses every combination" in err
    assert "is smaller than max_model_len (1024)" in err
    assert not (tmp_path / "autotune-runs").exists()  # no server started
