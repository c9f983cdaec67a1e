"""Combinations of vLLM options that the installed vLLM refuses, found before any start.

vLLM's parser takes each option alone; its scheduler config then refuses some combinations at
start-up (`max-num-batched-tokens` below `max-num-seqs`, or below `max-model-len` without
chunked prefill, ...). Every combination of those options that the space can produce (a
range by its two ends) is put to the installed vLLM's own `SchedulerConfig`, in one child
process, before the first start. A space all of whose combinations are refused stops with one
line; a candidate whose combination is refused is recorded without a start (`breaks_rule`,
with vLLM's words). An option left unset takes the value vLLM could choose that is least
likely to be refused, so only what vLLM refuses whatever its defaults is refused here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.core.errors import ConfigError, FailureReason
from autotune.engine.vllm_args import SCHEDULER_OPTIONS, combination_problems
from autotune.space import limits
from autotune.space.params import CategoricalParam, FloatParam, IntParam, TrialParams
from autotune.space.search import SearchSpace

MAX_COMBINATIONS = 2000
# An unset option's most permissive value for the check (None: leave it to SchedulerConfig).
PERMISSIVE: dict[str, Any] = {"max-num-seqs": 1}
NAMES = ["max-model-len", *SCHEDULER_OPTIONS]

Check = Callable[[TrialParams], "tuple[FailureReason, str] | None"]


def _values(space: SearchSpace, base_args: dict[str, Any], name: str) -> list[Any]:
    spec = space.args.get(name, base_args.get(name))
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    if isinstance(spec, (IntParam, FloatParam)):
        return [spec.low, spec.high]
    return [spec]


def _combo(args: dict[str, Any], context: int | None) -> dict[str, Any] | None:
    """The scheduler options of one candidate, ready for vLLM; None when not checkable."""
    batched = args.get("max-num-batched-tokens")
    # left to vLLM, or `auto` (-1): the model's own context, as vLLM takes it (auto fits it
    # to memory, which only lowers it); `1k` and `2K` are counts, as vLLM's parser reads them
    model_len = limits.model_len(args.get("max-model-len")) or context
    if batched is None or model_len is None:
        return None  # vLLM's own default batch budget depends on the host: not checked
    out: dict[str, Any] = {"max-model-len": model_len}
    for name in SCHEDULER_OPTIONS:
        v = args.get(name)
        out[name] = PERMISSIVE.get(name) if v is None else v
    return out


def _key(combo: dict[str, Any]) -> str:
    return json.dumps(combo, sort_keys=True, default=str)


@dataclass(frozen=True)
class Combinations:
    """The scheduler options' combinations a space can produce, to put to vLLM."""

    base_args: dict[str, Any]
    context: int | None
    combos: list[dict[str, Any]]
    unchecked: bool  # a candidate vLLM's defaults decide for: it may well start


def combinations(space: SearchSpace, base_args: dict[str, Any], context: int | None
                 ) -> Combinations | None:
    """Every checkable combination the space can produce (None: nothing to check)."""
    if not any(isinstance(space.args.get(n), (CategoricalParam, IntParam, FloatParam))
               or space.args.get(n, base_args.get(n)) is not None
               for n in SCHEDULER_OPTIONS):
        return None
    grids = [_values(space, base_args, n) for n in NAMES]
    seen: set[str] = set()
    combos = []
    unchecked = False
    for values in itertools.product(*grids):
        c = _combo(dict(zip(NAMES, values, strict=True)), context)
        unchecked = unchecked or c is None
        if c is not None and _key(c) not in seen:
            seen.add(_key(c))
            combos.append(c)
        if len(combos) >= MAX_COMBINATIONS:
            break
    return Combinations(dict(base_args), context, combos, unchecked) if combos else None


def judge(space: SearchSpace, found: Combinations, problems: Sequence[str | None],
          source: str) -> Check:
    """Raise ConfigError when vLLM refused (`problems`, one per combination) every one the
    space can produce; else the per-candidate check."""
    table = {_key(c): p for c, p in zip(found.combos, problems, strict=True)}
    refused = [p for p in table.values() if p]
    if refused and len(refused) == len(table) and not found.unchecked:
        raise ConfigError(source, "args", f"vLLM refuses every combination of "
                          f"{', '.join(n for n in NAMES if n in space.args)} this space can "
                          f"produce, e.g.: {refused[0]}")

    def check(params: TrialParams) -> tuple[FailureReason, str] | None:
        c = _combo({**found.base_args, **params.args}, found.context)
        problem = table.get(_key(c)) if c is not None else None
        if problem:
            return FailureReason.BREAKS_RULE, f"vLLM refuses this combination: {problem}"
        return None
    return check


def scheduler_check(space: SearchSpace, base_args: dict[str, Any], context: int | None,
                    source: str) -> Check | None:
    """Ask vLLM about every combination the space can produce; raise ConfigError when it
    refuses them all; return the per-candidate check (None: nothing to check)."""
    found = combinations(space, base_args, context)
    if found is None:
        return None
    return judge(space, found, combination_problems(found.combos), source)


__all__ = ["Combinations", "combinations", "judge", "scheduler_check"]
