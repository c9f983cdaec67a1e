"""The arms of a profile's confirmation as its metadata recorded them, as lines to read.

Each arm (vLLM's defaults, the current profile, the search's finalists) with its figures over
the rounds and its paired ratios to vLLM's defaults: what a run that kept vLLM's defaults
found of the others (one that served alike with a third of the memory, say) is here. Pure:
the recorded `confirmation` mapping in, strings out; profiles written by older autotune
versions record fewer figures per arm, and show those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from autotune.core.stats import Estimate
from autotune.core.units import describe, ratio


def _estimate(x: Any) -> Estimate | None:
    if not isinstance(x, Mapping):
        return None
    try:
        return Estimate.model_validate(x)
    except ValidationError:
        return None


def _estimates(x: Any) -> dict[str, Estimate]:
    out = {}
    for k, v in (x.items() if isinstance(x, Mapping) else ()):
        e = _estimate(v)
        if e is not None:
            out[str(k)] = e
    return out


def arm_figures(arm: Mapping[str, Any], metric: str) -> dict[str, Estimate]:
    """An arm's figures over the rounds: every one recorded (the objective's alone in
    profiles written before arms carried more)."""
    figures = _estimates(arm.get("figures"))
    own = _estimate(arm.get(metric))
    return {metric: own, **figures} if own is not None and metric not in figures else figures


def arm_ratios(arm: Mapping[str, Any], metric: str, conf: Mapping[str, Any],
               baseline: str | None) -> dict[str, Estimate]:
    """An arm's paired ratios to vLLM's defaults: those recorded on the arm, then each goal's
    from its comparison when vLLM's defaults were the reference."""
    out = _estimates(arm.get("ratios"))
    own = _estimate(arm.get("vs_baseline"))
    if own is not None:
        out.setdefault(metric, own)
    for c in conf.get("comparisons") or []:
        if isinstance(c, Mapping) and c.get("challenger") == arm.get("name") \
                and baseline is not None and c.get("reference") == baseline:
            for k, v in _estimates(c.get("goals")).items():
                out.setdefault(k, v)
    return out


def arms_text(conf: Mapping[str, Any], metric: str, chosen: str | None) -> list[str]:
    """`profiles show`'s lines for the confirmation's arms; `chosen`: the arm whose settings
    the profile holds. Empty when no arm was recorded (figures of the search)."""
    arms = [a for a in conf.get("arms") or [] if isinstance(a, Mapping)]
    if not arms:
        return []
    baseline = next((str(a.get("name")) for a in arms if a.get("role") == "baseline"), None)
    lines = [f"confirmation arms ({conf.get('rounds', '?')} interleaved rounds, a fresh server "
             "each; 95% intervals" + (f"; ratios paired with {baseline} round by round"
                                      if baseline else "") + "):"]
    for a in arms:
        name = str(a.get("name"))
        tags = [str(a.get("role"))] + (["this profile"] if name == chosen else [])
        lines.append(f"  {name} ({', '.join(tags)})")
        figures = arm_figures(a, metric)
        if figures:
            lines.append("    " + ", ".join(f"{k} {describe(k, v)}" for k, v in figures.items()))
        ratios = {} if name == baseline else arm_ratios(a, metric, conf, baseline)
        if ratios:
            lines.append(f"    vs {baseline}: "
                         + ", ".join(f"{k} {ratio(v)}" for k, v in ratios.items()))
        missed = a.get("missed")
        if a.get("failure"):
            lines.append("    did not count in " + (f"{missed} round(s)" if missed else
                                                     "some rounds") + f": {a.get('failure')}")
    return lines


def chosen_arm(conf: Mapping[str, Any], trial: int | None) -> str | None:
    """The arm whose settings a profile holds: the recorded winner, else the one of its
    trial (vLLM's defaults when it has none)."""
    if conf.get("winner"):
        return str(conf["winner"])
    for a in conf.get("arms") or []:
        if isinstance(a, Mapping) and (a.get("trial") == trial if trial is not None
                                       else a.get("role") == "baseline"):
            return str(a.get("name"))
    return None
