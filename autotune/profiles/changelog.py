"""The history of a profile: each replacement, with what changed and by how much.

`history/CHANGES.md` beside the profiles, newest last, one entry per replacement: the copy of
the replaced file, the settings that changed, and the winner's paired ratios to the profile
it replaced, measured side by side in the same confirmation round (or why there are none).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from autotune.decide.confirm import INCUMBENT_NAME, Confirmation
from autotune.profiles.profile import Profile


def changes_path(profile: Path) -> Path:
    return profile.parent / "history" / "CHANGES.md"


def setting_changes(old: Profile, new: Profile) -> list[str]:
    out = []
    for section, a, b in (("", old.settings, new.settings), ("env ", old.meta.env,
                                                               new.meta.env)):
        for k in sorted(set(a) | set(b)):
            if k == "model" or a.get(k) == b.get(k):
                continue
            out.append(f"{section}{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}")
    return out


def entry(profile: Path, kept: Path, old: Profile | None, new: Profile,
          conf: Confirmation | None, winner: str, replaced: str = INCUMBENT_NAME) -> str:
    """`replaced`: the confirmation arm that measured the replaced profile's settings (the
    baseline's, when the profile was vLLM's defaults)."""
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    lines = [f"## {when}: {profile.name}: {winner} replaced it", "",
             f"- replaced profile kept as `{kept.name}` (created "
             f"{old.meta.created if old else 'unknown'}, {old.meta.vllm_version if old else ''})"]
    if old is not None:
        changed = setting_changes(old, new)
        lines.append("- settings: " + ("; ".join(changed) if changed else "none changed"))
    comparison = None
    if conf is not None:
        comparison = next((c for c in conf.verdict.comparisons
                           if c.challenger == winner and c.reference == replaced), None)
    if comparison is not None and conf is not None:
        ratios: dict[str, Any] = comparison.goals or {conf.metric: comparison.ratio}
        for metric, r in ratios.items():
            lines.append(f"- {metric}: x{r.describe(3)} against the replaced profile, paired "
                         f"over {conf.rounds} interleaved rounds in the same run (95%)")
        lines.append(f"- decided on: x{comparison.decision_interval.describe(3)} "
                     f"({conf.verdict.level:.1%} interval, adjusted for the finalists and the "
                     "looks taken)")
        if comparison.on_failures:
            lines.append(f"- why: the replaced profile failed or broke a constraint in "
                         f"{comparison.reference_failed} of {comparison.look} rounds that "
                         f"{winner} served; {winner} failed none and is not worse beyond "
                         "noise")
        if conf.verdict.choice:
            lines.append(f"- chosen among several winners: {conf.verdict.choice}")
    elif conf is not None and conf.verdict.broken:
        lines.append(f"- {conf.verdict.broken} in this run's confirmation, so it was not "
                     "the reference: no ratio to it to state")
    else:
        lines.append("- not measured against the replaced profile in this run (it was "
                     "measured on other hardware, or could not be read): no ratio to state")
    for metric, est in new.meta.gain.items():
        lines.append(f"- {metric} vs vLLM's defaults: x{est.describe(3)}")
    return "\n".join(lines) + "\n\n"


def log_replacement(profile: Path, kept: Path, old: Profile | None, new: Profile,
                    conf: Confirmation | None, winner: str, replaced: str = INCUMBENT_NAME
                    ) -> Path:
    """Append the entry (the file is a log: appended, never rewritten)."""
    path = changes_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# Profile changes\n\nEach replacement, newest last. Ratios are paired "
                    "over interleaved rounds, each on a fresh server, in one run.\n\n")
        f.write(entry(profile, kept, old, new, conf, winner, replaced))
    return path
