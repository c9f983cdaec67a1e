"""What `run --json` and `retune --json` write for other tools: the run's outcome as data."""

from __future__ import annotations

from typing import Any

from autotune.app.run import RunOutcome
from autotune.study.trials import metrics_of, shown


def run_summary(outcome: RunOutcome) -> dict[str, Any]:
    """The verdict, the profile, every trial's figures and the confirmation round."""
    conf = outcome.confirmation
    trials = []
    for t in outcome.study.get_trials(deepcopy=False):
        if not shown(t):
            continue  # queued candidates not yet run, candidates handed back
        trials.append({
            "number": t.number, "state": t.state.name, "params": t.params,
            "status": t.user_attrs.get("status"), "reason": t.user_attrs.get("reason"),
            "metrics": {k: v.model_dump(mode="json") for k, v in metrics_of(t).items()},
        })
    return {
        "decided": outcome.decided, "verdict": outcome.note,
        "profile": None if outcome.profile_path is None else str(outcome.profile_path),
        "written": outcome.profile_written, "study": outcome.study.study_name,
        "best_trial": None if outcome.best is None else outcome.best.number,
        "trials": trials,
        "confirmation": None if conf is None else {
            "rounds": conf.rounds, "max_rounds": conf.max_rounds, "metric": conf.metric,
            "settled": conf.verdict.settled, "detect": conf.detect,
            "detectable": conf.verdict.detectable, "more_rounds": conf.verdict.more_rounds,
            "broken": conf.verdict.broken, "summary": conf.verdict.summary,
            "arms": {a.name: {k: v.model_dump(mode="json") for k, v in a.figures.items()
                              if k == conf.metric}
                     for a in conf.arms},
            "comparisons": [c.model_dump(mode="json") for c in conf.verdict.comparisons]},
    }


__all__ = ["run_summary"]
