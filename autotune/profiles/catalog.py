"""The profiles a team keeps: find them, show one, set two side by side, serve one.

Pure where it can be: profiles in, rows and strings out. What is shown of a profile is its
latest confirmation (a later run that kept it records its own, `profile.latest`). Two
profiles' figures come from two runs (other days, maybe other machines), so `diff` sets them
side by side and says so; it never declares one better; only a confirmation round that
measures both does. A profile of the catalog shipped with autotune is found by its
`<hardware key>/<model>` name from any directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError
from autotune.core.stats import Estimate
from autotune.core.units import describe, figure, ratio
from autotune.profiles.arms import arms_text, chosen_arm
from autotune.profiles.card import card_text
from autotune.profiles.confirmed import describe_when
from autotune.profiles.identity import hardware_key, same_hardware
from autotune.profiles.profile import Profile, headline, latest, read_profile, written_when


@dataclass(frozen=True)
class Entry:
    path: Path
    profile: Profile | None
    problem: str = ""  # why it could not be read
    shipped: bool = False  # from the catalog shipped with autotune (shipped_root)


SHIPPED_DIR = "shipped_profiles"  # the catalog's folder in a wheel (pyproject's force-include)


def shipped_root(package: Path | None = None) -> Path | None:
    """The catalog of profiles this project measured itself: its copy inside an installed
    package (`autotune/shipped_profiles`), or `profiles/` beside the package in a source
    checkout. None when neither is there. `package`: the autotune package's folder."""
    here = package or Path(__file__).resolve().parents[1]
    for root in (here / SHIPPED_DIR, here.parent / "profiles"):
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


def _candidates(name: str | Path, root: Path) -> list[Path]:
    tried = [root / name]
    if not str(name).endswith((".yaml", ".yml")):
        tried.append(root / f"{name}.yaml")
    return tried


def locate(name: str | Path, root: Path) -> Path:
    """A profile named by its path, or by `<hardware key>/<model slug>` under `root`, else in
    the catalog shipped with autotune (so the names `profiles list` shows open anywhere)."""
    tried = [Path(name)]
    if not Path(name).is_absolute():
        tried += _candidates(name, root)
        shipped = shipped_root()
        if shipped is not None and shipped.resolve() != root.resolve():
            tried += _candidates(name, shipped)
    for p in tried:
        try:
            if p.is_file():
                return p
        except OSError as exc:  # a folder on the way that cannot be entered
            raise UserError(f"{p}: cannot read: {exc.strerror}") from None
    looked = f" (looked for {', '.join(map(str, tried))})" if len(tried) > 1 else ""
    raise UserError(f"{name}: no such profile{looked}; "
                    f"`autotune profiles list --profiles-dir {root}` lists them")


def display_name(e: Entry, root: Path) -> str:
    """The name `profiles list` shows: a shipped profile by `<key>/<model>` where that name
    finds it (not hidden by one of the user's own of that name), else its path."""
    if e.shipped:
        name = f"{e.path.parent.name}/{e.path.stem}"
        try:
            if locate(name, root).resolve() == e.path.resolve():
                return name
        except UserError:
            pass
    return str(e.path)


def primary(p: Profile) -> str:
    return str(p.meta.objective.get("metric", "output_throughput"))


def list_rows(entries: Sequence[Entry], root: Path = Path("profiles")
              ) -> tuple[list[str], list[list[str]]]:
    """One row a profile, its latest confirmation's figures (`root`: --profiles-dir, against
    which shipped profiles' names are checked)."""
    header = ["profile", "model", "objective (95%)", "vs vLLM defaults", "measured", "vLLM"]
    rows = []
    for e in entries:
        if e.profile is None:
            rows.append([str(e.path), "?", f"unreadable: {e.problem}", "", "", ""])
            continue
        m = e.profile.meta
        last = latest(m)
        metric = primary(e.profile)
        gain = last.gain.get(metric)
        when = describe_when(last.date, last.source, last.rounds).split(" (")[0]
        if last.breaks is not None and last.breaks.missed:
            when += f"; missed {last.breaks.missed} of {last.breaks.rounds} rounds"
        rows.append([display_name(e, root), m.model,
                     f"{metric} {figure(metric, last.metrics.get(metric))}",
                     ratio(gain) if gain else "defaults kept", when, last.vllm_version])
    return header, rows


