"""The profiles a team keeps: find them, show one, set two side by side, serve one.

Pure where it can be: profiles in, rows and strings out. Two profiles' figures come from two
runs (other days, maybe other machines), so `diff` sets them side by side and says so; it
never declares one better; only a confirmation round that measures both does.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError
from autotune.core.units import describe, figure, ratio
from autotune.profiles.identity import hardware_key, same_hardware
from autotune.profiles.profile import Profile, headline, read_profile


@dataclass(frozen=True)
class Entry:
    path: Path
    profile: Profile | None
    problem: str = ""  # why it could not be read
    shipped: bool = False  # from the catalog shipped with autotune (shipped_root)


def shipped_root() -> Path | None:
    """The catalog of profiles this project measured itself: `profiles/` beside the package in
    a source checkout, or its copy inside an installed package (pyproject's force-include).
    None when neither is there."""
    here = Path(__file__).resolve().parents[1]  # the autotune package
    for root in (here / "shipped_profiles", here.parent / "profiles"):
        if root.is_dir():
            return root
    return None


def find_profiles(root: Path, shipped: bool = False) -> list[Entry]:
    """Every profile under `root` (`<hardware key>/<model>.yaml`), history left out;
    `shipped`: `root` is the catalog shipped with autotune."""
    out = []
    for path in sorted(root.glob("*/*.yaml")):
        try:
            out.append(Entry(path, read_profile(path), shipped=shipped))
        except (UserError, OSError, UnicodeDecodeError) as exc:
            out.append(Entry(path, None, str(exc), shipped=shipped))
    return out


def locate(name: str | Path, root: Path) -> Path:
    """A profile named by its path, or by `<hardware key>/<model slug>` under `root`."""
    tried = [Path(name)]
    if not Path(name).is_absolute():
        tried.append(root / name)
        if not str(name).endswith((".yaml", ".yml")):
            tried.append(root / f"{name}.yaml")
    for p in tried:
        try:
            if p.is_file():
                return p
        except OSError as exc:  # a folder on the way that cannot be entered
            raise UserError(f"{p}: cannot read: {exc.strerror}") from None
    looked = f" (looked for {', '.join(map(str, tried))})" if len(tried) > 1 else ""
    raise UserError(f"{name}: no such profile{looked}; "
                    f"`autotune profiles list --profiles-dir {root}` lists them")


def primary(p: Profile) -> str:
    return str(p.meta.objective.get("metric", "output_throughput"))


def list_rows(entries: Sequence[Entry]) -> tuple[list[str], list[list[str]]]:
    header = ["profile", "model", "objective (confirmation, 95%)", "vs vLLM defaults",
              "vLLM", "created"]
    rows = []
    for e in entries:
        if e.profile is None:
            rows.append([str(e.path), "?", f"unreadable: {e.problem}", "", "", ""])
            continue
        m = e.profile.meta
        metric = primary(e.profile)
        gain = m.gain.get(metric)
        rows.append([str(e.path), m.model, f"{metric} {figure(metric, m.metrics.get(metric))}",
                     ratio(gain) if gain else "defaults kept", m.vllm_version,
                     m.created[:16]])
    return header, rows


def show_text(path: Path, p: Profile) -> str:
    m = p.meta
    hw = m.hardware
    lines = [*headline(m), "",
             f"measured on: {hw.get('key', m.target)} ({hw.get('cpu')}, "
             f"{hw.get('cpu_count')} cores"
             + "".join(f", GPU {g['index']}: {g['name']}" for g in hw.get("gpus") or [])
             + f"), {m.vllm_version}, model revision {m.model_revision}",
             f"study: {m.study}, trial {'vLLM defaults' if m.trial is None else m.trial}, "
             f"space {m.space}, autotune {m.autotune_version}, created {m.created}",
             "", "figures (confirmation round, 95% intervals):"]
    shown = key_metrics(p)
    lines += [f"  {k}: {describe(k, m.metrics[k])}" for k in shown]
    if len(m.metrics) > len(shown):
        lines.append(f"  ({len(m.metrics) - len(shown)} more figures with --json)")
    if m.gain:
        lines += ["", "vs vLLM's defaults (paired ratio, same run and machine):"]
        lines += [f"  {k}: x{v.describe(3)}" for k, v in m.gain.items()]
    lines += ["", "settings (vllm serve --config):"]
    lines += [f"  {k}: {v}" for k, v in p.settings.items()]
    if m.env:
        lines += ["environment:"] + [f"  {k}={v}" for k, v in sorted(m.env.items())]
    lines += ["", f"serve: {serve_command_text(path, p)}"]
    return "\n".join(lines)


_UNSET = "(unset)"
# the figures users track, in this order (the objective's own first; the rest with --json)
KEY_METRICS = ("output_throughput", "request_throughput", "capacity", "p95_ttft_ms",
               "p99_ttft_ms", "median_tpot_ms", "p99_e2el_ms", "peak_memory_bytes",
               "error_rate")


def key_metrics(p: Profile) -> list[str]:
    names = [primary(p), *KEY_METRICS]
    return [k for i, k in enumerate(names) if k in p.meta.metrics and k not in names[:i]]


def diff_rows(a: Profile, b: Profile) -> tuple[list[str], list[list[str]]]:
    """Settings, environment, figures and provenance of two profiles side by side; `*` marks
    what differs."""
    rows: list[list[str]] = []

    def add(section: str, left: dict[str, Any], right: dict[str, Any]) -> None:
        for k in sorted(set(left) | set(right), key=lambda x: (x not in left, x)):
            x, y = left.get(k, _UNSET), right.get(k, _UNSET)
            rows.append(["*" if x != y else "", f"{section}{k}", str(x), str(y)])

    add("", a.settings, b.settings)
    add("env ", a.meta.env, b.meta.env)
    metrics = key_metrics(a) + [k for k in key_metrics(b) if k not in key_metrics(a)]
    for k in metrics:
        x, y = figure(k, a.meta.metrics.get(k)), figure(k, b.meta.metrics.get(k))
        rows.append(["*" if x != y else "", f"measured {k}", x, y])
    for k, x, y in provenance(a, b):
        rows.append(["*" if x != y else "", k, x, y])
    return ["", "", "A", "B"], rows


def provenance(a: Profile, b: Profile) -> list[tuple[str, str, str]]:
    def of(p: Profile) -> dict[str, str]:
        m = p.meta
        return {"hardware": str(m.hardware.get("key", m.target)), "vLLM": m.vllm_version,
                "model revision": m.model_revision, "study": m.study,
                "created": m.created[:19]}
    left, right = of(a), of(b)
    return [(k, left[k], right[k]) for k in left]


def diff_note(a: Profile, b: Profile) -> str:
    """What the figures side by side can and cannot say."""
    if not same_hardware(a.meta.hardware, b.meta.hardware):
        old, new = hardware_key(a.meta.hardware), hardware_key(b.meta.hardware)
        what = ", ".join(k for k in new if old.get(k) != new.get(k))
        return (f"measured on other hardware ({what} differ): the figures describe two "
                "machines, not two settings")
    if a.meta.study == b.meta.study and a.meta.confirmation == b.meta.confirmation:
        return "measured in the same confirmation round"
    return ("measured in different runs: figures side by side, not a comparison (machines "
            "drift between runs); to compare the settings, measure them in one confirmation "
            "round: make one the current profile and `autotune retune`")


def serve_command(path: Path, p: Profile, launcher: tuple[str, ...]
                  ) -> tuple[list[str], dict[str, str]]:
    """The command that starts vLLM with this profile, and the environment it adds."""
    return [*launcher, "--config", str(path)], dict(p.meta.env)


def serve_command_text(path: Path, p: Profile, launcher: tuple[str, ...] | None = None
                       ) -> str:
    if launcher is None:
        return p.deploy_command(path)
    argv, env = serve_command(path, p, launcher)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"{prefix} {shlex.join(argv)}".strip()
