"""Warm starts: the profiles kept for this model on other hardware, as first candidates here.

A profile tuned on another machine says which settings served this model well there; on new
hardware they are a better first guess than a random one, not an answer. Each is mapped into
this run's space (an option the space tunes takes the profile's value where the space allows
it, a range's the nearest allowed value; an option the space fixes or does not know is
dropped) and queued right after vLLM's defaults, where it is measured like any other trial:
nothing measured elsewhere is trusted here, and the confirmation round decides as always.

Pure but for reading the profiles (catalog.find_profiles): profiles in, candidates and the
lines that say what became of each out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.profiles.catalog import Entry, find_profiles, shipped_root
from autotune.profiles.profile import Profile
from autotune.space.params import (
    ENV_PREFIX,
    RESERVED_ARGS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Tuned,
    env_value,
    holds,
)
from autotune.space.search import SearchSpace

# Each warm start costs a server start of the budget: past this many, the search's own
# start-up trials (screens, the sampler) are worth more than one more machine's guess.
MAX_WARM_STARTS = 3
WARM_FROM = "warm_start"  # user attr of a warm-start trial: the profile it came from


@dataclass(frozen=True)
class WarmStart:
    """What became of one profile: a candidate (by Optuna name) and what mapping it took, or
    None and why it was skipped."""

    source: str  # `<hardware key>/<file>`
    params: dict[str, Any] | None
    note: str = ""

    def line(self) -> str:
        if self.params is None:
            return f"warm start: {self.source} skipped: {self.note}"
        return f"warm start: {self.source} -> {self.params}" + (
            f"; {self.note}" if self.note else "")


def for_run(space: SearchSpace, here: Path, fixed: Mapping[str, Any]) -> tuple[WarmStart, ...]:
    """A run's warm starts: none unless the space asks for them (`sampler.warm_start`), nor
    under the grid sampler (it visits every point anyway)."""
    if not space.sampler.warm_start or space.sampler.name == "grid":
        return ()
    return tuple(warm_starts(space, other_hardware(here, shipped_root()), fixed))


def other_hardware(here: Path, shipped: Path | None = None) -> list[Entry]:
    """The profiles of this run's model (and workload) under the other hardware keys beside
    `here`, the run's own profile path (`<profiles>/<key>/<model>.yaml`), then those of the
    catalog shipped with autotune (`shipped`), this hardware key's included: measured on
    another machine, each is a candidate, never a verdict. The one at `here` is not among
    them: it is the incumbent, measured again in the confirmation round."""
    root = here.parent.parent
    out = [e for e in find_profiles(root)
           if e.path.name == here.name and e.path.parent.name != here.parent.name]
    if shipped is not None and shipped.resolve() != root.resolve():
        out += [e for e in find_profiles(shipped, shipped=True) if e.path.name == here.name]
    return out


def warm_starts(space: SearchSpace, entries: Sequence[Entry],
                fixed: Mapping[str, Any] | None = None) -> list[WarmStart]:
    """Each profile mapped into `space`, in the order given; `fixed`: vLLM options this run
    sets besides the space's (the model's own, e.g. `load-format`), dropped like the space's
    fixed ones. At most MAX_WARM_STARTS are used; the same candidate is used once."""
    out: list[WarmStart] = []
    used: dict[str, str] = {}  # candidate -> the source that gave it
    for e in entries:
        source = f"{e.path.parent.name}/{e.path.name}"
        if e.shipped:
            source = f"shipped {source}"
        if e.profile is None:
            out.append(WarmStart(source, None, f"unreadable ({e.problem})"))
            continue
        w = warm_start(space, source, e.profile, fixed or {})
        if w.params is not None:
            key = repr(sorted(w.params.items()))
            if key in used:
                w = WarmStart(source, None, f"the same candidate as {used[key]}")
            elif len(used) >= MAX_WARM_STARTS:
                w = WarmStart(source, None, f"{MAX_WARM_STARTS} warm starts already (the "
                              "most a study takes)")
            else:
                used[key] = source
        out.append(w)
    return out


def warm_start(space: SearchSpace, source: str, profile: Profile,
               fixed: Mapping[str, Any]) -> WarmStart:
    """One profile as a candidate of `space`, or skipped with the reason."""
    if profile.meta.trial is None:
        return WarmStart(source, None, "it is vLLM's defaults, the first trial already")
    values, notes = mapped(space, profile.settings, profile.meta.env, fixed)
    if not values and notes:
        return WarmStart(source, None, f"this space can express none of it ({'; '.join(notes)})")
    if not values:  # it sets none of the options tuned here, differs in none fixed here
        return WarmStart(source, None, "in this space it is vLLM's defaults, the first trial "
                                       "already")
    return WarmStart(source, values, "; ".join(notes))


_MISS = object()  # a value the space cannot take (None is a value: "leave it unset")


def mapped(space: SearchSpace, settings: Mapping[str, Any], env: Mapping[str, str],
           fixed: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A profile's settings as this space's tuned values (by Optuna name), and a note for
    every value that was moved to the nearest allowed one or dropped."""
    tuned = space.tuned()
    given = {**{k: v for k, v in settings.items() if k not in RESERVED_ARGS},
             **{ENV_PREFIX + k: v for k, v in env.items()}}
    here = {**fixed, **space.args, **{ENV_PREFIX + k: v for k, v in space.env.items()}}
    values: dict[str, Any] = {}
    moved: list[str] = []
    dropped: list[str] = []
    for name, v in given.items():
        spec = tuned.get(name)
        if spec is None:
            if name not in here:
                dropped.append(f"{name} (not in this space)")
            elif not _same(here[name], v, name.startswith(ENV_PREFIX)):
                dropped.append(f"{name} (fixed here)")
            continue
        got = fit(spec, v, name.startswith(ENV_PREFIX))
        if got is _MISS:
            dropped.append(f"{name}={v!r} ({_outside(spec)})")
        else:
            values[name] = got
            if not _same(got, v, name.startswith(ENV_PREFIX)):
                moved.append(f"{name} {v!r} -> {got!r} (the nearest allowed)")
    for name, spec in tuned.items():  # in the space's order, as `when` is read
        if values.get(name) is not None and not holds(spec.when, values):
            dropped.append(f"{name} (tuned here only when {spec.when})")
            del values[name]
    return values, moved + ([f"dropped: {', '.join(dropped)}"] if dropped else [])


