"""Objectives (one metric, a weighted score, a Pareto front), the choice rule, the samplers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from autotune.cli.main import parse_objective, parse_weights
from autotune.core.errors import ConfigError, FailureReason
from autotune.core.stats import Estimate
from autotune.decide.pareto import Point, dominates, front, knee_distance, ranked
from autotune.decide.scoring import derive, score, weighted_score
from autotune.decide.verdict import ArmFigures
from autotune.decide.verdict_goals import decide_pareto
from autotune.measure.result import PruneCheck, TrialResult
from autotune.profiles.profile import read_profile
from autotune.space.goals import Goal, Objective
from autotune.space.params import TrialParams
from autotune.space.search import parse_space
from autotune.study.front import export_front, front_record
from autotune.study.opening import StudyConfig
from autotune.study.samplers import grid_of, grid_size
from autotune.study.trials import best_trial, feasible, finalists, pareto_trials
from autotune.study.tuner import tune

UP = Goal(metric="output_throughput", direction="maximize")
DOWN = Goal(metric="p95_ttft_ms", direction="minimize")
MEM = Goal(metric="peak_memory_bytes", direction="minimize")


def est(v: float, rel: float = 0.01, n: int = 3) -> Estimate:
    return Estimate(value=v, low=v * (1 - rel), high=v * (1 + rel), n=n, basis="rounds")


# -- the front and its rule ------------------------------------------------------------------

def test_domination_respects_each_goals_direction() -> None:
    goals = [UP, DOWN]
    a, b = Point("a", (100.0, 50.0)), Point("b", (90.0, 60.0))
    assert dominates(a, b, goals) and not dominates(b, a, goals)
    c = Point("c", (110.0, 80.0))  # faster but slower to first token: a trade-off
    assert not dominates(a, c, goals) and not dominates(c, a, goals)
    assert not dominates(a, Point("a2", (100.0, 50.0)), goals)  # equal: neither


def test_front_keeps_the_trade_offs_and_drops_the_dominated() -> None:
    goals = [UP, DOWN, MEM]
    pts = [Point(1, (100, 50, 8)), Point(2, (90, 60, 9)), Point(3, (120, 90, 8)),
           Point(4, (80, 40, 4)), Point(5, (80, 40, 5)), Point(6, (math.nan, 1, 1))]
    assert [p.key for p in front(pts, goals)] == [1, 3, 4]


def test_primary_rule_and_knee_rule() -> None:
    obj = Objective(metric="output_throughput", pareto=[DOWN])
    pts = [Point("fast", (200.0, 900.0)), Point("knee", (180.0, 100.0)),
           Point("snappy", (50.0, 90.0))]
    assert ranked(pts, obj)[0].key == "fast"
    knee = obj.model_copy(update={"choose": "knee"})
    order = [p.key for p in ranked(pts, knee)]
    assert order[0] == "knee"
    # the distances are to the ideal point (200, 90), each goal scaled over the front
    assert knee_distance(pts[1], pts, knee.goals()) == pytest.approx(
        math.hypot(20 / 150, 10 / 810))


# -- objectives in the space file --------------------------------------------------------------

def test_objective_forms_are_validated() -> None:
    base = {"name": "s", "args": {"max-num-seqs": {"type": "categorical", "choices": [1, 2]}}}
    ok = parse_space({**base, "objective": {"metric": "weighted_score",
                                            "weights": {"output_throughput": 1,
                                                        "p95_ttft_ms": -0.5}}})
    assert ok.objective.weights["p95_ttft_ms"] == -0.5 and not ok.objective.multi
    bad = [
        ({"metric": "weighted_score"}, "needs weights"),
        ({"metric": "output_throughput", "weights": {"p95_ttft_ms": 1}}, "weighted_score"),
        ({"metric": "weighted_score", "weights": {"nope": 1}}, "unknown metric 'nope'"),
        ({"metric": "weighted_score", "direction": "minimize",
          "weights": {"p95_ttft_ms": 1}}, "maximized"),
        ({"pareto": [{"metric": "output_throughput", "direction": "maximize"}]}, "twice"),
        ({"pareto": [{"metric": "p95_ttft", "direction": "minimize"}]}, "unknown metric"),
        ({"choose": "knee"}, "needs a Pareto front"),
    ]
    for objective, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_space({**base, "objective": objective})


def test_weighted_score_is_a_product_of_powers_with_an_interval() -> None:
    obj = Objective(metric="weighted_score",
                    weights={"output_throughput": 1.0, "p95_ttft_ms": -0.5})
    metrics = {"output_throughput": est(400.0, 0.03), "p95_ttft_ms": est(100.0, 0.04)}
    ws = weighted_score(obj, metrics)
    assert ws is not None and ws.value == pytest.approx(400.0 / 10.0)
    # relative half-widths in quadrature, on the log scale: sqrt(0.03^2 + (0.5*0.04)^2)
    rel = math.sqrt(0.03 ** 2 + 0.02 ** 2)
    assert ws.low == pytest.approx(40.0 * math.exp(-rel))
    assert ws.high == pytest.approx(40.0 * math.exp(rel))
    # a 10% slower TTFT is worth about 5% more throughput: the two score alike
    slower = weighted_score(obj, {"output_throughput": est(400.0 * 1.1 ** 0.5),
                                  "p95_ttft_ms": est(110.0)})
    assert slower is not None and slower.value == pytest.approx(40.0)
    assert weighted_score(obj, {"output_throughput": est(400.0)}) is None  # not measured
    r = TrialResult(status="ok", command=[], env={}, metrics=metrics)
    assert derive(obj, r).metrics["weighted_score"] == ws
    assert score(obj, r).value == pytest.approx(40.0) and score(obj, r).feasible


def test_a_failed_trial_scores_worst_on_every_goal_and_is_infeasible() -> None:
    obj = Objective(metric="output_throughput", pareto=[DOWN, MEM])
    failed = TrialResult(status="failed", reason=FailureReason.OOM_AT_STARTUP, command=[],
                         env={})
    s = score(obj, failed)
    assert s.values == (0.0, 1e18, 1e18) and not s.feasible
    ok = TrialResult(status="ok", command=[], env={}, metrics={
        "output_throughput": est(10), "p95_ttft_ms": est(5), "peak_memory_bytes": est(7)})
    assert score(obj, ok).values == (10, 5, 7)
    missing = ok.model_copy(update={"metrics": {"output_throughput": est(10)}})
    assert not score(obj, missing).feasible  # a goal that was not measured


def test_command_line_objective_parsing() -> None:
    assert parse_objective("output_throughput") == {
        "metric": "output_throughput", "direction": "maximize", "pareto": []}
    got = parse_objective("output_throughput:max, p95_ttft_ms, peak_memory_bytes:min")
    assert got["pareto"] == [{"metric": "p95_ttft_ms", "direction": "minimize"},
                             {"metric": "peak_memory_bytes", "direction": "minimize"}]
    assert parse_weights("output_throughput=1,p95_ttft_ms=-0.5") == {
        "output_throughput": 1.0, "p95_ttft_ms": -0.5}
    for bad in ("output_throughput:up", ":max"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_objective(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_weights("output_throughput")


# -- the multi-goal verdict --------------------------------------------------------------------

def arm(name: str, role: str, tput: list[float], ttft: list[float]) -> ArmFigures:
    return ArmFigures(name, role, tuple(tput), None, (tuple(tput), tuple(ttft)))  # type: ignore[arg-type]


GOALS = [("output_throughput", "maximize"), ("p95_ttft_ms", "minimize")]


def test_pareto_verdict_needs_a_gain_beyond_noise_and_no_loss_beyond_noise() -> None:
    base = arm("vLLM defaults", "baseline", [100, 104, 98, 101, 99], [200, 210, 190, 205, 195])
    # same throughput, half the TTFT: wins on one goal, loses on none
    snappy = arm("trial 3", "finalist", [101, 103, 99, 100, 100], [100, 104, 96, 101, 99])
    v = decide_pareto([base, snappy], GOALS)  # type: ignore[arg-type]
    assert v.winner == "trial 3"
    c = v.comparisons[0]
    assert c.better_on == ["p95_ttft_ms"] and c.worse_on == []
    assert c.goals["p95_ttft_ms"].value == pytest.approx(0.5, rel=0.05)
    assert "p95_ttft_ms x0.5" in v.summary
    assert "loses at most 5% on output_throughput" in v.summary
    # faster but much slower to first token: a trade-off, not a win over the defaults
    trade = arm("trial 4", "finalist", [150, 155, 148, 152, 149], [400, 420, 380, 410, 390])
    v = decide_pareto([base, trade], GOALS)  # type: ignore[arg-type]
    assert v.winner == "vLLM defaults" and v.comparisons[0].worse_on == ["p95_ttft_ms"]
    # the same settings measured again: no win on noise
    again = arm("trial 5", "finalist", [101, 102, 99, 100, 98], [199, 212, 191, 203, 197])
    assert decide_pareto([base, again], GOALS).winner == "vLLM defaults"  # type: ignore[arg-type]
    # half the TTFT, but throughput too noisy to show it lost at most 5%: not a win either
    # ("not worse" must be measured, not assumed from a wide interval)
    noisy = arm("trial 6", "finalist", [60, 140, 70, 150, 90], [100, 104, 96, 101, 99])
    v = decide_pareto([base, noisy], GOALS)  # type: ignore[arg-type]
    c = v.comparisons[0]
    assert c.better_on == ["p95_ttft_ms"] and c.worse_on == [] and c.unproven_on == [
        "output_throughput"]
    assert v.winner == "vLLM defaults" and "losing at most 5% on the others" in v.summary


# -- samplers ----------------------------------------------------------------------------------

def test_grid_lists_every_value_and_refuses_what_has_no_grid() -> None:
    space = parse_space({"name": "g", "args": {
        "max-num-seqs": {"type": "int", "low": 4, "high": 16, "step": 4},
        "gpu-memory-utilization": {"type": "float", "low": 0.8, "high": 0.9, "step": 0.05},
        "dtype": {"type": "categorical", "choices": [None, "float32"]}},
        "env": {"VLLM_CPU_OMP_THREADS_BIND": {"type": "categorical", "choices": [None, "nobind"]}}})
    g = grid_of(space)
    assert g["max-num-seqs"] == [4, 8, 12, 16]
    assert g["gpu-memory-utilization"] == [0.8, 0.85, 0.9]
    assert g["env:VLLM_CPU_OMP_THREADS_BIND"] == [None, "nobind"]
    assert grid_size(space) == 4 * 3 * 2 * 2
    no_step = parse_space({"name": "g", "args": {
        "gpu-memory-utilization": {"type": "float", "low": 0.8, "high": 0.9}}})
    with pytest.raises(ConfigError, match=r"args\.gpu-memory-utilization: a float range"):
        grid_of(no_step, "space.yaml")
    huge = parse_space({"name": "g", "args": {
        "max-num-seqs": {"type": "int", "low": 1, "high": 1000},
        "max-num-batched-tokens": {"type": "int", "low": 1, "high": 1000}}})
    with pytest.raises(ConfigError, match="grid of 1000000 points"):
        grid_of(huge)


SEQS = [None, 2, 4, 8, 16]


def scripted(params: TrialParams, number: int, prune: PruneCheck | None = None) -> TrialResult:
    """More seqs: more throughput, slower first token, more memory; 16 misses the SLO."""
    n = params.args.get("max-num-seqs", 6)
    if params.args.get("dtype") == "broken":
        return TrialResult(status="failed", reason=FailureReason.STARTUP_CRASH, detail="x",
                           command=[], env={})
    tput, ttft, mem = 100.0 * n ** 0.5, 10.0 * n, 1e9 + 1e8 * n
    return TrialResult(status="ok", command=[], env={}, metrics={
        "output_throughput": est(tput), "p95_ttft_ms": est(ttft), "peak_memory_bytes":
        est(mem)}, round_values=[tput] * 3)


def space_with(objective: dict, sampler: str = "tpe") -> object:
    return parse_space({
        "name": "mo", "args": {"max-num-seqs": {"type": "categorical", "choices": SEQS},
                               "dtype": {"type": "categorical",
                                         "choices": [None, "broken"]}},
        "objective": objective, "sampler": {"name": sampler, "seed": 0,
                                            "n_startup_trials": 3}})


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2", "random", "grid"])
def test_every_sampler_runs_a_multi_objective_study_and_the_front_is_feasible(
        tmp_path: Path, sampler: str) -> None:
    space = space_with({"metric": "output_throughput", "pareto": [
        {"metric": "p95_ttft_ms", "direction": "minimize"},
        {"metric": "peak_memory_bytes", "direction": "minimize"}],
        "constraints": {"p95_ttft_ms": {"max": 100}}}, sampler)
    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 8), scripted,  # type: ignore[arg-type]
                 {"objective": space.objective.model_dump(mode="json")})  # type: ignore[attr-defined]
    assert len(study.directions) == 3
    pts = pareto_trials(study, space.objective)  # type: ignore[attr-defined]
    assert pts and all(feasible(t) for t in pts)
    assert all(t.params.get("max-num-seqs") != 16 and t.params.get("dtype") != "broken"
               for t in pts)
    # on this scripted engine every feasible setting is a trade-off: all distinct ones are
    # on the front, the fastest first under the primary rule
    assert pts[0].values[0] == max(t.values[0] for t in pts)
    assert best_trial(study, space.objective).number == pts[0].number  # type: ignore[attr-defined,union-attr]


def test_the_knee_is_chosen_and_confirmed_first_and_the_front_exports_as_profiles(
        tmp_path: Path) -> None:
    space = space_with({"metric": "output_throughput", "choose": "knee", "pareto": [
        {"metric": "p95_ttft_ms", "direction": "minimize"}]}, "grid")
    attrs = {"objective": space.objective.model_dump(mode="json"),  # type: ignore[attr-defined]
             "target": "cpu", "model": "builtin:tiny-qwen3", "model_path": "/models/tiny",
             "model_args": {"max-model-len": 1024}, "space": "mo", "workload": {}}
    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 12), scripted,  # type: ignore[arg-type]
                 attrs)
    pts = pareto_trials(study, space.objective)  # type: ignore[attr-defined]
    assert len(pts) >= 3
    chosen = pts[0]
    distances = [knee_distance(Point(t.number, tuple(t.values)),
                               [Point(p.number, tuple(p.values)) for p in pts],
                               space.objective.goals()) for t in pts]  # type: ignore[attr-defined]
    assert distances[0] == min(distances)
    picked = finalists(study, 2, lambda t: tuple(sorted(t.params.items(), key=str)),
                       space.objective)  # type: ignore[attr-defined]
    assert picked[0].number == chosen.number or chosen.user_attrs.get("role") == "baseline"
    rec = front_record(study, space.objective)  # type: ignore[attr-defined]
    assert [p["trial"] for p in rec["points"]] == [t.number for t in pts]
    assert rec["points"][0]["chosen"] and "p95_ttft_ms" in rec["points"][0]["figures"]
    paths = export_front(study, tmp_path / "front")
    assert len(paths) == len(pts)
    first = read_profile(paths[0])
    assert first.settings["model"] == "/models/tiny"
    assert first.settings["max-model-len"] == 1024
    assert first.meta.trial == chosen.number and "not confirmed" in first.meta.verdict
    assert first.meta.metrics["p95_ttft_ms"].value == chosen.values[1]


def test_no_finalists_means_none_not_all(tmp_path: Path) -> None:
    space = space_with({"metric": "output_throughput"}, "grid")
    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 6), scripted,  # type: ignore[arg-type]
                 {})
    def key(t: object) -> object:
        return tuple(sorted(t.params.items(), key=str))  # type: ignore[attr-defined]
    assert finalists(study, 0, key) == []
    assert len(finalists(study, 2, key)) == 2


def test_validate_refuses_a_grid_over_a_continuous_range(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from autotune.cli.main import main

    f = tmp_path / "g.yaml"
    f.write_text("name: g\nargs:\n  gpu-memory-utilization: {type: float, low: 0.8, high: 0.9}\n"
                 "sampler: {name: grid}\n")
    assert main(["validate", "--no-verify-options", str(f)]) == 2
    assert "g.yaml: args.gpu-memory-utilization: a float range without a step has no grid" \
        in capsys.readouterr().err


# -- start-up trials: one change at a time, then the changes that helped -----------------------

def screened_space(startup: str = "screen", n: int = 5) -> object:
    return parse_space({
        "name": "scr", "args": {
            "dtype": {"type": "categorical", "choices": [None, "float32"]},
            "max-num-seqs": {"type": "categorical", "choices": [None, 4, 16]},
            "enforce-eager": {"type": "categorical", "choices": [None, True]},
            "max-num-batched-tokens": {"type": "int", "low": 256, "high": 1024, "step": 256}},
        "sampler": {"name": "tpe", "seed": 3, "n_startup_trials": n, "startup": startup}})


def additive(params: TrialParams, number: int, prune: PruneCheck | None = None) -> TrialResult:
    """float32 +50%, seqs 16 +20% (4: -30%), eager -40%: effects that add up."""
    a = params.args
    v = 1000.0 * (1.5 if a.get("dtype") == "float32" else 1) * {None: 1, 4: 0.7, 16: 1.2}[
        a.get("max-num-seqs")] * (0.6 if a.get("enforce-eager") else 1)
    return TrialResult(status="ok", command=[], env={},
                       metrics={"output_throughput": est(v)}, round_values=[v] * 3)


def test_screening_changes_one_option_at_a_time_then_combines_what_helped(
        tmp_path: Path) -> None:
    from autotune.study.screening import COMBINED, SCREEN, screens

    space = screened_space()
    cands = screens(space, 3)  # type: ignore[arg-type]
    # each option that may be left unset is changed alone, every option once before seqs'
    # second value; the range has no "unset" and is the sampler's
    assert len(cands) == 4
    assert all(sum(v is not None for v in c.values()) == 1 for c in cands)
    assert {next(k for k, v in c.items() if v is not None) for c in cands[:3]} == {
        "dtype", "max-num-seqs", "enforce-eager"}
    assert screens(space, 3) == cands and len(screens(screened_space(n=2), 3)) == 2  # type: ignore[arg-type]

    study = tune(space, StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 7), additive, {})  # type: ignore[arg-type]
    roles = [t.user_attrs.get("role") for t in study.trials]
    assert roles[:6] == ["baseline", SCREEN, SCREEN, SCREEN, SCREEN, COMBINED]
    combined = study.trials[5].params
    # float32 and seqs 16 each beat the defaults alone; eager and seqs 4 did not
    assert (combined["dtype"], combined["max-num-seqs"], combined["enforce-eager"]) == (
        "float32", 16, None)
    assert study.trials[5].values[0] == max(t.values[0] for t in study.trials if t.values)


def test_no_combination_when_fewer_than_two_changes_helped(tmp_path: Path) -> None:
    from autotune.study.screening import COMBINED

    def only_dtype(params: TrialParams, number: int, prune: PruneCheck | None = None
                   ) -> TrialResult:
        v = 1500.0 if params.args.get("dtype") == "float32" else 900.0 + number
        if params.args.get("max-num-seqs") or params.args.get("enforce-eager"):
            v = 800.0
        return TrialResult(status="ok", command=[], env={},
                           metrics={"output_throughput": est(v)}, round_values=[v] * 3)

    study = tune(screened_space(), StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 7),  # type: ignore[arg-type]
                 only_dtype, {})
    assert COMBINED not in [t.user_attrs.get("role") for t in study.trials]


def test_random_start_up_enqueues_no_screens(tmp_path: Path) -> None:
    study = tune(screened_space("random"), StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s",  # type: ignore[arg-type]
                                                       4), additive, {})
    assert [t.user_attrs.get("role") for t in study.trials] == ["baseline", None, None, None]


def test_screens_beyond_the_budget_stay_queued_and_out_of_the_table(tmp_path: Path) -> None:
    from autotune.report.tables import summary_rows

    study = tune(screened_space(), StudyConfig(f"sqlite:///{tmp_path / 's.db'}", "s", 2),  # type: ignore[arg-type]
                 additive, {})
    assert [t.state.name for t in study.trials].count("WAITING") == 3
    _, rows = summary_rows(study, "output_throughput")
    assert [r[0] for r in rows] == ["0", "1"]
    assert rows[0][-1] == "vLLM's defaults" and "=" in rows[1][-1]


def test_a_run_says_what_it_left_queued_and_a_larger_budget_measures_it_first(
        tmp_path: Path) -> None:
    from autotune.app.run import RunOutcome
    from autotune.app.summary import run_summary
    from autotune.report.gather import gather, markdown
    from autotune.study.screening import SCREEN
    from autotune.study.trials import queued_note

    db = f"sqlite:///{tmp_path / 's.db'}"
    study = tune(screened_space(), StudyConfig(db, "s", 2), additive, {})  # type: ignore[arg-type]
    note = queued_note(study)
    assert note is not None and note.startswith("3 queued candidates not measured")
    assert "larger --trials" in note
    assert run_summary(RunOutcome(study=study, best=None, confirmation=None, decided=False,
                                  profile_written=False, note="-"))["queued"] == 3
    assert note in markdown(gather(db, "s", tmp_path / "runs"))
    # the same study with a budget of 5: the three screens, queued first, are what it measures
    study = tune(screened_space(), StudyConfig(db, "s", 5), additive, {})  # type: ignore[arg-type]
    assert [t.user_attrs.get("role") for t in study.trials[2:5]] == [SCREEN] * 3
    assert all(t.state.name == "COMPLETE" for t in study.trials[:5])
    # the combination of the screens that helped is queued next, and said so
    assert (queued_note(study) or "").startswith("1 queued candidate not measured")
