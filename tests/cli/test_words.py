"""What the CLI says in words: each trial's line names the constraint it missed and its
figure's unit, and every option of the commands here has a help text that wraps whole."""

from __future__ import annotations

import argparse

import pytest

from autotune.cli.main import build_parser
from autotune.cli.run import progress
from autotune.core.stats import Estimate
from autotune.measure.result import TrialResult
from autotune.space.goals import Objective
from autotune.study.standing import misses
from autotune.study.tuner import TrialReport

COMMANDS = ("run", "retune", "report", "pareto", "profiles", "serve", "check", "validate")


def test_a_trial_that_misses_a_constraint_says_which_by_how_much_with_units() -> None:
    result = TrialResult(status="ok", command=[], env={}, measure_s=12.0, metrics={
        "output_throughput": Estimate(value=866.0, low=850.0, high=880.0, n=3, basis="rounds"),
        "median_tpot_ms": Estimate(value=32.0, low=30.5, high=33.5, n=3, basis="rounds"),
        "p95_ttft_ms": Estimate(value=40.0, low=35.0, high=45.0, n=3, basis="rounds")})
    objective = Objective.model_validate({"constraints": {"median_tpot_ms": {"max": 20}}})
    missed = misses({"trial_ok": 0.0, "median_tpot_ms_max": 0.6}, result.metrics, objective)
    lines: list[str] = []
    progress(lines.append)["on_trial"](TrialReport(
        2, {}, 866.0, False, result, left=1, missed=tuple(missed)))
    assert lines == ["trial 2: output_throughput 866 [850, 880] tok/s (3 rounds, 12 s), p95 "
                     "TTFT 40 [35, 45] ms, startup 0 s (infeasible: median_tpot_ms 32 ms "
                     "[30.5, 33.5] above its max 20 ms (+60%))"]


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action,
                                                                     argparse.ArgumentParser]]:
    out = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                if path or name in COMMANDS:
                    out += _options(sub, f"{path} {name}".strip())
        elif path and not isinstance(a, argparse._HelpAction):
            out.append((path, a, parser))
    return out


@pytest.mark.parametrize("columns", ["60", "80", "100"])
def test_every_option_has_a_help_text_and_no_word_is_cut(
        columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    options = _options(build_parser(), "")
    assert {p.split()[0] for p, _, _ in options} == set(COMMANDS)
    for path, action, parser in options:
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{path} {name}: no help text"
        shown = set(parser.format_help().split())
        cut = [w for w in action.help.split() if w not in shown]
        assert not cut, f"{path} {name}: cut at the line's end: {cut}"
