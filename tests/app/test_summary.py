"""`run --json` says what the verdict chose apart from the search's best, in its documented
schema (the run's own JSON on the stand-in: tests/report/test_report.py)."""

from __future__ import annotations

import json

import optuna

from autotune.app.run import RunOutcome
from autotune.app.summary import run_summary
from autotune.decide.confirm import BASELINE_NAME, Confirmation
from tests.report.documented import check_documented
from tests.report.test_report import add_trial, est, recorded_study


def test_the_chosen_settings_are_not_the_searchs_best_when_the_defaults_are_kept() -> None:
    study = recorded_study("sqlite://", "kept")
    for i in range(9):  # trial 8 the best of the search, on one start each
        add_trial(study, {"dtype": "bfloat16"}, 1000.0 + 10 * i, baseline=i == 0)
    conf = Confirmation.model_validate({
        "metric": "output_throughput", "direction": "maximize", "rounds": 6, "max_rounds": 6,
        "arms": [{"name": BASELINE_NAME, "role": "baseline", "trial": None, "args": {},
                  "env": {}, "objective": [1000.0] * 6,
                  "figures": {"output_throughput": est(1000.0)}},
                 {"name": "trial 8", "role": "finalist", "trial": 8, "args": {}, "env": {},
                  "objective": [1001.0] * 6, "figures": {"output_throughput": est(1001.0)},
                  "vs_baseline": {"output_throughput": {
                      "value": 1.001, "low": 0.9, "high": 1.1, "n": 6, "basis": "starts"}}},
                 {"name": "trial 5", "role": "finalist", "trial": 5, "args": {}, "env": {},
                  "objective": [1200.0, None, 1200.0], "failure": "oom_under_load",
                  "figures": {"output_throughput": est(1200.0)}}],
        "verdict": {"reference": BASELINE_NAME, "winner": BASELINE_NAME, "rounds": 6,
                    "level": 0.95, "min_gain": 0.0, "comparisons": [{
                        "challenger": "trial 8", "reference": BASELINE_NAME,
                        "ratio": {"value": 1.001, "low": 0.9, "high": 1.1, "n": 6},
                        "decision_interval": {"value": 1.001, "low": 0.88, "high": 1.12},
                        "beats": False}],
                    "out": ["trial 5"],
                    "summary": "nothing beat vLLM defaults beyond noise"}})
    best = optuna.load_study(study_name="kept", storage=study._storage).trials[8]
    doc = run_summary(RunOutcome(study=study, best=best, confirmation=conf, decided=True,
                                 profile_written=True, note="kept vLLM defaults"))
    check_documented("run", json.loads(json.dumps(doc)))
    assert doc["search_best_trial"] == 8 and "best_trial" not in doc
    assert doc["chosen"] == {"arm": "vllm-defaults", "name": BASELINE_NAME, "trial": None,
                             "vllm_defaults": True}
    assert sorted(doc["confirmation"]["arms"]) == ["trial-5", "trial-8", "vllm-defaults"]
    # trial 5 failed a round vLLM's defaults served: out, by its id, with no comparison
    assert doc["confirmation"]["out"] == ["trial-5"]
    assert doc["confirmation"]["arms"]["trial-8"]["name"] == "trial 8"
    (c,) = doc["confirmation"]["comparisons"]
    assert (c["challenger"], c["reference"], c["beats"]) == ("trial-8", "vllm-defaults", False)
    assert (c["stopped"], c["reference_failed"], c["both_failed"], c["on_failures"],
            c["outranked_by"]) == (False, 0, 0, False, None)
