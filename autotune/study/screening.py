"""Start-up trials for small budgets: change one option at a time from vLLM's defaults, then
combine the changes that helped.

A budget of tens of server starts cannot afford random start-up trials that move every option
at once: a random candidate that wins says little about which change mattered, and one that
loses hides a good change behind a bad one. Screening asks one question per start ("does this
change alone beat vLLM's defaults?"): after the baseline, each tuned option that may be left
unset is set, alone, to one of its other values (every option once before any option twice,
in a seeded order). When the screens are measured, the candidate that sets every option to the
value that did best alone, where that beat the baseline, is tried once. The sampler (TPE, GP,
NSGA-II) then models every trial so far, screens included.

Screening decides nothing: the verdict comes from the confirmation round as always. It only
chooses where to spend the first starts.
"""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.space.params import CategoricalParam, holds
from autotune.space.search import SearchSpace
from autotune.study.trials import BASELINE, ROLE, feasible

SCREEN = "screen"  # role of a one-change-at-a-time start-up trial
COMBINED = "combined"  # role of the trial combining the changes that helped


def screens(space: SearchSpace, seed: int | None) -> list[dict[str, Any]]:
    """The one-change candidates (every other option that may be unset left unset), at most
    the sampler's start-up count: every option once before any option twice, in an order
    drawn with `seed`."""
    tuned = space.tuned()
    unsettable = {n: s for n, s in tuned.items()
                  if isinstance(s, CategoricalParam) and None in s.choices}
    names = list(unsettable)
    rng = random.Random(seed)
    rng.shuffle(names)
    alternatives = {n: [c for c in unsettable[n].choices if c is not None] for n in names}
    for alts in alternatives.values():
        rng.shuffle(alts)
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < space.sampler.n_startup_trials and any(
            depth < len(a) for a in alternatives.values()):
        for name in names:
            if depth < len(alternatives[name]) and len(out) < space.sampler.n_startup_trials:
                cand: dict[str, Any] = {n: None for n in names}
                cand[name] = alternatives[name][depth]
                if all(holds(tuned[n].when, cand) for n in cand if cand[n] is not None):
                    out.append(cand)
        depth += 1
    return out


def uses_screening(space: SearchSpace) -> bool:
    return space.sampler.startup == "screen" and space.sampler.name in ("tpe", "gp", "nsga2")


def enqueue_screens(study: optuna.Study, space: SearchSpace) -> None:
    for cand in screens(space, space.sampler.seed):
        study.enqueue_trial(cand, user_attrs={ROLE: SCREEN}, skip_if_exists=True)


def _value(t: FrozenTrial, maximize: bool) -> float | None:
    """The trial's first goal as a figure to maximise; None if it failed or broke an SLO."""
    if t.state != TrialState.COMPLETE or not feasible(t) or not t.values:
        return None
    v = float(t.values[0])
    return v if maximize else -v


def combination(study: optuna.Study, space: SearchSpace) -> dict[str, Any] | None:
    """Once every screen has a result: each option at the value that did best alone where it
    beat vLLM's defaults; None until then, or when fewer than two changes helped (one change
    alone was measured already)."""
    trials = study.get_trials(deepcopy=False)
    screened = [t for t in trials if t.user_attrs.get(ROLE) == SCREEN]
    if not screened or any(t.state in (TrialState.WAITING, TrialState.RUNNING)
                           for t in screened):
        return None
    if any(t.user_attrs.get(ROLE) == COMBINED for t in trials):
        return None
    maximize = space.objective.goals()[0].direction == "maximize"
    base = [v for t in trials if t.user_attrs.get(ROLE) == BASELINE
            if (v := _value(t, maximize)) is not None]
    if not base:
        return None
    unsettable = [n for n, s in space.tuned().items()
                  if isinstance(s, CategoricalParam) and None in s.choices]
    best: dict[str, tuple[float, Any]] = {}
    for t in screened:
        v = _value(t, maximize)
        changed = [(n, t.params[n]) for n in unsettable if t.params.get(n) is not None]
        if v is None or len(changed) != 1 or v <= max(base):
            continue
        name, value = changed[0]
        if name not in best or v > best[name][0]:
            best[name] = (v, value)
    if len(best) < 2:
        return None
    cand: dict[str, Any] = {n: None for n in unsettable}
    cand.update({n: value for n, (_, value) in best.items()})
    return cand


def enqueue_combination(study: optuna.Study, space: SearchSpace) -> None:
    cand = combination(study, space)
    if cand is not None:
        study.enqueue_trial(cand, user_attrs={ROLE: COMBINED}, skip_if_exists=True)


__all__ = ["COMBINED", "SCREEN", "combination", "enqueue_combination", "enqueue_screens",
           "screens", "uses_screening"]