def show_text(path: Path, p: Profile) -> str:
    m = p.meta
    hw = m.hardware
    last = latest(m)
    which = "vLLM's defaults" if m.trial is None else f"trial {m.trial}"
    lines = [*headline(m), "",
             f"measured on: {hw.get('key', m.target)} ({hw.get('cpu')}, "
             f"{hw.get('cpu_count')} cores"
             + "".join(f", GPU {g['index']}: {g['name']}" for g in hw.get("gpus") or [])
             + f"), {last.vllm_version}, model revision {m.model_revision}",
             f"study: {last.study}, {which}, "
             f"space {m.space}, autotune {m.autotune_version}, created {m.created}", ""]
    if last.source == "search":
        lines.append("figures (the search's: one server start, not confirmed side by side; "
                     "95% intervals over its rounds):")
    else:
        lines.append(f"figures ({describe_when(last.date, last.source, last.rounds)}; 95% "
                     "intervals over the rounds):")
    shown = key_metrics(p, last.metrics)
    lines += [f"  {k}: {describe(k, last.metrics[k])}" for k in shown]
    if len(last.metrics) > len(shown):
        lines.append(f"  ({len(last.metrics) - len(shown)} more figures with --json)")
    if last.gain:
        lines += ["", "vs vLLM's defaults (paired ratio, same run and machine):"]
        lines += [f"  {k}: x{v.describe(3)}" for k, v in last.gain.items()]
    if m.card is not None:
        lines += ["", "baseline card (autotune check PROFILE --card measures it again):"]
        lines += [f"  {line}" for line in card_text(m.card)]
    else:
        lines += ["", "no baseline card yet: autotune check PROFILE --card measures one"]
    chosen = m.reconfirmed[-1].arm if m.reconfirmed else chosen_arm(last.confirmation, m.trial)
    arms = arms_text(last.confirmation, primary(p), chosen)
    if arms:
        lines += ["", *arms]
    if m.reconfirmed:
        lines += ["", "every confirmation of these settings, oldest first:",
                  f"  {written_when(m)}: {primary(p)} "
                  f"{figure(primary(p), m.metrics.get(primary(p)))} (written)"]
        lines += [f"  {describe_when(c.date, c.source, c.rounds)}: {primary(p)} "
                  f"{figure(primary(p), c.metrics.get(primary(p)))} (kept)"
                  for c in m.reconfirmed]
    lines += ["", "settings (vLLM's --config):"]
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


def key_metrics(p: Profile, metrics: dict[str, Estimate] | None = None) -> list[str]:
    """The figures shown of `metrics` (default: the latest confirmation's)."""
    have = latest(p.meta).metrics if metrics is None else metrics
    names = [primary(p), *KEY_METRICS]
    return [k for i, k in enumerate(names) if k in have and k not in names[:i]]


@dataclass(frozen=True)
class DiffRow:
    what: str
    a: Any  # a setting's value, an Estimate (None: not measured) or provenance text
    b: Any

    @property
    def differs(self) -> bool:
        return _text(self.what, self.a) != _text(self.what, self.b)


FIGURE = "measured "  # the prefix of a figure's row


def _text(what: str, x: Any) -> str:
    if what.startswith(FIGURE):
        return figure(what.removeprefix(FIGURE), x)
    return str(x)


def diff_records(a: Profile, b: Profile) -> list[DiffRow]:
    """Settings, environment, the latest figures and provenance of two profiles, as values."""
    rows: list[DiffRow] = []

    def add(section: str, left: dict[str, Any], right: dict[str, Any]) -> None:
        for k in sorted(set(left) | set(right), key=lambda x: (x not in left, x)):
            rows.append(DiffRow(f"{section}{k}", left.get(k, _UNSET), right.get(k, _UNSET)))

    add("", a.settings, b.settings)
    add("env ", a.meta.env, b.meta.env)
    la, lb = latest(a.meta).metrics, latest(b.meta).metrics
    metrics = key_metrics(a) + [k for k in key_metrics(b) if k not in key_metrics(a)]
    rows += [DiffRow(f"{FIGURE}{k}", la.get(k), lb.get(k)) for k in metrics]
    rows += [DiffRow(k, x, y) for k, x, y in provenance(a, b)]
    return rows


