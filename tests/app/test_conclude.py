"""What a run leaves in the profile it concludes on: a kept profile records this run's
confirmation, and settings that broke a constraint in some rounds say which and in how many
(counted from the rounds' own records). Pure wiring over a recorded confirmation: no server."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from autotune.app.conclude import breaks_of, conclude
from autotune.app.inputs import RunConfig
from autotune.cli.main import main
from autotune.core.stats import Estimate
from autotune.decide.confirm import Arm, ArmRecord, Confirmation
from autotune.decide.findings import Comparison, Verdict
from autotune.measure.result import TrialResult
from autotune.profiles.incumbent import Incumbent
from autotune.profiles.profile import META_BEGIN, Profile, read_profile, write_profile
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, baseline_params, load_space
from tests.conftest import DATA
from tests.profiles.test_profile import meta

STUDY = "cpu.builtin-tiny-qwen3.standin"
HW = {"key": "cpu-x-2c", "cpu": "x", "cpu_flags": ["avx2"], "cpu_count": 2, "gpus": []}
VERDICT = ("vLLM defaults failed 1 of 3 rounds (broke a constraint): each counts against it; "
           "nothing beat vLLM defaults beyond noise; keeping vLLM defaults")


def est(value: float, low: float, high: float) -> Estimate:
    return Estimate(value=value, low=low, high=high, n=3, basis="starts")


def space(tmp: Path) -> SearchSpace:
    p = tmp / "space.yaml"
    p.write_text((DATA / "standin_space.yaml").read_text().replace(
        "objective:\n  metric: output_throughput\n",
        "objective:\n  metric: output_throughput\n  pareto: [{metric: peak_memory_bytes, "
        "direction: minimize}]\n  constraints:\n    p95_ttft_ms: {max: 1000}\n"))
    return load_space(p)


def confirmation() -> Confirmation:
    """vLLM's defaults broke the SLO in round 2; trial 2 served alike with a third of the
    memory."""
    base = ArmRecord(name="vLLM defaults", role="baseline", trial=None, args={}, env={},
                     objective=[3300.0, None, 3310.0], failure="broke a constraint",
                     figures={"output_throughput": est(3303, 3100, 3500),
                              "p95_ttft_ms": est(599, 0, 1607),
                              "peak_memory_bytes": est(8.6e9, 8.5e9, 8.7e9)},
                     vs_baseline={"output_throughput": est(1, 1, 1)})
    trial = ArmRecord(name="trial 2", role="finalist", trial=2, args={"fake-tpot-ms": 8},
                      env={}, objective=[3200.0, 3250.0, 3300.0],
                      figures={"output_throughput": est(3250, 3150, 3350),
                               "peak_memory_bytes": est(3.0e9, 2.99e9, 3.01e9)},
                      vs_baseline={"output_throughput": est(0.98, 0.95, 1.02),
                                   "peak_memory_bytes": est(0.352, 0.349, 0.356)})
    comparison = Comparison(challenger="trial 2", reference="vLLM defaults",
                            ratio=est(0.98, 0.95, 1.02), decision_interval=est(0.98, 0.9, 1.1),
                            beats=False, settled=False)
    verdict = Verdict(reference="vLLM defaults", winner="vLLM defaults", rounds=3, level=0.99,
                      min_gain=0.0, comparisons=[comparison], summary=VERDICT)
    return Confirmation(metric="output_throughput", direction="maximize", rounds=3,
                        max_rounds=6, arms=[base, trial], verdict=verdict)


def round_result(p95_ttft_ms: float, status: str = "ok") -> TrialResult:
    return TrialResult(status=status, command=["vllm"], env={},  # type: ignore[arg-type]
                       metrics={"output_throughput": Estimate.single(3300.0),
                                "p95_ttft_ms": Estimate.single(p95_ttft_ms)})


def record_rounds(runs: Path, arm: str, p95s: list[float]) -> None:
    """Each round's result where the confirmation writes it."""
    for r, v in enumerate(p95s, 1):
        where = runs / STUDY / "confirm" / f"round-{r:02d}-{arm}"
        where.mkdir(parents=True)
        (where / "result.json").write_text(json.dumps(round_result(v).model_dump(mode="json")))


