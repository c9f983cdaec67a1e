"""`autotune report` on a stand-in study: the page and the summary say what each trial did,
failures with their reasons and logs, and the confirmation's gain with its interval. (The same
report from a real engine's study, opened in a real browser: tests/app/test_run_engine.py.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import optuna
import pytest

from autotune.cli.main import main
from autotune.core import units
from autotune.core.stats import Estimate
from autotune.decide.confirm import BASELINE_NAME
from autotune.profiles.profile import Profile, read_profile, write_profile
from autotune.report import html as report_html
from autotune.report.gather import MIN_TRIALS_FOR_IMPORTANCE, ReportData, gather, importances
from autotune.report.tables import confirmation_rows, summary_rows
from tests.browser import browser_page, wait_for_plots
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile
from tests.profiles.test_profile import meta
from tests.report.documented import check_documented

SPACE = DATA / "report_space.yaml"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space",
                     str(SPACE), "--trials", "4", "--launcher", shlex.join(FAKE_LAUNCHER),
                     "--no-verify-options", "--quiet", "--json", "run.json"]) == 0
    return work


def report(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        capsys.readouterr()
        assert main(["report", *args, "--json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


# the tests of the one stand-in study (study_dir) on one worker: the run is made once
ONE_STUDY = pytest.mark.xdist_group("report-study")


@ONE_STUDY
def test_the_report_names_failures_infeasible_trials_and_the_confirmation(
        study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = report(study_dir, capsys, "--study", "cpu.builtin-tiny-qwen3.report")
    assert len(doc["trials"]) == 4 and doc["failed"] == 1  # type: ignore[arg-type]
    assert doc["chosen_trial"] == 1  # the faster candidate won the confirmation
    assert "beats vLLM defaults beyond noise" in str(doc["verdict"])
    md = (study_dir / str(doc["markdown"])).read_text()
    assert "| trial 2 | infeasible |" in md  # 32 ms per token misses the 20 ms constraint
    assert re.search(r"- trial 3: \*\*\w+\*\*: ", md), md  # the crash, with its reason
    # a budget of 5 rounds, stopped once the finalist was settled
    assert re.search(r"## Confirmation: [345] interleaved rounds \(budget 5\)", md), md
    assert re.search(r"\| trial 1 \| finalist \| [\d.]+ \[[\d.]+, [\d.]+\] \| x[\d.]+ \[", md)
    page = (study_dir / str(doc["html"])).read_text()
    assert page.count("class=\"plotly-graph-div\"") >= 6
    assert "misses a constraint" in page and "Pareto front" in page
    assert "fake vLLM starting" in page  # the failed trial's log tail
    # self-contained: no script, style or image fetched from elsewhere (plotly's own code,
    # inline, holds URLs in strings; the browser test checks that none is requested)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert "<script" in page and not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    assert "<link" not in markup


@ONE_STUDY
def test_every_output_calls_the_infeasible_trial_infeasible_and_names_the_constraint(
        study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trial 2 serves 32 ms per token against a 20 ms maximum: the run's table, its JSON,
    the report's JSON and its summary all say infeasible, which constraint, and by how much
    (the run's table and JSON said `ok`, with no reason)."""
    name = "cpu.builtin-tiny-qwen3.report"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir}/autotune.db")
    header, rows = summary_rows(study, "output_throughput")
    assert header[2] == "output_throughput (tok/s) [95%]"
    by_trial = {r[0]: r for r in rows}
    assert [by_trial[n][1] for n in "0123"] == ["ok", "ok", "infeasible", "failed"]
    assert re.search(r"misses median_tpot_ms [\d.]+ ms \[[\d.]+, [\d.]+\] above its max 20 ms "
                     r"\(\+\d+%\)", by_trial["2"][-1]), by_trial["2"]
    run = json.loads((study_dir / "run.json").read_text())
    report_doc = report(study_dir, capsys, "--study", name)
    for doc in (run, report_doc):
        t2 = doc["trials"][2]  # type: ignore[index]
        assert (t2["number"], t2["status"]) == (2, "infeasible"), t2
        (miss,) = t2["missed"]
        assert (miss["metric"], miss["bound"], miss["limit"]) == ("median_tpot_ms", "max", 20)
        assert miss["by"] > 0.2 and miss["measured"]["value"] > 24
        assert t2["reason"] == by_trial["2"][-1].partition("; misses ")[2]
        assert [t["status"] for t in doc["trials"]] == ["ok", "ok", "infeasible", "failed"]  # type: ignore[union-attr]
    md = (study_dir / str(report_doc["markdown"])).read_text()
    assert re.search(r"\| trial 2 \| infeasible \| .* \| misses median_tpot_ms .* above its "
                     r"max 20 ms", md), md