def diff_rows(a: Profile, b: Profile) -> tuple[list[str], list[list[str]]]:
    """`diff_records` as text; `*` marks what differs."""
    return ["", "", "A", "B"], [["*" if r.differs else "", r.what, _text(r.what, r.a),
                                 _text(r.what, r.b)] for r in diff_records(a, b)]


def _json(x: Any) -> Any:
    if isinstance(x, Estimate):
        return {"value": x.value, "low": x.low, "high": x.high, "n": x.n, "basis": x.basis}
    return None if x == _UNSET else x


def diff_json(a: Profile, b: Profile) -> list[dict[str, Any]]:
    """`diff_records` for other tools: figures as numbers (value, low, high, n), settings as
    their values, null where one side has none."""
    return [{"differs": r.differs, "what": r.what, "a": _json(r.a), "b": _json(r.b)}
            for r in diff_records(a, b)]


def provenance(a: Profile, b: Profile) -> list[tuple[str, str, str]]:
    def of(p: Profile) -> dict[str, str]:
        m, last = p.meta, latest(p.meta)
        return {"hardware": str(m.hardware.get("key", m.target)), "vLLM": last.vllm_version,
                "model revision": m.model_revision, "study": last.study,
                "measured": describe_when(last.date, last.source, last.rounds),
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
    la, lb = latest(a.meta), latest(b.meta)
    if la.study == lb.study and la.confirmation and la.confirmation == lb.confirmation:
        return "measured in the same confirmation round"
    return ("measured in different runs: figures side by side, not a comparison (machines "
            "drift between runs); to compare the settings, measure them in one confirmation "
            "round: make one the current profile and `autotune retune`")


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def argv_options(argv: Sequence[str]) -> dict[str, list[Any]]:
    """vLLM options given on the command line (`--name value`, `--name=value`, `--switch`,
    `--name v1 v2`) as the option names and values vLLM's parser is asked about, as for a
    file's. A word that follows no option is asked about under its own text, so the parser
    names it; a short option (`-tp 2`) and its values are left to vLLM."""
    out: dict[str, list[Any]] = {}
    name: str | None = None
    short = False
    for word in argv:
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            out[name] = [value] if eq else [True]
            name, short = (None if eq else name), False
        elif word.startswith("-") and len(word) > 1 and not _number(word):
            name, short = None, True
        elif name is not None:
            got = out[name][0]
            out[name] = [word] if got is True else [[*(got if isinstance(got, list) else
                                                       [got]), word]]
        elif not short:
            out[word] = [True]  # not an option: vLLM's parser finds no such name
    return out


def local_model(p: Profile) -> str | None:
    """A built-in model's folder on this machine where the profile names another machine's
    (the shipped catalog's profiles were written elsewhere): made here if need be; None when
    the profile's own `model` serves as it is."""
    from autotune.model.builtin import (
        BUILTIN_PREFIX,
        builtin_model_dir,
        ensure_builtin_model,
        is_builtin,
    )

    if not is_builtin(p.meta.model):
        return None
    name = p.meta.model[len(BUILTIN_PREFIX):]
    named = Path(str(p.settings.get("model", "")))
    # the same built-in model's folder, in another machine's cache
    if named.is_dir() or named.name != builtin_model_dir(name).name:
        return None
    return str(ensure_builtin_model(name))


def serve_command(path: Path, p: Profile, launcher: tuple[str, ...]
                  ) -> tuple[list[str], dict[str, str]]:
    """The command that starts vLLM with this profile, and the environment it adds (a
    built-in model made on another machine is served from this one's: `--model`, which
    vLLM takes over the file's)."""
    here = local_model(p)
    return ([*launcher, "--config", str(path), *(["--model", here] if here else [])],
            dict(p.meta.env))


def serve_command_text(path: Path, p: Profile, launcher: tuple[str, ...] | None = None
                       ) -> str:
    if launcher is None:
        return p.deploy_command(path)
    argv, env = serve_command(path, p, launcher)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"{prefix} {shlex.join(argv)}".strip()
