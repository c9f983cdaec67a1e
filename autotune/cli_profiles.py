"""`autotune profiles list|show|diff`, `autotune serve` and `autotune check`: the profiles a
team keeps, on the terminal or (`--json`) for other tools."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any


def add_profile_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser, json_out: bool = True) -> None:
        p.add_argument("--profiles-dir", type=Path, default=Path("profiles"),
                       help="where profiles are kept (default profiles/)")
        if json_out:
            p.add_argument("--json", action="store_true", help="JSON on standard output")

    p = sub.add_parser("profiles", help="list, show or compare the profiles kept")
    ps = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    common(ps.add_parser("list", help="every profile under --profiles-dir"))
    show = ps.add_parser("show", help="one profile: figures, gain, settings, how to serve it")
    show.add_argument("profile", help="a path, or HARDWARE/MODEL under --profiles-dir")
    common(show)
    diff = ps.add_parser("diff", help="two profiles' settings and figures side by side")
    diff.add_argument("a")
    diff.add_argument("b")
    common(diff)

    s = sub.add_parser("serve", help="start vLLM with a profile (--print: only print the "
                       "command, environment included); vLLM options after --, e.g. "
                       "-- --port 8001")
    s.add_argument("profile")
    s.add_argument("--print", action="store_true", dest="print_only")
    s.add_argument("--launcher", help="command that starts the server, before its options "
                   "(default: as for run)")
    common(s, json_out=False)


def run_profile_command(ns: argparse.Namespace) -> int:
    if ns.command == "serve":
        return cmd_serve(ns)
    return {"list": cmd_list, "show": cmd_show, "diff": cmd_diff}[ns.action](ns)


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def cmd_list(ns: argparse.Namespace) -> int:
    from autotune.catalog import find_profiles, list_rows
    from autotune.tables import table

    entries = find_profiles(ns.profiles_dir)
    if ns.json:
        _dump([{"path": str(e.path), "problem": e.problem or None,
                "meta": e.profile.meta.model_dump(mode="json") if e.profile else None,
                "settings": e.profile.settings if e.profile else None} for e in entries])
        return 0
    if not entries:
        print(f"no profiles under {ns.profiles_dir}")
        return 0
    header, rows = list_rows(entries)
    print(table(rows, header))
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    from autotune.catalog import locate, show_text
    from autotune.profile import read_profile

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    if ns.json:
        _dump({"path": str(path), **prof.model_dump(mode="json")})
    else:
        print(show_text(path, prof))
    return 0


def cmd_diff(ns: argparse.Namespace) -> int:
    from autotune.catalog import diff_note, diff_rows, locate
    from autotune.profile import read_profile
    from autotune.tables import table

    pa, pb = locate(ns.a, ns.profiles_dir), locate(ns.b, ns.profiles_dir)
    a, b = read_profile(pa), read_profile(pb)
    header, rows = diff_rows(a, b)
    note = diff_note(a, b)
    if ns.json:
        _dump({"a": str(pa), "b": str(pb), "note": note,
               "rows": [{"differs": r[0] == "*", "what": r[1], "a": r[2], "b": r[3]}
                        for r in rows]})
        return 0
    print(f"A: {pa}\nB: {pb}\n")
    print(table(rows, header))
    print(f"\n{note}")
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    from autotune.catalog import locate, serve_command, serve_command_text
    from autotune.engine import default_launcher
    from autotune.profile import read_profile

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    launcher = tuple(shlex.split(ns.launcher)) if ns.launcher else default_launcher()
    extra = list(getattr(ns, "extra", []))  # what followed `--` on the command line
    argv, env = serve_command(path, prof, launcher)
    argv += extra
    if ns.print_only:
        print(serve_command_text(path, prof, (*launcher,)) + (
            " " + shlex.join(extra) if extra else ""))
        return 0
    print(f"autotune: {serve_command_text(path, prof, launcher)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, {**os.environ, **env})
    return 0  # not reached: exec replaces this process