def run_conclude(tmp: Path, incumbent: Incumbent | None) -> tuple[Path, str, bool]:
    sp = space(tmp)
    runs = tmp / "runs"
    record_rounds(runs, "vllm-defaults", [400.0, 1607.0, 390.0])
    path = tmp / "profiles" / "cpu-x-2c" / "builtin-tiny-qwen3.yaml"
    if incumbent is not None:
        path = incumbent.path
    cfg = RunConfig(target="cpu", model="builtin:tiny-qwen3", runs_dir=runs)
    inp = SimpleNamespace(space=sp, model=SimpleNamespace(path="/m", args={}),
                          hardware=SimpleNamespace(describe=lambda: HW))
    arms = [Arm("vLLM defaults", "baseline", baseline_params(sp)),
            Arm("trial 2", "finalist", TrialParams(args={**baseline_params(sp).args,
                                                         "fake-tpot-ms": 8}), 2)]
    c = conclude(path, optuna.create_study(), cfg, inp,  # type: ignore[arg-type]
                 {"model_revision": "r"}, STUDY, incumbent, confirmation(), arms)
    return path, c.note, c.written


def test_a_kept_profile_records_this_runs_confirmation_and_what_it_missed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sp = space(tmp_path)
    path = tmp_path / "profiles" / "cpu-x-2c" / "builtin-tiny-qwen3.yaml"
    first = Profile(settings={"model": "/m", **baseline_params(sp).args},
                    meta=meta(hardware=HW, trial=None, gain={}, env={}, created=
                              "2026-12-05T19:01:31+00:00", verdict="keeping vLLM defaults",
                              confirmation={"rounds": 6}))
    write_profile(first, path)
    settings_text = path.read_text().split("# --- end autotune metadata ---\n")[1]
    incumbent = Incumbent(path, first, baseline_params(sp), True)
    _, note, written = run_conclude(tmp_path, incumbent)
    assert not written and note.startswith(f"kept {path}: {VERDICT}")
    assert "this run's figures are recorded in it" in note
    back = read_profile(path)
    # what it was first written with stays, settings and all; this run's record is beside it
    assert path.read_text().split("# --- end autotune metadata ---\n")[1] == settings_text
    assert back.meta.metrics == first.meta.metrics and back.meta.created == first.meta.created
    (again,) = back.meta.reconfirmed
    assert again.study == STUDY and again.rounds == 3 and again.arm == "vLLM defaults"
    assert again.metrics["output_throughput"].value == 3303 and again.verdict == VERDICT
    assert not list(path.parent.glob("history/*"))  # kept, not replaced
    # which constraint the kept settings broke, and in how many rounds
    assert again.breaks is not None and again.breaks.broken == {"p95_ttft_ms <= 1000": 1}
    head = path.read_text().split(META_BEGIN)[0]
    assert "output_throughput 3303 [3100, 3500] (3 starts), confirmed " in head
    assert ("These settings broke p95_ttft_ms <= 1000 in 1 of 3 rounds (p95_ttft_ms 599 "
            "[0, 1607] over the rounds that served)") in head
    # `profiles show` has this run's figures and its arms (the finalist's memory ratio)
    assert main(["profiles", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "output_throughput: 3303 [3100, 3500] (3 starts)" in out
    assert "vLLM defaults (baseline, this profile)" in out
    assert "did not count in 1 round(s): broke a constraint" in out
    assert "peak_memory_bytes x0.352 [0.349, 0.356]" in out


def test_a_written_profile_says_what_its_settings_missed(tmp_path: Path) -> None:
    path, _, written = run_conclude(tmp_path, None)
    assert written
    prof = read_profile(path)
    assert prof.meta.breaks is not None and prof.meta.breaks.broken == {
        "p95_ttft_ms <= 1000": 1}
    assert prof.meta.confirmation["winner"] == "vLLM defaults"
    (_, trial) = prof.meta.confirmation["arms"]
    assert trial["ratios"]["peak_memory_bytes"]["value"] == 0.352
    assert "broke p95_ttft_ms <= 1000 in 1 of 3 rounds" in path.read_text()


def test_misses_are_counted_from_the_rounds_records_or_only_counted_without_them(
        tmp_path: Path) -> None:
    sp = space(tmp_path)
    record = confirmation().arms[0]
    failed = round_result(0.0, status="failed")
    assert breaks_of(record, sp.objective, [round_result(400), failed, None]).failed == 1
    unread = breaks_of(record, sp.objective, [None, None, None])
    assert unread is not None and unread.missed == 1 and unread.broken == {}
    assert breaks_of(confirmation().arms[1], sp.objective, []) is None
