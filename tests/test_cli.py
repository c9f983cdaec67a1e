"""The CLI: bad input is one line and exit 2 with no server started; a run writes a profile."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import psutil
import pytest
import yaml

from autotune.cli import main, parse_duration
from autotune.profile import read_profile
from tests.conftest import DATA, FAKE_LAUNCHER

FAKE = shlex.join(FAKE_LAUNCHER)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def servers_running() -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "autotune.testing.fake_vllm" in cmd and p.pid != os.getpid():
            out.append(p.pid)
    return out


def fake_run(*extra: str, space: Path = DATA / "engine_space.yaml") -> list[str]:
    return ["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(space),
            "--launcher", FAKE, "--no-verify-options", *extra]


def test_run_writes_profile_and_resumes(capsys: pytest.CaptureFixture[str], in_tmp: Path
                                        ) -> None:
    assert main(fake_run("--trials", "3")) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out
    prof = in_tmp / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    p = read_profile(prof)
    assert p.settings["load-format"] == "dummy"
    assert p.settings["enforce-eager"] is True
    assert p.meta.trial in (0, 1, 2)
    assert p.meta.metrics["output_throughput"] == p.meta.objective["value"]
    assert p.meta.env["VLLM_CPU_KVCACHE_SPACE"] in {"1", "2"}
    assert (in_tmp / "autotune-runs" / p.meta.study / "trial-0000" / "result.json").exists()
    # the same command again continues the same study up to 4 trials in total
    assert main(fake_run("--trials", "4")) == 0
    out = capsys.readouterr().out
    assert "\n3  " in out and "\n4  " not in out
    assert servers_running() == []


def test_keeps_a_better_existing_profile(capsys: pytest.CaptureFixture[str], in_tmp: Path
                                         ) -> None:
    assert main(fake_run("--trials", "1")) == 0
    prof = in_tmp / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    text = prof.read_text()
    value = read_profile(prof).meta.objective["value"]
    better = text.replace(f"value: {value}", "value: 1.0e+12")
    prof.write_text(better)
    assert main(fake_run("--trials", "2")) == 0
    assert "kept" in capsys.readouterr().out
    assert prof.read_text() == better


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
    prof = in_tmp / "profiles" / "cpu" / "builtin-tiny-qwen3.yaml"
    assert main(["validate", str(prof)]) == 0
    assert "ok (profile)" in capsys.readouterr().out
    prof.write_text(prof.read_text().replace("# trial: ", "# trial: lots # "))
    assert main(["validate", str(prof)]) == 2
    assert f"{prof}: meta.trial: " in capsys.readouterr().err
