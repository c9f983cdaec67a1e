"""The CLI: bad input is one line and exit 2 with no server started; a run writes a profile."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from pathlib import Path

import psutil
import pytest
import yaml

from autotune.cli.main import main, parse_duration
from autotune.profiles.profile import read_profile
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile

FAKE = shlex.join(FAKE_LAUNCHER)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def servers_running() -> list[int]:
    """Stand-in servers started from this test's directory (the run's working directory):
    tests running beside this one start their own."""
    here = Path.cwd()
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        with contextlib.suppress(psutil.Error):
            if ("autotune.testing.fake_vllm" in cmd and p.pid != os.getpid()
                    and Path(p.cwd()).is_relative_to(here)):
                out.append(p.pid)
    return out


def fake_run(*extra: str, space: Path = DATA / "engine_space.yaml") -> list[str]:
    return ["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(space),
            "--launcher", FAKE, "--no-verify-options", *extra]


def test_run_writes_profile_and_resumes(capsys: pytest.CaptureFixture[str], in_tmp: Path
                                        ) -> None:
    assert main(fake_run("--trials", "3")) == 0
    out = capsys.readouterr().out
    assert "trial 0 (vLLM defaults): output_throughput " in out
    assert "confirming vLLM defaults, trial " in out
    # the rounds the confirmation took, whichever way its verdict went (the candidate serves
    # as fast as the defaults on the stand-in: a false win, at most 5%, reads "over 3 ...")
    assert re.search(r"\b(in|over) 3 interleaved rounds", out), out
    assert "verdict: " in out
    prof = in_tmp / here_profile()
    p = read_profile(prof)
    assert p.settings["load-format"] == "dummy"
    assert p.settings["enforce-eager"] is True
    metric = p.meta.metrics["output_throughput"]
    assert metric.n == 3 and metric.basis == "starts"
    assert p.meta.objective["value"] == metric.value
    assert (in_tmp / "autotune-runs" / p.meta.study / "trial-0000" / "result.json").exists()
    assert (in_tmp / "autotune-runs" / p.meta.study / "trial-0000" / "samples.jsonl.gz").exists()
    # the same command again continues the same study up to 4 trials in total (its search
    # alone: a confirmation that re-measures the profile is tests/app/test_app.py's)
    assert main(fake_run("--trials", "4", "--search-only")) == 0
    import optuna

    from autotune.study.trials import counted_trials

    study = optuna.load_study(study_name=p.meta.study, storage="sqlite:///autotune.db")
    assert counted_trials(study) == 4  # measured trials in total (repeats answered free)
    assert servers_running() == []


BAD_SPACES = {
    "malformed.yaml": ("name: x\nargs: {max-num-seqs: [1,\n", "malformed YAML: line"),
    "wrongtype.yaml": ({"name": "x", "args": {"max-num-seqs": {"type": "int", "low": "a",
                                                               "high": 3}}},
                       "args.max-num-seqs.low"),
    "empty.yaml": ({"name": "x", "args": {"dtype": {"type": "categorical", "choices": []}}},
                   "args.dtype.choices"),
    "minmax.yaml": ({"name": "x", "args": {"max-num-seqs": {"type": "int", "low": 9,
                                                            "high": 3}}},
                    "args.max-num-seqs: low (9) is above high (3)"),
    "unknownkey.yaml": ({"name": "x", "argz": {}}, "argz: unknown key"),
    "toolong.yaml": ({"name": "x", "args": {"max-model-len": 512},
                      "workload": {"input_tokens": 500, "output_tokens": 64}},
                     "workload: requests of up to 564 tokens (prompt plus output) do not fit a "
                     "context of 512 (args.max-model-len)"),
    "toolong-tuned.yaml": ({"name": "x", "args": {"max-model-len": {
                               "type": "categorical", "choices": [None, 256, 2048]}},
                            "workload": {"input_tokens": 300, "output_tokens": 10}},
                           "do not fit a context of 256 (args.max-model-len)"),
    "toolong-model.yaml": ({"name": "x", "workload": {"input_tokens": 4000,
                                                      "output_tokens": 200}},
                           "do not fit a context of 4096 (the model's max_position_embeddings)"),
}


@pytest.mark.parametrize("name", sorted(BAD_SPACES))
def test_bad_space_is_one_line_exit_2_no_server(name: str, in_tmp: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data, expected = BAD_SPACES[name]
    f = write(in_tmp / name, data)
    assert main(fake_run("--trials", "1", space=f)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"autotune: error: {f}: ")
    assert expected in err
    assert not (in_tmp / "autotune-runs").exists(), "no trial may start"


@pytest.mark.parametrize("name", ["toolong.yaml", "toolong-tuned.yaml"])
def test_validate_refuses_requests_longer_than_the_spaces_context_as_run_does(
        name: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, expected = BAD_SPACES[name]
    f = write(in_tmp / name, data)
    assert main(["validate", "--no-verify-options", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"autotune: error: {f}: workload: ") and expected in err
    # what fits is valid; without a max-model-len of its own the context is the model's,
    # which only `run` knows
    assert isinstance(data, dict)
    fits = write(in_tmp / "fits.yaml", {**data, "args": {"max-model-len": 4096}})
    model_s = write(in_tmp / "model.yaml", {"name": "x", "workload": data["workload"]})
    assert main(["validate", "--no-verify-options", str(fits), str(model_s)]) == 0
    assert capsys.readouterr().out.count("ok (search space)") == 2


@pytest.mark.parametrize(("args", "expected"), [
    (["--gpu", "a11g"], "--gpu: unknown target 'a11g'"),
    (["--gpu", "h100"], "--gpu h100: no NVIDIA GPU found"),
    (["--model", "/no/such/model"], "--model: '/no/such/model' is not a model directory"),
    (["--model", "builtin:huge"], "--model: unknown built-in model"),
    (["--storage", "not a url"], "--storage: 'not a url' is not a storage URL"),
    (["--trials", "0"], "--trials: must be at least 1"),
    (["--workload", "missing.yaml"], "missing.yaml: file not found"),
])
def test_bad_flags_are_one_line_exit_2(args: list[str], expected: str, in_tmp: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = fake_run("--trials", "1")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        i = base.index(flag) if flag in base else None
        if i is None:
            base += [flag, value]
        else:
            base[i + 1] = value
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err
    assert not (in_tmp / "autotune-runs").exists()


def test_bad_workload_file_names_the_field(in_tmp: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    f = write(in_tmp / "w.yaml", {"concurrency": "lots"})
    assert main([*fake_run("--trials", "1"), "--workload", str(f)]) == 2
    assert f"{f}: concurrency: " in capsys.readouterr().err


@pytest.mark.engine  # vLLM's argument parser
def test_unknown_vllm_option_is_caught_before_any_start(in_tmp: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    f = write(in_tmp / "typo.yaml", {"name": "x", "args": {"max-num-seqz": 4}})
    argv = [a for a in fake_run("--trials", "1", space=f) if a != "--no-verify-options"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "typo.yaml: args.max-num-seqz: unknown vLLM option (did you mean 'max-num-seqs'?)" \
        in err
    assert not (in_tmp / "autotune-runs").exists()


@pytest.mark.engine  # vLLM's argument parser
def test_validate_command(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = DATA / "engine_space.yaml"
    assert main(["validate", str(good)]) == 0
    assert "ok (search space)" in capsys.readouterr().out
    bad = write(in_tmp / "bad.yaml", {"name": "x", "args": {"dtype": {"type": "categorical"}}})
    assert main(["validate", str(bad)]) == 2
    assert "args.dtype.choices: required field is missing" in capsys.readouterr().err
    typo = write(in_tmp / "typo.yaml", {"name": "x", "args": {"max-num-seqz": 4}})
    assert main(["validate", str(typo)]) == 2
    assert "typo.yaml: args.max-num-seqz: unknown vLLM option" in capsys.readouterr().err
    wl = write(in_tmp / "w.yaml", {"concurrency": 4, "levels": [{"rate": 2}]})
    assert main(["validate", str(wl)]) == 0
    assert "ok (workload)" in capsys.readouterr().out


@pytest.mark.engine  # vLLM's own parser
def test_every_shipped_space_passes_vllms_parser(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spaces = sorted((DATA.parent.parent / "search_spaces").glob("*.yaml"))
    assert len(spaces) >= 6
    assert main(["validate", *map(str, spaces)]) == 0
    assert capsys.readouterr().out.count("ok (search space)") == len(spaces)
    # one child checks them all, and a bad option still names its own file
    cpu = (DATA.parent.parent / "search_spaces" / "cpu.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(cpu.replace("max-num-seqs:", "max-num-seqz:", 1))
    assert typo.read_text() != cpu
    assert main(["validate", *map(str, spaces), str(typo)]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml: args.max-num-seqz: unknown vLLM option" in err
    # one line for the error, after the one saying what an uncached check waits for
    lines = [x for x in err.splitlines() if not x.startswith("autotune: checking options")]
    assert len(lines) == 1, err


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800),
                                               ("2h", 7200), ("1h30m", 5400)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*fake_run(), "--timeout", "soon"])
    assert e.value.code == 2
    assert "not a duration" in capsys.readouterr().err


def test_validate_reads_back_a_written_profile(in_tmp: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(fake_run("--trials", "1")) == 0
    prof = in_tmp / here_profile()
    assert main(["validate", "--no-verify-options", str(prof)]) == 0
    assert "ok (profile)" in capsys.readouterr().out
    prof.write_text(prof.read_text().replace("# study: ", "# study: [1, 2] # "))
    assert main(["validate", "--no-verify-options", str(prof)]) == 2
    assert f"{prof}: meta.study: " in capsys.readouterr().err


def test_a_workload_every_candidate_fails_alike_stops_the_run_in_one_line(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(in_tmp / "cold.yaml", {"name": "x", "workload": {
        "num_requests": 4, "concurrency": 2, "input_tokens": 8, "output_tokens": 4,
        "warmup_requests": 0, "extra_body": {"temperature": -1},
        "measure": {"min_rounds": 1, "max_rounds": 1, "min_s": 0}}})
    assert main(fake_run("--trials", "3", space=f)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "workload: the server refused 4 of 4 requests" in err
    assert "http_400: temperature must be non-negative" in err
    runs = list((in_tmp / "autotune-runs").iterdir())
    assert len(runs) == 1 and [p.name for p in runs[0].iterdir()] == ["trial-0000"], \
        "stopped after the first trial, not one candidate after another"
    assert servers_running() == []


def test_start_ups_failing_alike_for_a_reason_no_setting_changes_stop_the_run(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(in_tmp / "broken.yaml", {
        "name": "x", "args": {"fake-missing-module": "vllm._C",
                              "max-num-seqs": {"type": "int", "low": 1, "high": 64}},
        "workload": {"num_requests": 4, "concurrency": 2, "input_tokens": 8,
                     "output_tokens": 4, "warmup_requests": 0}})
    assert main(fake_run("--trials", "6", space=f)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("stopping: 2 start-ups in a row failed alike, for a reason no setting changes: "
            "the engine's Python lacks a module (vllm._C)") in err
    runs = next((in_tmp / "autotune-runs").iterdir())
    assert sorted(p.name for p in runs.iterdir()) == ["trial-0000", "trial-0001"]
    assert servers_running() == []


def test_a_model_directory_without_weights_is_refused_before_any_start(
        in_tmp: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the built-in model's directory holds a config and a tokenizer, no weights
    argv = fake_run("--trials", "1")
    argv[argv.index("--model") + 1] = str(tiny_model)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no weights" in err and "load-format: dummy" in err
    assert not (in_tmp / "autotune-runs").exists()
    # with dummy weights declared in the space, the same directory is fine
    space = write(in_tmp / "dummy.yaml", {
        "name": "d", "args": {"load-format": "dummy", "max-num-seqs": {"type": "int", "low": 1,
                                                                      "high": 8}},
        "workload": {"num_requests": 2, "concurrency": 1, "input_tokens": 8,
                     "output_tokens": 4, "warmup_requests": 0,
                     "measure": {"min_rounds": 1, "max_rounds": 1, "min_s": 0}},
        "confirm": {"finalists": 1, "rounds": 2}})
    argv = fake_run("--trials", "1", space=space)
    argv[argv.index("--model") + 1] = str(tiny_model)
    assert main(argv) == 0, capsys.readouterr()


@pytest.mark.parametrize("value", [1.5, 0, {"type": "float", "low": 0.5, "high": 1.2}])
def test_a_fraction_outside_0_1_is_refused_before_any_start(
        value: object, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(in_tmp / "frac.yaml", {"name": "x", "args": {"gpu-memory-utilization": value}})
    assert main(fake_run("--trials", "1", space=f)) == 2
    err = capsys.readouterr().err
    assert "frac.yaml: args.gpu-memory-utilization: " in err and "is not a fraction in (0, 1]" \
        in err
    assert not (in_tmp / "autotune-runs").exists()
