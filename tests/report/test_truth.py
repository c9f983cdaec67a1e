"""What `report` and `pareto` say of recorded studies (no server): a profile's own run, a study
copied without its run folder, JSON in its documented schema, and nothing said on the side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.app.schema import SCHEMAS
from autotune.cli.main import main
from autotune.decide.confirm import BASELINE_NAME
from autotune.profiles.profile import Profile, write_profile
from autotune.report import html as report_html
from autotune.report.gather import gather
from autotune.report.tables import front_rows
from autotune.scale.lease import Lease, take
from autotune.study.confirmations import keep
from tests.profiles.test_profile import meta
from tests.report.documented import check_documented, documented, shape
from tests.report.test_report import HARDWARE, add_trial, est, recorded_study

NAME = "h100.qwen.runs"
SETTINGS = {"max-num-seqs": 128, "dtype": "bfloat16"}


def confirmation(gain: float, summary: str, trial: int = 3) -> dict[str, Any]:
    """A confirmation record of `trial` against vLLM's defaults (as Confirmation's JSON)."""
    ratio = {"value": gain, "low": gain * 0.9, "high": gain * 1.1, "n": 5, "basis": "starts"}
    return {"metric": "output_throughput", "direction": "maximize", "rounds": 5,
            "max_rounds": 5,
            "arms": [{"name": BASELINE_NAME, "role": "baseline", "trial": None, "args": {},
                      "env": {}, "objective": [1000.0] * 5,
                      "figures": {"output_throughput": est(1000.0)},
                      "vs_baseline": {"output_throughput": {"value": 1.0}}},
                     {"name": f"trial {trial}", "role": "finalist", "trial": trial,
                      "args": {},
                      "env": {}, "objective": [1000.0 * gain] * 5,
                      "figures": {"output_throughput": est(1000.0 * gain)},
                      "vs_baseline": {"output_throughput": ratio}}],
            "verdict": {"reference": BASELINE_NAME, "winner": f"trial {trial}", "rounds": 5,
                        "level": 0.95, "min_gain": 0.0, "comparisons": [],
                        "summary": summary}}


def profile_of(record: dict[str, Any], created: str) -> Profile:
    """The profile the confirmation `record` wrote (its summary as conclude writes it)."""
    arms = [{"name": a["name"], "role": a["role"], "trial": a["trial"],
             "output_throughput": a["figures"]["output_throughput"],
             "vs_baseline": a["vs_baseline"]["output_throughput"], "failure": None}
            for a in record["arms"]]
    return Profile(settings=SETTINGS, meta=meta(
        hardware=HARDWARE, study=NAME, trial=3, created=created,
        verdict=record["verdict"]["summary"], confirmation={"rounds": 5, "arms": arms}))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study of five trials (trial 3 the fastest), its search done, no run folder."""
    monkeypatch.chdir(tmp_path)
    study = recorded_study("sqlite:///autotune.db", NAME)
    for i in range(5):
        add_trial(study, SETTINGS, 1000.0 + 10 * i, baseline=i == 0)
    return tmp_path


@pytest.fixture
def report(capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, dict[str, Any], str]]:
    """`autotune report ARGS --json`: its exit code, its JSON and all it wrote to standard
    error (the file descriptor: Optuna's log handler writes there too)."""
    def run(*args: str) -> tuple[int, dict[str, Any], str]:
        capfd.readouterr()
        optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default
        code = main(["report", *args, "--json"])
        out, err = capfd.readouterr()
        return code, json.loads(out), err
    return run


Report = Callable[..., tuple[int, dict[str, Any], str]]


