"""A run's decision end to end, against the stand-in server whose speed its flags set: the
confirmation round, the stated gain, and what happens to the profile that was already there."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.cli.main import main
from autotune.engine.hardware import detect_hardware
from autotune.profiles.identity import hardware_key
from autotune.profiles.profile import Profile, read_profile, write_profile
from autotune.testing.fake_probe import FakeProbe
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile
from tests.profiles.test_profile import meta

SPACE = DATA / "standin_space.yaml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*extra: str, space: Path = SPACE) -> list[str]:
    return ["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space", str(space),
            "--launcher", shlex.join(FAKE_LAUNCHER), "--no-verify-options", *extra]


PROFILE = here_profile()


def incumbent(tpot_ms: float, hardware: dict[str, object] | None = None) -> str:
    """A profile at the run's path with the stand-in's speed set to `tpot_ms`."""
    hw = hardware or detect_hardware("cpu", FakeProbe()).describe()
    write_profile(Profile(settings={"model": "x", "load-format": "dummy",
                                    "fake-startup-s": 0.1, "max-num-seqs": 8,
                                    "fake-tpot-ms": tpot_ms},
                          meta=meta(hardware=hw)), PROFILE)
    return PROFILE.read_text()


def space_with(tmp: Path, enqueue: list[dict[str, object]]) -> Path:
    text = SPACE.read_text().split("enqueue:")[0]
    lines = "".join(f"  - {{fake-tpot-ms: {e['fake-tpot-ms']}}}\n" for e in enqueue)
    p = tmp / "space.yaml"
    p.write_text(text + "enqueue:\n" + lines)
    return p


def test_a_faster_candidate_wins_beyond_noise_and_the_profile_states_the_gain(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    # a gap the noise cannot close: tokens of 12 ms for vLLM's defaults and 3 for the candidate
    # (0.5 x --fake-tpot-scale 6). At 2x (6 and 3 ms) a CI machine running three parts at once
    # left the gain within noise: the verdict doing its job, the test betting on the minute.
    space = in_tmp / "space.yaml"
    space.write_text(SPACE.read_text().split("enqueue:")[0].replace(
        "choices: [null, 1, 8]", "choices: [null, 0.5]").replace(
        "confirm: {finalists: 1, rounds: 3}", "confirm: {finalists: 1, rounds: 5}").replace(
        "  fake-startup-s: 0.1\n", "  fake-startup-s: 0.1\n  fake-tpot-scale: 6\n")
        + "enqueue:\n  - {fake-tpot-ms: 0.5}\n")
    assert "fake-tpot-scale: 6" in space.read_text() and "[null, 0.5]" in space.read_text()
    assert main(run("--trials", "2", space=space)) == 0
    out = capsys.readouterr().out
    p = read_profile(PROFILE)
    assert "beats vLLM defaults beyond noise" in p.meta.verdict, out
    assert p.settings["fake-tpot-ms"] == 0.5
    gain = p.meta.gain["output_throughput"]
    # a quarter of the defaults' time per token: above 1 beyond noise; the rounds are a budget
    # of 5 and stop once the finalist is settled (at the first look, unless the machine was
    # busy)
    conf = p.meta.confirmation
    n = conf["rounds"]
    assert 3 <= n <= 5 and conf["max_rounds"] == 5 and conf["settled"]
    assert gain.low is not None and gain.low > 1 and gain.n == n and gain.basis == "starts"
    # the gain stated is the decision's own interval (adjusted for the looks taken)
    (c,) = conf["comparisons"]
    assert gain.low == pytest.approx(c["decision_interval"]["low"])
    assert p.meta.gain["median_tpot_ms"].value < 0.8
    assert [a["role"] for a in conf["arms"]] == ["baseline", "finalist"]
    text = PROFILE.read_text()
    assert "vs vLLM's defaults, paired, same run and machine" in text
    assert f"confirmation: {n} interleaved rounds (budget 5)" in out
    assert "vs vLLM defaults" in out
    assert f"profile: {PROFILE}" in out
    # the rounds interleaved, each arm on a fresh server: every round measures both before
    # the next starts, in alternating order (A B, B A, A B, ...)
    rounds = sorted(r for r in (in_tmp / "autotune-runs" / p.meta.study / "confirm").iterdir()
                    if r.is_dir())
    assert [r.name for r in rounds] == [f"round-{k:02d}-{arm}" for k in range(1, n + 1)
                                        for arm in ("trial-1", "vllm-defaults")]
    logs = [r / "server.log" for r in rounds]
    order = [log.parent.name.split("-", 2)[2]
             for log in sorted(logs, key=lambda log: log.stat().st_mtime)]
    pairs = [order[i:i + 2] for i in range(0, 2 * n, 2)]
    assert all(set(pair) == {"trial-1", "vllm-defaults"} for pair in pairs), order
    assert all(a != b for a, b in itertools.pairwise(pairs)), order
    for log in logs:
        assert log.read_text().count("fake vLLM starting") == 1


def test_the_current_profile_is_re_measured_and_kept_when_nothing_beats_it(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    before = incumbent(1.0)
    # vLLM's defaults (2 ms a token) against the 1 ms profile, and the 8 ms candidate: at the
    # 5% bar a busy minute could stall the profile's rounds enough to let the defaults by; at
    # 50% the stand-in's noise cannot reach it, so the verdict does not rest on the minute
    sp = space_with(in_tmp, [{"fake-tpot-ms": 8}])
    sp.write_text(sp.read_text().replace("confirm: {finalists: 1, rounds: 3}",
                                         "confirm: {finalists: 1, rounds: 3, replace_gain: 0.5}"))
    assert "replace_gain: 0.5" in sp.read_text()
    assert main(run("--trials", "2", space=sp)) == 0
    out = capsys.readouterr().out
    assert "confirming vLLM defaults, current profile, trial 1" in out
    assert f"verdict: kept {PROFILE}: nothing beat the current profile beyond noise" in out
    # the settings as they were; this run's confirmation recorded beside the first one
    kept = read_profile(PROFILE)
    assert kept.settings == yaml.safe_load(before)
    assert kept.meta.created == "2026-01-01T00:00:00+00:00"
    (again,) = kept.meta.reconfirmed
    assert again.arm == "current profile" and again.rounds >= 1
    assert again.metrics["output_throughput"].value > 0 and "current profile" in again.verdict
    assert again.confirmation["arms"][0]["name"] == "vLLM defaults"
    assert "this run's figures are recorded in it" in out
    assert not (PROFILE.parent / "history").exists()


def test_a_current_profile_that_loses_beyond_noise_is_replaced_and_kept_in_history(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    before = incumbent(8.0)
    # a budget of 6 rounds, stopped once settled: with 3, one stalled round of a fast arm on a
    # busy minute can leave even a 4x loss within noise (at the first look)
    sp = space_with(in_tmp, [{"fake-tpot-ms": 1}])
    sp.write_text(sp.read_text().replace("confirm: {finalists: 1, rounds: 3}",
                                         "confirm: {finalists: 1, rounds: 6}"))
    assert "rounds: 6" in sp.read_text()
    assert main(run("--trials", "2", space=sp)) == 0
    out = capsys.readouterr().out
    assert "beats current profile beyond noise" in out
    # vLLM's defaults (2 ms) or the 1 ms candidate: either beats 8 ms by far; which of the two
    # measured best is the minute's
    assert read_profile(PROFILE).settings.get("fake-tpot-ms") in (None, 1)
    (old,) = (PROFILE.parent / "history").glob("*.yaml")
    assert old.read_text() == before


def test_a_profile_from_other_hardware_is_not_compared_and_kept_unless_replace(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    other = {**detect_hardware("cpu", FakeProbe()).describe(), "cpu": "Some Other CPU",
             "cpu_flags": ["avx2"]}
    assert hardware_key(other) != hardware_key(detect_hardware("cpu", FakeProbe()).describe())
    before = incumbent(8.0, other)
    assert main(run("--trials", "2")) == 0
    out = capsys.readouterr().out
    assert "current profile" not in out.split("confirming", 1)[1].split("\n", 1)[0]
    assert "measured on other hardware" in out and "pass --replace" in out
    assert PROFILE.read_text() == before
    assert main(run("--trials", "2", "--replace")) == 0
    assert read_profile(PROFILE).meta.hardware["cpu"] != "Some Other CPU"
    (old,) = (PROFILE.parent / "history").glob("*.yaml")
    assert old.read_text() == before


def test_when_nothing_beats_the_defaults_the_defaults_are_written_and_said(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    assert main(run("--trials", "2", space=space_with(in_tmp, [{"fake-tpot-ms": 8}]))) == 0
    out = capsys.readouterr().out
    p = read_profile(PROFILE)
    assert "fake-tpot-ms" not in p.settings and p.meta.trial is None and p.meta.gain == {}
    assert p.meta.verdict.startswith("nothing beat vLLM's defaults beyond noise")
    assert "verdict: nothing beat vLLM's defaults beyond noise" in out
    slower = next(a for a in p.meta.confirmation["arms"] if a["role"] == "finalist")
    # four times as slow, nominally: below the defaults (its interval's top, over 3 rounds on
    # a busy machine, is a figure of the minute's load)
    assert slower["vs_baseline"]["value"] < 1


def test_a_multi_objective_run_confirms_on_every_goal_and_writes_its_front(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Throughput up and memory down, from the command line: a candidate eight times as fast
    (nominally) at the same memory beats vLLM's defaults on one goal without losing on the other."""
    text = SPACE.read_text().split("enqueue:")[0].replace(
        "  fake-tpot-ms: {type: categorical, choices: [null, 1, 8]}",
        "  fake-tpot-ms: {type: categorical, choices: [null, 0.25]}\n"
        "  fake-resident-mib: {type: categorical, choices: [null, 300]}").replace(
        # at most 25% lost on memory: PSS moves by a per cent or two between starts as the
        # processes sharing its libraries come and go, which a 5% bound over 5 rounds could
        # not always clear; the 300 MiB arm (some +65%) still loses beyond it
        "confirm: {finalists: 1, rounds: 3}",
        "confirm: {finalists: 2, rounds: 5, max_loss: 0.25}").replace(
        # token time, not overhead, decides, by a gap the noise cannot close: 10 ms a token for
        # vLLM's defaults, 1.25 for the candidate (at 10 and 5 ms, a CI machine running three
        # parts at once left them within noise)
        "output_tokens: 48", "output_tokens: 32").replace(
        "  fake-startup-s: 0.1\n", "  fake-startup-s: 0.1\n  fake-tpot-scale: 5\n"
        # every server holds 400 MiB: the stand-in's own memory moved by 12% between starts,
        # which left "loses at most 5% on memory" unproven
        "  fake-base-mib: 400\n")
    assert "fake-tpot-scale: 5" in text and "output_tokens: 32" in text
    space = in_tmp / "mo.yaml"
    space.write_text(text + "enqueue:\n  - {fake-tpot-ms: 0.25}\n"
                            "  - {fake-tpot-ms: 0.25, fake-resident-mib: 300}\n")
    assert main(run("--trials", "3", "--objective", "output_throughput,peak_memory_bytes",
                    space=space)) == 0
    out = capsys.readouterr().out
    p = read_profile(PROFILE)
    assert p.settings["fake-tpot-ms"] == 0.25 and "fake-resident-mib" not in p.settings
    assert p.meta.objective["pareto"] == [{"metric": "peak_memory_bytes",
                                           "direction": "minimize"}]
    assert "beyond noise on output_throughput" in p.meta.verdict
    # memory held within 25%, or (the stand-in's 400 MiB measured alike to a part in a
    # thousand) better beyond noise too: never worse
    assert ("loses at most 25% on peak_memory_bytes" in p.meta.verdict
            or "peak_memory_bytes x0.9" in p.meta.verdict), p.meta.verdict
    # a confirmed candidate that holds 300 MiB more never wins on memory grounds
    for c in p.meta.confirmation["comparisons"]:
        if c["challenger"] != "trial 1":
            assert "peak_memory_bytes" not in c["better_on"]
    assert "Pareto front:" in out
    front_table = out.split("Pareto front:")[1].split("\n\n")[0]
    assert "(GiB)" in front_table and "e+0" not in front_table  # memory in GiB, not bytes
    front = next((in_tmp / "autotune-runs").glob("*/front.json"))
    points = json.loads(front.read_text())["points"]
    assert any(pt["args"].get("fake-tpot-ms") == 0.25 and "fake-resident-mib" not in pt["args"]
               for pt in points)
    # no point of the front is beaten on both goals by another measured trial
    trials = [json.loads(f.read_text()) for f in
              (in_tmp / "autotune-runs").glob("*/trial-*/result.json")]
    for pt in points:
        tput = pt["figures"]["output_throughput"]["value"]
        mem = pt["figures"]["peak_memory_bytes"]["value"]
        for t in trials:
            m = t["metrics"]
            assert not (m["output_throughput"]["value"] >= tput and
                        m["peak_memory_bytes"]["value"] <= mem and
                        (m["output_throughput"]["value"], m["peak_memory_bytes"]["value"])
                        != (tput, mem))
    study = p.meta.study
    assert main(["pareto", "--study", study, "--export", str(in_tmp / "front")]) == 0
    assert len(list((in_tmp / "front").glob("*.yaml"))) == len(points)


