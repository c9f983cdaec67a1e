"""Which Optuna sampler proposes candidates: TPE by default, GP, NSGA-II, random or grid.

Every sampler reads the trials' constraints (SLOs, failures) from the study itself
(`Trial.set_constraint`), so each learns that a failed or SLO-breaking candidate is worse than
any feasible one. vLLM's defaults are always the first trial whatever the sampler (they are
enqueued), and a repeat draw is answered from the study without a start (tuner.py).
"""

from __future__ import annotations

import itertools
import random
import warnings
from typing import Any, Literal

import optuna

from autotune.core.errors import ConfigError
from autotune.space.params import (
    ENV_PREFIX,
    CategoricalParam,
    FloatParam,
    IntParam,
    TrialParams,
    holds,
)
from autotune.space.search import SearchSpace, resolve

SamplerName = Literal["tpe", "gp", "nsga2", "random", "grid"]
SAMPLERS: tuple[str, ...] = ("tpe", "gp", "nsga2", "random", "grid")

# A grid of more points than this is a typo (a float range without a step), not a plan.
MAX_GRID_POINTS = 10_000


def _field(name: str) -> str:
    return f"env.{name[len(ENV_PREFIX):]}" if name.startswith(ENV_PREFIX) else f"args.{name}"


def grid_of(space: SearchSpace, source: str = "sampler") -> dict[str, list[Any]]:
    """Every value of every tuned parameter, for the grid sampler: categoricals as listed,
    int and stepped float ranges by their step."""
    grid: dict[str, list[Any]] = {}
    total = 1
    for name, spec in space.tuned().items():
        if isinstance(spec, CategoricalParam):
            values: list[Any] = list(spec.choices)
        elif isinstance(spec, IntParam):
            if spec.log:
                raise ConfigError(source, _field(name), "a log-scale range has no grid: list "
                                  "its values as a categorical to search it by grid")
            values = list(range(spec.low, spec.high + 1, spec.step))
        elif isinstance(spec, FloatParam) and spec.step is not None:
            n = round((spec.high - spec.low) / spec.step)
            values = [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
        else:
            raise ConfigError(source, _field(name), "a float range without a step has no grid: "
                              "give it a step, or list its values as a categorical")
        grid[name] = values
        total *= len(values)
    if total > MAX_GRID_POINTS:
        raise ConfigError(source, "sampler.name", f"grid of {total} points (more than "
                          f"{MAX_GRID_POINTS}): narrow the space or pick another sampler")
    return grid


def grid_size(space: SearchSpace) -> int:
    n = 1
    for values in grid_of(space).values():
        n *= len(values)
    return n


def finite(space: SearchSpace) -> bool:
    """Whether the space's candidates can be listed (no continuous range, not too many)."""
    try:
        grid_of(space)
    except ConfigError:
        return False
    return True


def unseen_candidate(space: SearchSpace, seen: list[TrialParams],
                     rng: random.Random) -> dict[str, Any] | None:
    """A candidate of a finite space no trial has had yet, drawn at random; None when every
    one has been tried."""
    grid = grid_of(space)
    tuned = space.tuned()
    names = list(grid)
    combos = list(itertools.product(*grid.values()))
    rng.shuffle(combos)
    for combo in combos:
        values: dict[str, Any] = {}
        for name, v in zip(names, combo, strict=True):
            values[name] = v if holds(tuned[name].when, values) else None
        if resolve(space, values) not in seen:
            return values
    return None


def make_sampler(space: SearchSpace, seed: int | None, n_objectives: int
                 ) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded. `seed` already accounts for trials done in earlier runs,
    so a resumed study does not replay the same draws."""
    s = space.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.name == "grid":
            return optuna.samplers.GridSampler(grid_of(space), seed=seed)
        if s.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                             deterministic_objective=False)
        if s.name == "nsga2":
            # a generation as small as the start-up trials: GPU budgets are tens of trials,
            # not NSGA-II's default 50 per generation
            return optuna.samplers.NSGAIISampler(
                population_size=max(4, s.n_startup_trials), seed=seed)
        # TPE: multivariate (the knobs interact), constant liar for workers sharing a study
        return optuna.samplers.TPESampler(n_startup_trials=s.n_startup_trials, seed=seed,
                                          multivariate=True, constant_liar=True)


__all__ = [
    "SAMPLERS",
    "SamplerName",
    "finite",
    "grid_of",
    "grid_size",
    "make_sampler",
    "unseen_candidate",
]
