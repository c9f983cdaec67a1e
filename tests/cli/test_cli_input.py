"""The CLI on bad input: one line and exit 2 for every command, nothing created, no traceback,
and no storage password in anything it prints or writes. No server is started here."""

from __future__ import annotations

import hashlib
import shlex
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import IntDistribution

from autotune.cli.main import main
from autotune.core.errors import UserError
from autotune.study.confirmations import keep
from tests.conftest import DATA
from tests.report.test_truth import confirmation

SPACE = DATA / "engine_space.yaml"
SHIPPED_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu.yaml"
# a launcher that starts nothing: a row that wrongly got past its checks fails, serving nothing
NO_START = shlex.join([sys.executable, "-c", "raise SystemExit(1)"])
SECRET = "secretpw"
PG_URL = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_STORAGE", raising=False)
    (tmp_path / "file.txt").write_text("a file, where a folder is expected\n")
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"concurrency": 2, "input_tokens": 16}))
    return tmp_path


def cli(argv: list[str]) -> int:
    """main(), with argparse's exit as a return code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run(*extra: str, command: str = "run") -> list[str]:
    return [command, "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(SPACE),
            "--launcher", NO_START, "--no-verify-options", "--trials", "1", *extra]


BAD: list[tuple[list[str], str]] = [
    # run (retune takes the same flags)
    (run("--seed", "-5"), "argument --seed: -5 is out of range"),
    (run("--seed", str(2**32)), "argument --seed: 4294967296 is out of range"),
    (run("--seed", "x"), "argument --seed: not a whole number"),
    (run("--trials", "0"), "--trials: must be at least 1"),
    (run("--trials", "x"), "argument --trials: invalid int value"),
    (run("--parallel", "0"), "--parallel: 0 is not a number of trials"),
    (run("--gpus", "-1"), "argument --gpus/--devices: not a list of GPU indices"),
    (run("--gpus", "0,0"), "each once"),
    (run("--gpus", "x"), "not a list of GPU indices"),
    (run("--timeout", "0"), "duration must be positive"),
    (run("--timeout", "soon"), "not a duration"),
    (run("--objective", "a:up"), "not METRIC[:max|min]"),
    (run("--weights", "a"), "not METRIC=WEIGHT"),
    (run("--sampler", "foo"), "invalid choice: 'foo'"),
    (run("--choose", "foo"), "invalid choice: 'foo'"),
    (run("--storage", "not a url"), "--storage: 'not a url' is not a storage URL"),
    (run("--storage", "nonsense://x"), "--storage: cannot open 'nonsense://x'"),
    (run("--storage", "sqlite:////missing/dir/x.db"), "no folder /missing/dir"),
    (run("--storage", "sqlite:///file.txt/x.db"), "no folder file.txt"),
    (run("--workload", str(SHIPPED_SPACE)), "this is a search space, not a workload"),
    (run("--workload", "w.yaml", "--space", "w.yaml"), "this is a workload, not a search space"),
    (run("--space", "file.txt/x.yaml"), "file.txt/x.yaml: file not found"),
    (run("--profiles-dir", "file.txt"), "file.txt is a file, not a folder"),
    (run("--runs-dir", "file.txt/runs"), "file.txt is a file, not a folder"),
    (run("--launcher", ""), "argument --launcher: empty"),
    (run("--launcher", "'unclosed"), "No closing quotation"),
    (run("--study", ""), "is not a study name"),
    (run("--study", "../elsewhere"), "is not a study name"),
    (run("--json", "file.txt/x.json"), "file.txt is a file, not a folder"),
    (run("--json", "."), ". is a folder, not a file"),
    (run("--gpu", "a11g"), "--gpu: unknown target 'a11g'"),
    (run("--bogus"), "unrecognized arguments: --bogus"),
    (run("--", "--port", "1"), "only `autotune serve` starts it"),
    (run("--seed", "-1", command="retune"), "argument --seed: -1 is out of range"),
    (run("--parallel", "2", command="retune"), "retune runs as one worker"),
    (run("--runs-dir", "file.txt", command="retune"), "file.txt is a file, not a folder"),
    # report
    (["report"], "report: name a profile (autotune report PROFILE) or a study"),
    (["report", "p.yaml", "--study", "s"], "name a profile or --study, not both"),
    (["report", "--study", "s"], "no database at autotune.db"),
    (["report", "--study", "s", "--storage", "nonsense://x"], "cannot open 'nonsense://x'"),
    (["report", "--study", "s", "--storage", "sqlite:////missing/dir/x.db"],
     "no database at /missing/dir/x.db"),
    (["report", "--study", "../s"], "is not a study name"),
    (["report", "--study", "s", "--out", "file.txt/out"], "file.txt is a file, not a folder"),
    (["report", "/nope.yaml"], "/nope.yaml: file not found"),
    # pareto
    (["pareto"], "the following arguments are required: --study"),
    (["pareto", "--study", "s"], "no database at autotune.db"),
    (["pareto", "--study", "s", "--storage", "nonsense://x"], "cannot open 'nonsense://x'"),
    (["pareto", "--study", "s", "--export", "file.txt"], "file.txt is a file, not a folder"),
    # validate
    (["validate"], "the following arguments are required: files"),
    (["validate", "--no-verify-options", "file.txt/x.yaml"], "file.txt/x.yaml: file not found"),
    (["validate", "--no-verify-options", "/nope.yaml"], "/nope.yaml: file not found"),
    # serve
    (["serve", "/nope.yaml", "--print"], "/nope.yaml: no such profile;"),
    (["serve", "file.txt/x.yaml", "--print"], "file.txt/x.yaml: no such profile"),
    (["serve", "p", "--print", "--port", "8001"],
     "vLLM's own options go after --: autotune serve p --print -- --port 8001"),
    (["serve", "p", "--launcher", ""], "argument --launcher: empty"),
    # profiles list/show/diff
    (["profiles"], "the following arguments are required: action"),
    (["profiles", "frob"], "invalid choice: 'frob'"),
    (["profiles", "list", "--profiles-dir", "/nonexistent"],
     "--profiles-dir /nonexistent: no such folder"),
    (["profiles", "list", "--profiles-dir", "file.txt"], "is a file, not a folder"),
    (["profiles", "show", "/nope.yaml"], "/nope.yaml: no such profile;"),
    (["profiles", "show", "a10g/nope"], "looked for a10g/nope, profiles/a10g/nope, "
     "profiles/a10g/nope.yaml"),
    (["profiles", "diff", "/nope.yaml"], "the following arguments are required: b"),
    (["profiles", "diff", "/nope1.yaml", "/nope.yaml"], "/nope1.yaml: no such profile;"),
    # check
    (["check", "/nope.yaml"], "/nope.yaml: no such profile"),
    (["check", "p", "--soak", "0"], "duration must be positive"),
    (["check", "p", "--window", "x"], "not a duration"),
    (["check", "p", "--devices", "-1"], "not a list of GPU indices"),
    (["check", "p", "--runs-dir", "file.txt"], "file.txt is a file, not a folder"),
    (["check", "p", "--launcher", "'x"], "No closing quotation"),
    # the command itself
    ([], "the following arguments are required: command"),
    (["frob"], "invalid choice: 'frob'"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD,
                         ids=[" ".join(a[:1] + a[12:] if a[:1] in (["run"], ["retune"]) else a)
                              .replace(f"{SHIPPED_SPACE.parent}/", "") or "(nothing)"
                              for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(
        argv: list[str], expected: str, in_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(in_tmp)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("autotune: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and ".yaml.yaml" not in err
    assert expected in err, err
    assert tree(in_tmp) == before, "a refused command created something"


def a_study(url: str, name: str = "s", kept: bool = True) -> optuna.Study:
    """A finished study as `autotune run` leaves it (three measured trials, a confirmation
    round's lease marked done and, unless not `kept` as by an older autotune, the round's
    record in the study), made without a server."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("metric", "output_throughput")
    study.set_user_attr("objective", {"metric": "output_throughput", "direction": "maximize"})
    for i, v in enumerate([100.0, 120.0, 90.0]):
        study.add_trial(optuna.trial.create_trial(
            params={} if i == 0 else {"max-num-seqs": 8 * i},
            distributions={} if i == 0 else {"max-num-seqs": IntDistribution(1, 64)},
            value=v, user_attrs={
                "status": "ok", **({"role": "baseline"} if i == 0 else {}),
                "metrics": {"output_throughput": {"value": v, "low": v - 5, "high": v + 5,
                                                  "n": 3, "basis": "rounds"}}}))
    lease = optuna.create_study(study_name=f"{name}:confirm:3:1", storage=url)
    lease.set_user_attr("done_at", time.time())
    if kept:
        keep(study, confirmation(1.2, "trial 1 beats vLLM defaults beyond noise: x1.2",
                                 trial=1))
    return study


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("command", ["run", "retune", "report", "pareto", "badurl"])
def test_no_storage_password_in_anything_printed_or_written(
        command: str, how: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"u:{SECRET}@127.0.0.1:1/db" if command == "badurl" else PG_URL
    argv = {"run": run(), "retune": run(command="retune"), "badurl": run(),
            "report": ["report", "--study", "s", "--json"],
            "pareto": ["pareto", "--study", "s"]}[command]
    if how == "flag":
        argv += ["--storage", url]
    else:
        monkeypatch.setenv("AUTOTUNE_STORAGE", url)
    assert cli(argv) == 2
    out, err = capsys.readouterr()
    assert "u:***@127.0.0.1" in err, err  # the URL is named, its password hidden
    assert err.count("\n") == 1, err
    assert SECRET not in out + err
    for f in in_tmp.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f


def test_report_and_pareto_read_runs_storage_read_only_and_create_none(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    a_study("sqlite:///other.db")
    digest = hashlib.sha256((in_tmp / "other.db").read_bytes()).hexdigest()
    # the flag, then $AUTOTUNE_STORAGE (as `run` takes it), then the default
    assert cli(["report", "--study", "nope"]) == 2
    assert "no database at autotune.db" in capsys.readouterr().err
    assert cli(["report", "--study", "nope", "--storage", "sqlite:///other.db"]) == 2
    assert capsys.readouterr().err == "autotune: error: no study 'nope' in sqlite:///other.db\n"
    monkeypatch.setenv("AUTOTUNE_STORAGE", "sqlite:///other.db")
    assert cli(["report", "--study", "s"]) == 0
    assert cli(["pareto", "--study", "s"]) == 2  # found: one objective, so no front
    assert "--study s: one objective (output_throughput)" in capsys.readouterr().err
    assert not (in_tmp / "autotune.db").exists(), "a reader created a database"
    assert hashlib.sha256((in_tmp / "other.db").read_bytes()).hexdigest() == digest
    assert {p.name for p in in_tmp.iterdir()} == {"file.txt", "w.yaml", "other.db",
                                                   "autotune-report"}


def test_the_report_names_the_run_folders_it_cannot_find(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOTUNE_STORAGE", "sqlite:///autotune.db")
    a_study("sqlite:///autotune.db")
    capsys.readouterr()
    assert cli(["report", "--study", "s", "--json"]) == 0
    out, err = capsys.readouterr()
    run_dir = Path("autotune-runs") / "s"
    assert err == f"autotune: report: could not find {run_dir}\n"
    # the verdict, from the record in the study, and what could not be found beside it
    assert f"beyond noise: x1.2; could not find {run_dir} " in out
    md = (in_tmp / "autotune-report" / "s" / "report.md").read_text()
    assert "**Verdict:** trial 1 beats vLLM defaults beyond noise: x1.2; could not find " in md
    # the run folder there, without the folder of the chosen trial (trial 1)
    (run_dir / "trial-0000").mkdir(parents=True)
    assert cli(["report", "--study", "s"]) == 0
    err = capsys.readouterr().err
    assert err == f"autotune: report: could not find {run_dir / 'trial-0001'}\n"
    # a study confirmed by an autotune that kept the record only in the run folder: without
    # that record, there is no verdict to report, in one line and exit 1
    a_study("sqlite:///autotune.db", "old", kept=False)
    (Path("autotune-runs") / "old" / "trial-0000").mkdir(parents=True)
    capsys.readouterr()
    assert cli(["report", "--study", "old"]) == 1
    assert capsys.readouterr().err == (
        "autotune: report: the study's confirmation round finished, but its record is in "
        f"neither the study's storage nor {Path('autotune-runs/old/confirm')}: no verdict to "
        "report (--runs-dir names the folder the run wrote it under)\n")


def test_debug_is_taken_after_the_command_too(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--debug", "report"], ["report", "--debug"]):
        with pytest.raises(UserError, match="name a profile"):
            main(argv)
    assert cli(["report"]) == 2  # without it: one line
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["validate", "--no-verify-options", "{locked}/cpu.yaml"],
    ["validate", "--no-verify-options", "--json", "{locked}/cpu.yaml"],
    ["serve", "{locked}/x.yaml", "--print"],
    ["profiles", "show", "{locked}/x.yaml"],
    ["report", "{locked}/x.yaml"],
    ["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", "{locked}/cpu.yaml"],
])
def test_a_folder_that_cannot_be_entered_is_one_line_naming_the_file(
        argv: list[str], in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # as a user whose folder is mode 000 sees it (root is never denied, so it is feigned)
    locked = in_tmp / "locked"
    locked.mkdir()
    (locked / "cpu.yaml").write_text(SHIPPED_SPACE.read_text())
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> object:
        if locked in self.absolute().parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    code = cli([a.format(locked=locked) for a in argv])
    out, err = capsys.readouterr()
    lines = (out if "--json" in argv else err).strip()
    assert code == 2
    assert "Traceback" not in err and str(locked) in lines and "Permission denied" in lines
    if "--json" not in argv:
        assert err.startswith("autotune: error: ") and err.count("\n") == 1, err


def test_an_error_reading_or_writing_a_file_is_one_line_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import autotune.profiles.catalog

    def denied(root: Path) -> list[object]:
        raise PermissionError(13, "Permission denied", str(root / "a10g"))

    Path("profiles").mkdir()
    monkeypatch.setattr(autotune.profiles.catalog, "find_profiles", denied)
    assert cli(["profiles", "list"]) == 1
    assert capsys.readouterr().err == "autotune: error: profiles/a10g: Permission denied\n"


def test_the_server_log_a_trial_records_hides_the_api_key(in_tmp: Path) -> None:
    from autotune.engine.argv import ServerSpec
    from autotune.engine.server import VllmServer

    key = "0123456789abcdef0123456789abcdef"
    log = in_tmp / "server.log"
    log.write_text(f"INFO non-default args: {{'api_key': ['{key}'], 'port': 8000}}\n")
    tail = VllmServer(ServerSpec(model="m", api_key=key), log).log_tail()
    assert key not in tail and "'api_key': ['***']" in tail
