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

from autotune.cli.flags import folder, parse_devices, parse_duration, parse_launcher


def add_profile_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser, json_out: bool = True) -> None:
        p.add_argument("--profiles-dir", type=Path, default=DEFAULT_DIR,
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
    diff.add_argument("a", help="a profile: a path, or HARDWARE/MODEL")
    diff.add_argument("b", help="the profile to set beside it")
    common(diff)

    s = sub.add_parser("serve", help="start vLLM with a profile (--print: only print the "
                       "command, environment included); vLLM options after --, e.g. "
                       "-- --port 8001")
    s.add_argument("profile", help="a path, or HARDWARE/MODEL under --profiles-dir")
    s.add_argument("--print", action="store_true", dest="print_only",
                   help="only print the command and its environment; start nothing")
    s.add_argument("--launcher", type=parse_launcher, help="command that starts the server, "
                   "before its options (default: as for run)")
    s.add_argument("--no-verify-options", action="store_true",
                   help="skip checking the profile's options against vLLM's own parser")
    common(s, json_out=False)

    c = sub.add_parser("check", help="start a profile, hold its load for --soak, report "
                       "latency drift and memory growth against its thresholds (exit 3 "
                       "when one breaks)")
    c.add_argument("profile", help="a path, or HARDWARE/MODEL under --profiles-dir")
    c.add_argument("--soak", type=parse_duration, default=300.0,
                   help="how long to hold the load, e.g. 30m (default 5m)")
    c.add_argument("--window", type=parse_duration, help="length of one window of figures "
                   "(default: a twentieth of --soak, 5 s to 1 min)")
    c.add_argument("--launcher", type=parse_launcher,
                   help="command that starts the server (default: as for run)")
    c.add_argument("--runs-dir", type=folder, default=Path("autotune-runs"),
                   help="where the server log goes")
    c.add_argument("--devices", type=parse_devices, default=(),
                   help="GPU indices whose memory NVML reads for the server, e.g. 0,1")
    c.add_argument("--card", action="store_true",
                   help="measure the profile's baseline card (P99 of one request at a time, "
                   "memory, capacity at the SLO, memory growth over --soak): recorded in a "
                   "profile without one, else compared with the recorded one (exit 3 on a "
                   "line worse beyond noise)")
    c.add_argument("--slo", nargs="+", metavar="METRIC=BOUND",
                   help="with --card: the capacity's SLO (default: the recorded card's, else "
                   "the workload's latency bounds, else p95_e2el_ms=1500)")
    c.add_argument("--record", action="store_true",
                   help="with --card: record the new card in place of the profile's own")
    common(c)


def run_profile_command(ns: argparse.Namespace) -> int:
    if ns.command == "serve":
        return cmd_serve(ns)
    if ns.command == "check":
        return cmd_card(ns) if ns.card else cmd_check(ns)
    return {"list": cmd_list, "show": cmd_show, "diff": cmd_diff}[ns.action](ns)


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


DEFAULT_DIR = Path("profiles")
SHIPPED_NOTE = ("shipped with autotune, measured on the project's machines (`profiles show` "
                "names each): on yours a first candidate, not a verdict (a run measures it "
                "again side by side)")


def cmd_list(ns: argparse.Namespace) -> int:
    from autotune.profiles.catalog import display_name, find_profiles, list_rows, shipped_root
    from autotune.report.tables import table

    shipped = shipped_root()
    fresh = ns.profiles_dir == DEFAULT_DIR and not ns.profiles_dir.exists()
    if fresh and shipped is not None:
        where, entries = DEFAULT_DIR, []  # no run wrote one yet: the catalog is still listed
    else:
        where = profiles_root(ns.profiles_dir)
        entries = find_profiles(where)
    if shipped is not None and shipped.resolve() == where.resolve():
        shipped = None  # run from the project's checkout: its catalog is this folder
    extra = find_profiles(shipped, shipped=True) if shipped is not None else []
    if ns.json:
        _dump([{"path": str(e.path), "name": display_name(e, ns.profiles_dir),
                "shipped": e.shipped, "problem": e.problem or None,
                "meta": e.profile.meta.model_dump(mode="json") if e.profile else None,
                "settings": e.profile.settings if e.profile else None}
               for e in [*entries, *extra]])
        return 0
    if entries:
        header, rows = list_rows(entries, ns.profiles_dir)
        print(table(rows, header))
    else:
        print(f"no profiles under {ns.profiles_dir}" + (" yet" if fresh else ""))
    if extra:
        header, rows = list_rows(extra, ns.profiles_dir)
        print(f"\n{SHIPPED_NOTE}:\n{table(rows, header)}")
    return 0


def profiles_root(root: Path) -> Path:
    """--profiles-dir as a folder to list; UserError (one line) when it is none."""
    from autotune.core.errors import UserError

    try:
        if root.is_dir():
            return root
        why = "is a file, not a folder" if root.exists() else "no such folder"
    except OSError as exc:
        why = str(exc.strerror)
    raise UserError(f"--profiles-dir {root}: {why} (`autotune run` writes profiles under "
                    "profiles/ unless told otherwise)")


def cmd_show(ns: argparse.Namespace) -> int:
    from autotune.profiles.catalog import locate, show_text
    from autotune.profiles.profile import read_profile

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    if ns.json:
        _dump({"path": str(path), **prof.model_dump(mode="json")})
    else:
        print(show_text(path, prof))
    return 0


def cmd_diff(ns: argparse.Namespace) -> int:
    from autotune.profiles.catalog import diff_json, diff_note, diff_rows, locate
    from autotune.profiles.profile import read_profile
    from autotune.report.tables import table

    pa, pb = locate(ns.a, ns.profiles_dir), locate(ns.b, ns.profiles_dir)
    a, b = read_profile(pa), read_profile(pb)
    header, rows = diff_rows(a, b)
    note = diff_note(a, b)
    if ns.json:
        _dump({"a": str(pa), "b": str(pb), "note": note, "rows": diff_json(a, b)})
        return 0
    print(f"A: {pa}\nB: {pb}\n")
    print(table(rows, header))
    print(f"\n{note}")
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    from autotune.engine.argv import default_launcher
    from autotune.profiles.catalog import locate, serve_command, serve_command_text
    from autotune.profiles.profile import read_profile

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    extra = list(getattr(ns, "extra", []))  # what followed `--` on the command line
    if not ns.no_verify_options:  # as `validate` does: a misspelt key stops here, not in vLLM
        from autotune.app.validate import profile_options
        from autotune.engine.vllm_args import option_errors
        from autotune.profiles.catalog import argv_options

        sets = [(profile_options(prof), str(path), "")]
        if extra:  # checked with the profile's: one question to vLLM's parser
            sets.append((argv_options(extra), "vLLM options after --", "--"))
        errors = option_errors(sets)
        for error in errors:
            if error is not None:
                raise error
    launcher = tuple(shlex.split(ns.launcher)) if ns.launcher else default_launcher()
    argv, env = serve_command(path, prof, launcher)
    argv += extra
    if ns.print_only:
        print(serve_command_text(path, prof, (*launcher,)) + (
            " " + shlex.join(extra) if extra else ""))
        return 0
    print(f"autotune: {serve_command_text(path, prof, launcher)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, {**os.environ, **env})
    return 0  # not reached: exec replaces this process


CHECK_BROKEN = 3  # the profile broke one of its thresholds


def cmd_card(ns: argparse.Namespace) -> int:
    """`check --card`: measure the card; record it where the profile has none (or with
    --record), else compare it line by line with the recorded one."""
    import datetime as dt

    from autotune.app.card import CardRun, measure_card
    from autotune.engine.argv import default_launcher
    from autotune.engine.probes import SystemProbe
    from autotune.fleet.plan import parse_slo
    from autotune.profiles.card import CardSpec, card_text, regressions
    from autotune.profiles.catalog import locate
    from autotune.profiles.profile import read_profile, record_card

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    old = prof.meta.card
    # the recorded card's thresholds (edited in the profile's metadata, or the defaults it
    # was judged by) and its SLO, unless --slo says otherwise
    given: dict[str, Any] = {"soak_s": ns.soak}
    if old is not None:
        given["thresholds"] = {k: cl.threshold for k, cl in old.lines.items()
                               if cl.threshold is not None}
        if old.capacity is not None:
            given.update(slo=old.capacity.slo, over=old.capacity.over)
    if ns.slo:
        given["slo"] = parse_slo(ns.slo)
    spec = CardSpec.model_validate(given)
    launcher = tuple(shlex.split(ns.launcher)) if ns.launcher else default_launcher()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log = ns.runs_dir / "card" / f"{path.stem}.{stamp}" / "server.log"
    out = sys.stderr if ns.json else sys.stdout
    print(f"measuring the card of {path} on one fresh server (log: {log})", file=out,
          flush=True)
    card = measure_card(path, prof, CardRun(spec, launcher, SystemProbe(), log, ns.devices,
                                            on_note=lambda line: print(
                                                f"  {line}", file=out, flush=True)))
    worse = [] if old is None else regressions(old, card)
    recorded = old is None or ns.record
    if recorded:
        record_card(path, card)
    if ns.json:
        _dump({"profile": str(path), "card": card.model_dump(mode="json"),
               "recorded": recorded, "regressions": worse, "ok": not worse})
    else:
        print("\n".join(card_text(card)))
        print(f"recorded in {path}" if recorded else "compared with the recorded card "
              f"(measured {old.measured[:10] if old else '-'}): " + (
                  "; ".join(worse) if worse else "no line worse beyond noise"))
    return CHECK_BROKEN if worse else 0


def cmd_check(ns: argparse.Namespace) -> int:
    import datetime as dt

    from autotune.core.errors import UserError

    if ns.slo or ns.record:
        raise UserError(f"{'--slo' if ns.slo else '--record'}: only with --card")

    from autotune.engine.argv import default_launcher
    from autotune.engine.probes import SystemProbe
    from autotune.profiles.catalog import locate
    from autotune.profiles.profile import read_profile
    from autotune.profiles.soak import MIN_WINDOWS, Window, analyse, soak, went_on

    path = locate(ns.profile, ns.profiles_dir)
    prof = read_profile(path)
    launcher = tuple(shlex.split(ns.launcher)) if ns.launcher else default_launcher()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log = ns.runs_dir / "check" / f"{path.stem}.{stamp}" / "server.log"
    out = sys.stderr if ns.json else sys.stdout
    print(f"checking {path}: its workload, back to back, for {ns.soak:.0f} s on one server "
          f"(log: {log})", file=out, flush=True)

    def on_window(w: Window) -> None:
        print(f"  t={w.t_s:6.0f} s: p99 e2el {w.p99_e2el_ms:.1f} ms, p99 ttft "
              f"{w.p99_ttft_ms:.1f} ms, {w.output_throughput:.1f} tok/s, "
              f"{w.request_goodput:.2f} req/s within the SLO, memory "
              f"{w.memory_bytes / 2**20:.0f} MiB" + (f", {w.errors} failed" if w.errors
                                                      else ""), file=out, flush=True)

    windows = soak(path, prof, ns.soak, launcher, SystemProbe(), log, gpu_indices=ns.devices,
                   on_window=on_window, window_s=ns.window)
    report = analyse(windows, prof)
    if went_on(windows, ns.soak):
        print(f"ran {windows[-1].t_s:.0f} s, past the {ns.soak:.0f} s asked, to reach the "
              f"{MIN_WINDOWS} windows every judgement needs", file=out, flush=True)
    if ns.json:
        _dump({"profile": str(path), **report.summary()})
    else:
        print(soak_text(report))
    return CHECK_BROKEN if report.breaches else 0


def soak_text(report: Any) -> str:
    from autotune.report.tables import est

    def fig(e: Any, digits: int = 4) -> str:
        return "- (too few windows)" if e is None else e.describe(digits)

    lines = [f"\n{len(report.windows)} windows; intervals 95%, over windows",
             f"latency drift (P99 e2e, last third / first third): x{fig(report.latency_drift, 3)}",
             f"memory growth: {fig(report.memory_growth_mib_per_h, 3)} MiB per hour"]
    for k, now in report.figures.items():
        rec = report.recorded.get(k)
        lines.append(f"{k}: {est(now)}" + (f"  (recorded when confirmed: {est(rec)}; another "
                                            "run, so only loose thresholds apply)" if rec
                                           else ""))
    if report.breaches:
        lines += ["", "BROKEN:"] + [f"  {b}" for b in report.breaches]
    else:
        lines.append("\nwithin every threshold of the profile")
    return "\n".join(lines)
