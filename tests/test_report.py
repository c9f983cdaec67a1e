"""`autotune report` on a stand-in study: the page and the summary say what each trial did,
failures with their reasons and logs, and the confirmation's gain with its interval. (The same
report from a real engine's study, opened in a real browser: tests/test_run_engine.py.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from autotune.cli import main
from tests.conftest import DATA, FAKE_LAUNCHER, here_profile

SPACE = DATA / "report_space.yaml"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["run", "--gpu", "cpu", "--model", "builtin:tiny-qwen3", "--space",
                     str(SPACE), "--trials", "4", "--launcher", shlex.join(FAKE_LAUNCHER),
                     "--no-verify-options", "--quiet"]) == 0
    return work


def report(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        capsys.readouterr()
        assert main(["report", *args, "--json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def test_the_report_names_failures_infeasible_trials_and_the_confirmation(
        study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = report(study_dir, capsys, "--study", "cpu.builtin-tiny-qwen3.report")
    assert doc["trials"] == 4 and doc["failed"] == 1
    assert doc["chosen_trial"] == 1  # the faster candidate won the confirmation
    assert "beats vLLM defaults beyond noise" in str(doc["verdict"])
    md = (study_dir / str(doc["markdown"])).read_text()
    assert "| trial 2 | infeasible |" in md  # 8 ms per token misses the 5 ms constraint
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


def test_a_report_from_a_profile_reports_the_study_that_made_it(
        study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = report(study_dir, capsys, str(here_profile()), "--out", "mine")
    assert doc["study"] == "cpu.builtin-tiny-qwen3.report" and doc["chosen_trial"] == 1
    assert (study_dir / "mine" / "report.html").stat().st_size > 1_000_000  # plotly inline


def test_a_study_that_is_not_there_is_one_line(study_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(study_dir)
        assert main(["report", "--study", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "autotune: error: no study 'nope' in sqlite:///autotune.db"