def test_a_profile_reports_its_own_confirmation_not_a_later_runs(
        work: Path, report: Report) -> None:
    study = optuna.load_study(study_name=NAME, storage="sqlite:///autotune.db")
    first = confirmation(1.5, "trial 3 beats vLLM defaults beyond noise: x1.5")
    later = confirmation(1.02, "nothing beat vLLM defaults beyond noise")
    keep(study, first)
    keep(study, later)  # the same study, confirmed again another day
    write_profile(profile_of(first, "2026-01-01T00:00:00+00:00"), work / "first.yaml")
    code, doc, err = report("first.yaml")
    assert code == 0, err
    assert doc["note"] is None and doc["verdict"].startswith("trial 3 beats")
    assert doc["confirmation"]["arms"]["trial-3"]["vs_baseline"]["output_throughput"][
        "value"] == 1.5  # the profile's run, not the later one (x1.02)
    md = Path(doc["markdown"]).read_text()
    assert "| trial 3 | finalist | 1500 [1425, 1575] | x1.5 [1.35, 1.65] |" in md
    # a profile whose run the study holds no more: said plainly, and which run is shown
    gone = confirmation(1.3, "trial 3 beats vLLM defaults beyond noise: x1.3")
    write_profile(profile_of(gone, "2025-12-24T00:00:00+00:00"), work / "gone.yaml")
    code, doc, err = report("gone.yaml", "--out", "gone")
    assert code == 0, err
    assert doc["verdict"].startswith("trial 3 beats vLLM defaults beyond noise: x1.3; could "
                                     f"not find autotune-runs/{NAME}")
    assert doc["note"].startswith("this profile was written on 2025-12-24 from a confirmation "
                                  "round the study no longer holds; the study "
                                  f"'{NAME}' now holds another run: the confirmation shown is "
                                  "the one finished on ")
    assert doc["note"].endswith("whose verdict was: nothing beat vLLM defaults beyond noise")
    assert f"**Note:** {doc['note']}" in Path(doc["markdown"]).read_text()
    assert doc["confirmation"]["summary"] == "nothing beat vLLM defaults beyond noise"


def test_a_study_copied_without_its_run_folder_still_reports_its_verdict(
        work: Path, report: Report) -> None:
    study = optuna.load_study(study_name=NAME, storage="sqlite:///autotune.db")
    keep(study, confirmation(1.5, "trial 3 beats vLLM defaults beyond noise: x1.5"))
    lease = take(study._storage, NAME, 5, 0.0)
    assert isinstance(lease, Lease)
    lease.done("confirmed")
    code, doc, err = report("--study", NAME)
    assert code == 0, err
    assert doc["verdict"].startswith("trial 3 beats vLLM defaults beyond noise: x1.5")
    assert doc["chosen_trial"] == 3 and doc["confirmation"]["winner"] == "trial-3"
    assert err.strip() == f"autotune: report: could not find autotune-runs/{NAME}"


def test_a_verdict_whose_record_is_nowhere_is_one_line_and_exit_1(
        work: Path, report: Report) -> None:
    study = optuna.load_study(study_name=NAME, storage="sqlite:///autotune.db")
    lease = take(study._storage, NAME, 5, 0.0)  # confirmed by an autotune that kept its
    assert isinstance(lease, Lease)  # record in the run folder only, copied without it
    lease.done("confirmed")
    code, doc, err = report("--study", NAME)
    assert code == 1
    assert err.strip().splitlines() == [
        "autotune: report: the study's confirmation round finished, but its record is in "
        f"neither the study's storage nor autotune-runs/{NAME}/confirm: no verdict to report "
        "(--runs-dir names the folder the run wrote it under)"]
    assert doc["confirmation"] is None


def test_report_json_is_one_schema_importances_always_an_object_no_optuna_line(
        work: Path, report: Report) -> None:
    code, few, err = report("--study", NAME)  # 5 trials: too few to rank settings
    assert code == 0 and err.strip() == f"autotune: report: could not find autotune-runs/{NAME}"
    check_documented("report", few)
    assert few["importances"] == {} and few["importances_note"].startswith("5 measured")
    study = recorded_study("sqlite:///autotune.db", "ranked")
    for i in range(12):
        dtype = "float16" if i % 2 else "bfloat16"
        add_trial(study, {"dtype": dtype}, (2000.0 if dtype == "bfloat16" else 1000.0) + i)
    code, ranked, err = report("--study", "ranked")
    assert code == 0
    # Optuna's "A new study created in memory" line (its importance evaluator) is not said
    assert err.strip() == "autotune: report: could not find autotune-runs/ranked", err
    check_documented("report", ranked)
    assert ranked["importances"] == {"dtype": pytest.approx(1.0)}
    assert ranked["importances_note"] is None


