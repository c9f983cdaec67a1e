"""`autotune report`: a study (or the study behind a profile) as an HTML page and a Markdown
summary, written side by side; `--json` prints where they are and what they say."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.cli.flags import add_storage, folder, parse_study
from autotune.core.errors import UserError
from autotune.measure.records import atomic_write

if TYPE_CHECKING:
    from autotune.report.gather import ReportData


def add_report_command(sub: Any) -> None:
    r = sub.add_parser("report", help="write a study's report: one self-contained HTML page "
                       "(plots, tables, failed trials' logs) and a Markdown summary")
    r.add_argument("profile", nargs="?", help="a profile: report the study that made it")
    r.add_argument("--study", type=parse_study, help="the study's name (instead of a profile)")
    add_storage(r, reads=True)
    r.add_argument("--runs-dir", type=Path, default=Path("autotune-runs"),
                   help="the run folders (samples, the confirmation round)")
    r.add_argument("--out", type=folder, help="folder for report.html and report.md "
                   "(default autotune-report/STUDY)")
    r.add_argument("--json", action="store_true", help="JSON on standard output")


def cmd_report(ns: argparse.Namespace) -> int:
    from autotune.profiles.profile import read_profile
    from autotune.report.gather import gather, markdown
    from autotune.report.html import page
    from autotune.report.sources import confirmed_in_storage, missing_note, missing_sources
    from autotune.study.storage import load_existing

    if ns.profile is None and ns.study is None:
        raise UserError("report: name a profile (autotune report PROFILE) or a study "
                        "(autotune report --study NAME)")
    if ns.profile is not None and ns.study is not None:
        raise UserError("report: name a profile or --study, not both")
    profile = read_profile(Path(ns.profile)) if ns.profile else None
    study = profile.meta.study if profile is not None else ns.study
    found = load_existing(ns.storage, study)  # read-only: a missing one is not created
    data = gather(found._storage, study, ns.runs_dir, profile, ns.profile)
    missing = missing_sources(found, ns.runs_dir, [data.chosen, baseline_of(data)],
                              confirmed_in_storage(found))
    data.verdict = missing_note(missing, data.verdict, data.confirmation is not None,
                                profile is not None)
    out = ns.out or Path("autotune-report") / study
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.html", page(data).encode())
    atomic_write(out / "report.md", markdown(data).encode())
    if ns.json:
        print(json.dumps({
            "study": study, "html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "verdict": data.verdict, "trials": len(data.trials), "failed": len(data.failed),
            "chosen_trial": data.chosen, "importances": data.importances,
            "missing": [str(p) for p in missing],
        }, indent=2, sort_keys=True))
    else:
        print(f"report: {out / 'report.html'} (and {out / 'report.md'})")
    if missing:
        print(f"autotune: report: could not find {', '.join(map(str, missing))}",
              file=sys.stderr)
    return 0


def baseline_of(data: ReportData) -> int | None:
    """The measured trial of vLLM's defaults in a report's rows."""
    return next((t.number for t in data.trials if t.baseline and t.status == "ok"), None)


__all__ = ["add_report_command", "cmd_report"]