def test_the_quality_guard_rejects_a_setting_that_changes_what_the_model_says(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two candidates that change numerics: one whose greedy outputs are the reference's
    (accepted, agreement 1.0) and one whose outputs differ from the third token on (rejected
    as low_agreement, never the profile); one that changes nothing numeric is not asked."""
    text = SPACE.read_text().split("enqueue:")[0].replace(
        "  fake-tpot-ms: {type: categorical, choices: [null, 1, 8]}",
        "  fake-tpot-ms: {type: categorical, choices: [null, 1]}\n"
        "  dtype: {type: categorical, choices: [null, float32]}\n"
        "  fake-garble-from: {type: categorical, choices: [null, 2]}")
    space = in_tmp / "q.yaml"
    space.write_text(text + "quality: {prompts: 4, max_tokens: 8, min_agreement: 0.9, "
                            "options: [dtype, fake-garble-from]}\n"
                            "enqueue:\n  - {dtype: float32}\n"
                            "  - {fake-garble-from: 2, fake-tpot-ms: 1}\n  - {fake-tpot-ms: 1}\n")
    assert main(run("--trials", "4", space=space)) == 0
    out = capsys.readouterr().out
    import optuna

    study = optuna.load_study(study_name=read_profile(PROFILE).meta.study,
                              storage="sqlite:///autotune.db")
    base, same, garbled, plain = study.trials[:4]
    assert len(base.user_attrs["quality_outputs"]) == 4  # the reference, recorded
    assert same.user_attrs["status"] == "ok"
    assert same.user_attrs["metrics"]["quality_agreement"]["value"] == 1.0
    assert garbled.user_attrs["status"] == "failed"
    assert garbled.user_attrs["reason"] == "low_agreement"
    assert "agree 25% with vLLM's defaults' on 4 fixed prompts" in garbled.user_attrs["detail"]
    assert "quality_agreement" not in plain.user_attrs["metrics"]  # nothing numeric changed
    assert "FAILED low_agreement" in out
    assert "fake-garble-from" not in read_profile(PROFILE).settings


def test_a_profile_of_this_model_on_other_hardware_is_measured_right_after_the_defaults(
        capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    """sampler.warm_start: a new study measures the profile kept for this model under another
    hardware key right after vLLM's defaults, before the space's own `enqueue:`."""
    elsewhere = PROFILE.parent.parent / "h100" / PROFILE.name
    write_profile(Profile(settings={"model": "x", "load-format": "dummy", "fake-startup-s": 0.1,
                                    "max-num-seqs": 8, "fake-tpot-ms": 1},
                          meta=meta(env={})), elsewhere)
    space = space_with(in_tmp, [{"fake-tpot-ms": 8}])
    space.write_text(space.read_text().replace("seed: 0}", "seed: 0, warm_start: true}"))
    assert main(run("--trials", "2", "--search-only", space=space)) == 0
    out = capsys.readouterr().out
    assert "warm start: h100/builtin-tiny-qwen3.yaml -> {'fake-tpot-ms': 1}\n" in out
    study = optuna.load_study(study_name="cpu.builtin-tiny-qwen3.standin",
                              storage="sqlite:///autotune.db")
    first, warm, queued = study.trials[:3]
    assert first.params == {"fake-tpot-ms": None} and warm.params == {"fake-tpot-ms": 1}
    assert warm.user_attrs["warm_start"] == "h100/builtin-tiny-qwen3.yaml"
    # counted toward --trials 2: the space's enqueued candidate is left for a longer run
    assert queued.state.name == "WAITING"
    assert queued.system_attrs["fixed_params"] == {"fake-tpot-ms": 8}