def test_pareto_json_and_its_table_say_units_and_single_readings(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = optuna.create_study(study_name="front", storage="sqlite:///autotune.db",
                                directions=["maximize", "minimize"])
    study.set_user_attr("objective", {"metric": "output_throughput", "pareto": [
        {"metric": "peak_memory_bytes", "direction": "minimize"}]})
    for n, (tp, mem) in enumerate([(1000.0, 4e9), (1500.0, 6e9), (900.0, 7e9)]):
        study.add_trial(optuna.trial.create_trial(
            values=[tp, mem], params={}, distributions={},
            user_attrs={"status": "ok", "args": {"max-num-seqs": 8 * (n + 1)},
                        "metrics": {"output_throughput": est(tp),
                                    "peak_memory_bytes": {"value": mem, "n": 1}}}))
    header, rows = front_rows(study)
    assert header[2:4] == ["output_throughput (tok/s), max [95%]",
                           "peak memory (GiB), min [95%]"]
    assert rows[0][3] == "5.588 (1 reading)"  # 6e9 bytes, one peak: no interval to give
    capsys.readouterr()
    assert main(["pareto", "--study", "front", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    check_documented("pareto", doc)
    assert [p["trial"] for p in doc["points"]] == [1, 0]
    assert doc["points"][0]["figures"]["peak_memory_bytes"] == {
        "value": 6e9, "low": None, "high": None, "n": 1, "basis": "single"}


def test_the_documented_schemas_are_the_codes() -> None:
    assert sorted(documented()) == sorted(SCHEMAS) == ["pareto", "plan", "report", "run"]
    for name, model in SCHEMAS.items():
        assert shape(documented()[name]) == shape(model.model_json_schema()), name


def test_the_pages_header_has_no_markdown_in_it(work: Path) -> None:
    data = gather("sqlite:///autotune.db", NAME, work / "autotune-runs")
    header = report_html._header(data)
    assert "none named (autotune report PROFILE reports a profile&#x27;s study)" in header
    assert "`" not in header


def test_a_profile_is_made_by_its_confirmation_though_it_keeps_six_digits() -> None:
    """The profile's confirmation block keeps each figure to 6 significant digits (the
    README's run on an AVX2 machine: 761.974 written, 761.9739016942016 measured); its own
    report must still find it its own, not call it another run's."""
    from autotune.decide.confirm import BASELINE_NAME, Confirmation
    from autotune.profiles.profile import Profile
    from autotune.report.records import made
    from tests.profiles.test_profile import meta

    def fig(v: float) -> dict[str, object]:
        return {"value": v, "low": v * 0.9, "high": v * 1.1, "n": 4, "basis": "starts"}

    conf = Confirmation.model_validate({
        "metric": "output_throughput", "direction": "maximize", "rounds": 4, "max_rounds": 6,
        "arms": [{"name": BASELINE_NAME, "role": "baseline", "trial": None, "args": {},
                  "env": {}, "objective": [294.9] * 4,
                  "figures": {"output_throughput": fig(294.907436341725)}},
                 {"name": "trial 1", "role": "finalist", "trial": 1, "args": {}, "env": {},
                  "objective": [762.0] * 4,
                  "figures": {"output_throughput": fig(761.9739016942016)}}],
        "verdict": {"reference": BASELINE_NAME, "winner": "trial 1", "rounds": 4,
                    "level": 0.99, "min_gain": 0.0, "comparisons": [],
                    "summary": "trial 1 beats vLLM defaults beyond noise"}})
    summary = {"rounds": 4, "arms": [
        {"name": BASELINE_NAME, "trial": None, "output_throughput": {"value": 294.907}},
        {"name": "trial 1", "trial": 1, "output_throughput": {"value": 761.974}}]}
    p = Profile(settings={"model": "/m"}, meta=meta(
        confirmation=summary, verdict="trial 1 beats vLLM defaults beyond noise"))
    assert made(p, conf)
    other = {**summary, "arms": [summary["arms"][0],  # type: ignore[index]
                                 {"name": "trial 1", "trial": 1,
                                  "output_throughput": {"value": 700.0}}]}
    assert not made(Profile(settings={"model": "/m"}, meta=meta(
        confirmation=other, verdict="trial 1 beats vLLM defaults beyond noise")), conf)
