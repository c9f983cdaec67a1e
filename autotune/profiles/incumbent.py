"""The profile already at the run's path: whether its settings can be re-measured here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError
from autotune.profiles.identity import hardware_key, same_hardware
from autotune.profiles.profile import Profile, read_profile
from autotune.space.params import TrialParams


@dataclass(frozen=True)
class Incumbent:
    path: Path
    profile: Profile | None
    params: TrialParams | None  # its settings as a candidate (None: unreadable)
    comparable: bool  # measured on this hardware: its settings join the confirmation round
    why: str = ""  # why not comparable


def find_incumbent(path: Path, hardware: dict[str, Any], model_args: dict[str, Any]
                   ) -> Incumbent | None:
    if not path.exists():
        return None
    try:
        prof = read_profile(path)
    except (UserError, OSError, UnicodeDecodeError) as exc:
        return Incumbent(path, None, None, False, f"it cannot be read ({exc})")
    if not same_hardware(prof.meta.hardware, hardware):
        old, new = hardware_key(prof.meta.hardware), hardware_key(hardware)
        differs = [k for k in new if old.get(k) != new.get(k)]
        return Incumbent(path, prof, None, False, "it was measured on other hardware ("
                         + ", ".join(f"{k}: {old.get(k)} here {new.get(k)}" for k in differs)
                         + "), so its figures say nothing about this machine")
    args = {k: v for k, v in prof.settings.items()
            if k != "model" and not (k in model_args and model_args[k] == v)}
    return Incumbent(path, prof, TrialParams(args=args, env=dict(prof.meta.env)), True)
