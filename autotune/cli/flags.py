"""Flag values checked as the command line is parsed: a bad one is one line and exit 2, before
anything is created (no study database, no profile folder, no run folder)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from typing import Any

from autotune.core.errors import ConfigError
from autotune.study.storage import DEFAULT_URL, STORAGE_ENV

SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take 0 to 2**32 - 1

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
_STUDY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*$")


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '2h', '1h30m' -> seconds."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h)")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    total = h * 3600 + mi * 60 + s
    if total <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return total


def parse_devices(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2): GPU indices as NVML numbers them, each once."""
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of GPU indices: {text!r}") from None
    if not out or min(out) < 0 or len(set(out)) < len(out):
        raise argparse.ArgumentTypeError(f"not a list of GPU indices: {text!r} (e.g. 0 or "
                                         "0,1,2,3; each once, none negative)")
    return out


def parse_seed(text: str) -> int:
    """A sampler's seed: what numpy takes, refused here rather than mid-run."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{seed} is out of range (0 to 2**32 - 1)")
    return seed


def parse_study(text: str) -> str:
    """A study name: it names a run folder and a report folder, so no path in it."""
    if not _STUDY.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a study name (letters, digits and _ . + = @ -, not starting "
            "with . or -)")
    return text


def parse_launcher(text: str) -> str:
    """A launcher command line: it must split into words (quotes closed) and hold one."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError("empty: name the command that starts the server, "
                                         "e.g. 'vllm serve'")
    return text


def _blocked(path: Path) -> str | None:
    """Why a folder cannot be made at `path`: something on the way is a file, or cannot be
    entered. None when it is a folder or could be made one (nothing is made here; whether
    this user may write there is learnt when it is written, as one line too)."""
    for p in (path, *path.parents):
        try:
            if p.is_dir():
                return None
            if p.exists():
                return f"{p} is a file, not a folder"
        except OSError as exc:
            return f"{p}: {exc.strerror}"
    return None


def folder(text: str) -> Path:
    """A folder that is there or can be made (it is made when first written)."""
    path = Path(text)
    why = _blocked(path)
    if why is not None:
        raise argparse.ArgumentTypeError(why)
    return path


def output_file(text: str) -> str:
    """A file to write ('-': standard output): not a folder, in a folder that can be made."""
    if text == "-":
        return text
    path = Path(text)
    try:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc.strerror}") from None
    why = _blocked(path.parent)
    if why is not None:
        raise argparse.ArgumentTypeError(why)
    return text


def storage_url(text: str) -> str:
    """A storage a run may create: for SQLite, a file in a folder that is there (SQLite makes
    the file, not its folder). Other URLs are tried when the run opens them."""
    if not text.startswith("sqlite:///"):
        return text
    db = text.removeprefix("sqlite:///").split("?", 1)[0]
    if db and db != ":memory:" and not db.startswith("file:"):
        where = Path(db).parent
        try:
            there = where.is_dir()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text}: {where}: {exc.strerror}") from None
        if not there:
            raise argparse.ArgumentTypeError(f"{text}: no folder {where} for the database "
                                             "(SQLite makes the file, not its folder)")
    return text


def add_storage(p: argparse.ArgumentParser, reads: bool = False) -> None:
    """--storage, as every command takes it: the flag, else $AUTOTUNE_STORAGE, else the
    default. `reads`: the command only reads a study (never creates the database)."""
    p.add_argument("--storage", default=os.environ.get(STORAGE_ENV, DEFAULT_URL),
                   type=str if reads else storage_url,
                   help=f"Optuna storage URL (default ${STORAGE_ENV}, else {DEFAULT_URL})"
                   + ("; read only, never created" if reads else
                      "; workers on one study share it, e.g. "
                      "postgresql+psycopg://autotune@db/autotune with the password in "
                      "PGPASSWORD, never in the URL"))


# ------------------------------------------------------------- a file given as another kind

SPACE, WORKLOAD, PROFILE = "search space", "workload", "profile"
_AS = {SPACE: "--space", WORKLOAD: "--workload"}


def file_kind(path: Path) -> str | None:
    """What a YAML file is, from its text; None when it cannot be read (its loader says why)."""
    from autotune.core.config import parse_yaml, read_text
    from autotune.core.errors import UserError
    from autotune.measure.workload import Workload
    from autotune.profiles.profile import META_BEGIN

    try:
        text = read_text(path)
        data = parse_yaml(text, str(path))
    except UserError:
        return None
    if META_BEGIN in text:
        return PROFILE
    if not isinstance(data, dict) or not data:
        return None
    if "name" in data:
        return SPACE
    return WORKLOAD if set(data) <= set(Workload.model_fields) else None


def refuse_misfiled(path: Path | None, wanted: str) -> None:
    """ConfigError when the file given as `wanted` (search space or workload) is another kind:
    named as what it is, not by the first key the other kind lacks."""
    if path is None:
        return
    kind = file_kind(path)
    if kind is None or kind == wanted:
        return
    if kind == PROFILE:
        hint = "`autotune retune` re-tunes it, `autotune serve` starts it"
    else:
        hint = f"pass it as {_AS[kind]}"
    raise ConfigError(str(path), None, f"this is a {kind}, not a {wanted} ({_AS[wanted]}): "
                      f"{hint}")


def with_debug(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--debug on a parser: at the top it defaults to off, after a command it is left unset
    unless given (so it does not undo one given before the command)."""
    p.add_argument("--debug", action="store_true",
                   default=False if top else argparse.SUPPRESS,
                   help="show tracebacks and debug logs")



_DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize",
               "minimize": "minimize"}


def parse_objective(text: str) -> dict[str, Any]:
    """'a:max,b:min' -> {metric: a, direction: maximize, pareto: [{b, minimize}]}."""
    goals = []
    for part in (x.strip() for x in text.split(",")):
        metric, _, d = part.partition(":")
        if not metric or (d and d not in _DIRECTIONS):
            raise argparse.ArgumentTypeError(f"not METRIC[:max|min]: {part!r}")
        goals.append({"metric": metric,
                      "direction": _DIRECTIONS.get(d or "", _default_direction(metric))})
    first, *rest = goals
    return {**first, "pareto": rest}


def _default_direction(metric: str) -> str:
    """Throughputs up; latencies, errors and memory down."""
    return "maximize" if "throughput" in metric or "goodput" in metric else "minimize"


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in (x.strip() for x in text.split(",")):
        metric, eq, w = part.partition("=")
        try:
            out[metric] = float(w)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not METRIC=WEIGHT: {part!r}") from None
        if not eq or not metric:
            raise argparse.ArgumentTypeError(f"not METRIC=WEIGHT: {part!r}")
    return out


def objective_override(ns: argparse.Namespace) -> dict[str, Any] | None:
    out: dict[str, Any] = dict(ns.objective or {})
    if ns.weights:
        out.update(metric="weighted_score", direction="maximize", weights=ns.weights)
        out["pareto"] = out.get("pareto", [])
    if ns.choose:
        out["choose"] = ns.choose
    return out or None


__all__ = [
    "add_storage",
    "file_kind",
    "folder",
    "objective_override",
    "output_file",
    "parse_devices",
    "parse_duration",
    "parse_launcher",
    "parse_objective",
    "parse_seed",
    "parse_study",
    "parse_weights",
    "refuse_misfiled",
    "storage_url",
    "with_debug",
]
