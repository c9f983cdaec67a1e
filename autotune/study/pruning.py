"""An Optuna pruner that stops a candidate once its interval cannot reach the best so far.

Each round of the objective's level is reported as an intermediate value (step = round), so
a trial's intermediate values are its per-round figures; the pure rule in `measure.hopeless`
compares their interval with the best feasible trial's.
"""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from autotune.measure.stopping import PruneRule, hopeless
from autotune.study.trials import best_trial, is_baseline, objective_estimate


class IntervalPruner(BasePruner):
    def __init__(self, rule: PruneRule) -> None:
        self.rule = rule

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if is_baseline(trial):
            return False  # vLLM's defaults are the reference, always measured in full
        best = best_trial(study)
        if best is None:
            return False
        values = [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]
        return hopeless(values, objective_estimate(best), self.rule)