@ONE_STUDY
def test_the_runs_json_follows_its_documented_schema_with_arms_by_id(study_dir: Path) -> None:
    run = json.loads((study_dir / "run.json").read_text())
    check_documented("run", run)
    conf = run["confirmation"]
    assert set(conf["arms"]) == {"vllm-defaults", "trial-1"}
    assert conf["arms"]["vllm-defaults"]["name"] == BASELINE_NAME
    assert conf["winner"] == "trial-1" and run["chosen"] == {
        "arm": "trial-1", "name": "trial 1", "trial": 1, "vllm_defaults": False}
    assert {c["challenger"] for c in conf["comparisons"]} == {"trial-1"}
    fig = conf["arms"]["trial-1"]["figures"]["output_throughput"]
    assert set(fig) == {"value", "low", "high", "n", "basis"}
    assert all(isinstance(fig[k], (int, float)) for k in ("value", "low", "high", "n"))


@ONE_STUDY
def test_a_report_from_a_profile_reports_the_study_that_made_it(
        study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = report(study_dir, capsys, str(here_profile()), "--out", "mine")
    assert doc["study"] == "cpu.builtin-tiny-qwen3.report" and doc["chosen_trial"] == 1
    md = (study_dir / "mine" / "report.md").read_text()
    deploy = read_profile(study_dir / here_profile()).deploy_command(here_profile())
    assert f"- **profile:** {here_profile()}\n- **deploy:** `{deploy}`" in md
    assert (study_dir / "mine" / "report.html").stat().st_size > 1_000_000  # plotly inline


@ONE_STUDY
def test_a_study_that_is_not_there_is_one_line(study_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(study_dir)
        assert main(["report", "--study", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "autotune: error: no study 'nope' in sqlite:///autotune.db"


# ------------------------------------------------------------ a recorded study, no server

HARDWARE = {"key": "h100-80gb-x1", "target": "h100", "cpu": "Intel(R) Xeon(R)",
            "cpu_count": 16, "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}]}
NEAR_ONE = {"value": 1.36, "low": 1.0002, "high": 1.72, "n": 5, "basis": "starts"}


def est(value: float, spread: float = 0.05) -> dict[str, object]:
    return {"value": value, "low": value * (1 - spread), "high": value * (1 + spread),
            "n": 3, "basis": "rounds"}


def add_trial(study: optuna.Study, params: dict[str, object], throughput: float | None,
              baseline: bool = False) -> None:
    """A finished search trial as the tuner records it (None: one that failed)."""
    choices: dict[str, tuple[object, ...]] = {"dtype": (None, "float16", "bfloat16"),
                                              "max-num-seqs": (None, 64, 128, 256)}
    for k in params:
        choices.setdefault(k, (None, True, False, 1, 2, 8))
    metrics = {} if throughput is None else {
        "output_throughput": est(throughput), "p95_ttft_ms": est(4000 / throughput),
        "peak_memory_bytes": est(6.421e9, 0.01)}
    study.add_trial(optuna.trial.create_trial(
        params=params,
        distributions={k: optuna.distributions.CategoricalDistribution(choices[k])  # type: ignore[arg-type]
                       for k in params},
        values=[throughput or 0.0],
        user_attrs={"status": "ok" if throughput is not None else "failed",
                    "reason": "" if throughput is not None else "oom", "metrics": metrics,
                    **({"role": "baseline"} if baseline else {})}))


def recorded_study(storage: str, name: str) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for k, v in {"metric": "output_throughput", "objective": {"direction": "maximize"},
                 "hardware": HARDWARE, "vllm_version": "vllm==0.32.0"}.items():
        study.set_user_attr(k, v)
    return study


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten measured trials of the same settings (nothing varied), a confirmation whose gain's
    interval starts a hair above 1 (1.0002), and the profile it made; reported by the CLI."""
    work = tmp_path_factory.mktemp("recorded")
    name = "h100.qwen.same"
    study = recorded_study(f"sqlite:///{work / 'autotune.db'}", name)
    settings = {"max-num-seqs": 128, "dtype": "bfloat16", "enable-prefix-caching": True,
                "enforce-eager": False}
    for i in range(10):
        add_trial(study, settings, 1000.0 + 10 * i, baseline=i == 0)
    conf = {"metric": "output_throughput", "direction": "maximize", "rounds": 5, "max_rounds": 5,
            "arms": [{"name": BASELINE_NAME, "role": "baseline", "trial": 0, "args": {},
                      "env": {}, "objective": [1000.0] * 5,
                      "figures": {"output_throughput": est(1000.0)},
                      "vs_baseline": {"output_throughput": {"value": 1.0, "low": 1.0,
                                                            "high": 1.0}}},
                     {"name": "trial 9", "role": "finalist", "trial": 9, "args": {},
                      "env": {}, "objective": [1360.0] * 5,
                      "figures": {"output_throughput": est(1360.0)},
                      "vs_baseline": {"output_throughput": NEAR_ONE}}],
            "verdict": {"reference": BASELINE_NAME, "winner": "trial 9", "rounds": 5,
                        "level": 0.95, "min_gain": 0.0, "comparisons": [],
                        "summary": "trial 9 beats vLLM defaults beyond noise"}}
    for folder in ("confirm", "trial-0000", "trial-0009"):
        (work / "runs" / name / folder).mkdir(parents=True)
    (work / "runs" / name / "confirm" / "confirmation.json").write_text(json.dumps(conf))
    path = work / "profiles" / "h100-80gb-x1" / "qwen.yaml"
    write_profile(Profile(settings=settings, meta=meta(
        hardware=HARDWARE, study=name, trial=9, vllm_version="vllm==0.32.0", target="h100",
        gain={"output_throughput": NEAR_ONE}, env={},
        verdict="trial 9 beats vLLM defaults beyond noise")), path)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["report", "profiles/h100-80gb-x1/qwen.yaml", "--storage",
                     "sqlite:///autotune.db", "--runs-dir", "runs", "--out", "out"]) == 0
    return work


def recorded_data(work: Path) -> ReportData:
    profile_path = "profiles/h100-80gb-x1/qwen.yaml"
    return gather(f"sqlite:///{work / 'autotune.db'}", "h100.qwen.same", work / "runs",
                  read_profile(work / profile_path), profile_path)


def test_a_ratio_bound_a_hair_above_1_keeps_its_digits_everywhere(recorded: Path) -> None:
    assert units.ratio(Estimate.model_validate(NEAR_ONE)) == "x1.36 [1.0002, 1.72]"
    data = recorded_data(recorded)
    assert data.confirmation is not None
    _, rows = confirmation_rows(data.confirmation)
    assert rows[1][3] == "x1.36 [1.0002, 1.72]"  # the table the CLI prints, too
    md = (recorded / "out" / "report.md").read_text()
    assert "| trial 9 | finalist | 1360 [1292, 1428] | x1.36 [1.0002, 1.72] |" in md
    assert "[1, 1.72]" not in md
    # the plot: its label (and hover) print the bound; the bar's interval ends above 1
    fig = report_html._gain(data)
    assert fig is not None
    bar = fig.data[0]
    assert list(bar.text) == ["x1 [1, 1]", "x1.36 [1.0002, 1.72]"]  # the hover
    assert bar.x[1] == "trial 9<br>x1.36 [1.0002, 1.72]"  # under the bar
    low = bar.y[1] - bar.error_y.arrayminus[1]
    assert low == pytest.approx(1.0002) and low > 1.0
    assert "x1.36 [1.0002, 1.72]" in (recorded / "out" / "report.html").read_text()


def test_importance_ranks_only_the_settings_that_varied() -> None:
    study = recorded_study("sqlite://", "dtype")
    # four options held fixed; dtype, the change that halves throughput, varied
    fixed = {"max-num-seqs": 128, "enable-prefix-caching": True, "enforce-eager": False,
             "block-size": 8}
    for i in range(12):
        dtype = "float16" if i % 2 else "bfloat16"
        add_trial(study, {**fixed, "dtype": dtype},
                  (2000.0 if dtype == "bfloat16" else 1000.0) + i)
    add_trial(study, {**fixed, "block-size": 1, "dtype": None}, None)  # failed: not measured
    found = importances(study, "output_throughput", maximize=True)
    assert found == {"dtype": pytest.approx(1.0)}, found


def test_importance_needs_enough_measured_trials_and_says_why() -> None:
    few = recorded_study("sqlite://", "few")
    for i in range(MIN_TRIALS_FOR_IMPORTANCE - 1):
        add_trial(few, {"dtype": "float16" if i % 2 else "bfloat16"}, 1000.0 * (1 + i % 2))
    assert importances(few, "output_throughput", maximize=True) == (
        "7 measured trials; ranking settings takes at least 8")
    same = recorded_study("sqlite://", "same")
    for i in range(10):
        add_trial(same, {"dtype": "bfloat16", "max-num-seqs": 128}, 1000.0 + i)
    assert importances(same, "output_throughput", maximize=True) == (
        "no setting took two values among the 10 measured trials")


def test_the_report_names_hardware_vllm_profile_and_deploy_command(recorded: Path) -> None:
    md = (recorded / "out" / "report.md").read_text().splitlines()
    deploy = read_profile(recorded / "profiles/h100-80gb-x1/qwen.yaml").deploy_command(
        "profiles/h100-80gb-x1/qwen.yaml")
    assert deploy == "vllm serve --config profiles/h100-80gb-x1/qwen.yaml"
    assert md[2:6] == ["- **hardware:** h100-80gb-x1", "- **vLLM:** vllm==0.32.0",
                       "- **profile:** profiles/h100-80gb-x1/qwen.yaml",
                       f"- **deploy:** `{deploy}`"]
    assert ("Not computed: no setting took two values among the 10 measured trials."
            in md)


def test_plots_label_every_point_and_carry_their_units(recorded: Path) -> None:
    data = recorded_data(recorded)
    front = report_html._scatter(data, "p95_ttft_ms")
    assert front.layout.yaxis.title.text == "output_throughput (tok/s)"
    assert front.layout.xaxis.title.text == "p95_ttft_ms (ms)"
    hover = [h for tr in front.data if tr.text for h in tr.text]
    assert hover[0].startswith("trial 0 (vLLM defaults)<br>") and "dtype=bfloat16" in hover[0]
    assert "<br>output_throughput: 1000 [950, 1050]" in hover[0]
    memory = report_html._scatter(data, "peak_memory_bytes")
    assert memory.layout.xaxis.title.text == "peak memory (GiB)"
    assert 5.9 < memory.data[0].x[0] < 6.0  # 6.421e9 bytes: 5.98 GiB
    assert "peak_memory_bytes: 5.98 GiB [5.92, 6.04]" in memory.data[0].text[0]
    history = report_html._history(data)
    axis = history.layout.xaxis
    assert (axis.tickmode, axis.dtick, axis.tickformat) == ("linear", 1, "d")
    assert [report_html._step(n) for n in (9, 13, 30, 100, 250)] == [1, 2, 5, 10, 50]
    assert history.data[0].text[3].startswith("trial 3<br>")
    assert report_html._memory(data).layout.yaxis.title.text == "peak memory (GiB)"


def test_the_page_in_a_real_browser_names_its_setting_and_ranks_nothing_unvaried(
        recorded: Path) -> None:
    page_path = (recorded / "out" / "report.html").resolve()
    with browser_page() as page:
        page.goto(page_path.as_uri())
        wait_for_plots(page, 5)
        header = page.inner_text("#header")
        body = page.inner_text("body")
        ticks = page.eval_on_selector_all("#plot-3 .xtick text",
                                          "els => els.map(e => e.textContent)")
        # what plotly drew for the gain: the finalist's interval starts above the 1.0 line
        low = page.evaluate("() => { const d = document.getElementById('plot-0').data[0];"
                            " return d.y[1] - d.error_y.arrayminus[1]; }")
        labels = page.eval_on_selector_all("#plot-0 .xtick text",
                                           "els => els.map(e => e.textContent)")
    assert "h100-80gb-x1" in header and "vllm==0.32.0" in header
    assert "vllm serve --config profiles/h100-80gb-x1/qwen.yaml" in header
    assert "Not computed: no setting took two values among the 10 measured trials." in body
    assert ticks and all(t.isdigit() for t in ticks), ticks  # whole trials: no 0.5
    assert low > 1.0 and "trial 9x1.36 [1.0002, 1.72]" in labels, (low, labels)