def fit(spec: Tuned, v: Any, env: bool = False) -> Any:
    """`v` as a value of `spec`: a choice equal to it, or the nearest allowed value of a range
    it lies in; _MISS when there is none. Environment values are text: "4" is the choice 4."""
    if isinstance(spec, CategoricalParam):
        return next((c for c in spec.choices if c is not None and _same(c, v, env)), _MISS)
    x = _number(v)
    if x is None or not spec.low <= x <= spec.high:
        return _MISS
    step = spec.step if not spec.log else None
    if isinstance(spec, IntParam):
        step = step or 1
        top = spec.low + (spec.high - spec.low) // step * step
        return min(top, spec.low + round((x - spec.low) / step) * step)
    assert isinstance(spec, FloatParam)
    if step is None:
        return float(x)
    top = spec.low + (spec.high - spec.low) // step * step
    return round(min(top, spec.low + round((x - spec.low) / step) * step), 12)


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(str(v))
    except ValueError:
        return None


def _same(choice: Any, v: Any, env: bool) -> bool:
    """Whether a value of the space and one of a profile are the same setting: by their text
    for an environment variable, by value otherwise (never `true` for 1)."""
    if env:
        return choice is not None and v is not None and env_value(choice) == str(v)
    if isinstance(choice, bool) or isinstance(v, bool):
        return choice is v
    if isinstance(v, str) and choice is not None and not isinstance(choice, str):
        return str(choice) == v
    return bool(choice == v)


def _outside(spec: Tuned) -> str:
    if isinstance(spec, CategoricalParam):
        return f"not among its choices {spec.choices}"
    return f"outside [{spec.low}, {spec.high}]"


__all__ = ["MAX_WARM_STARTS", "WARM_FROM", "WarmStart", "fit", "for_run", "mapped",
           "other_hardware", "warm_start", "warm_starts"]
