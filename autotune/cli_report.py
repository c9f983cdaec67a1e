"""`autotune report`: a study (or the study behind a profile) as an HTML page and a Markdown
summary, written side by side; `--json` prints where they are and what they say."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autotune.errors import UserError
from autotune.records import atomic_write


def add_report_command(sub: Any) -> None:
    r = sub.add_parser("report", help="write a study's report: one self-contained HTML page "
                       "(plots, tables, failed trials' logs) and a Markdown summary")
    r.add_argument("profile", nargs="?", help="a profile: report the study that made it")
    r.add_argument("--study", help="the study's name (instead of a profile)")
    r.add_argument("--storage", default="sqlite:///autotune.db",
                   help="Optuna storage URL (default sqlite:///autotune.db)")
    r.add_argument("--runs-dir", type=Path, default=Path("autotune-runs"),
                   help="the run folders (samples, the confirmation round)")
    r.add_argument("--out", type=Path, help="folder for report.html and report.md "
                   "(default autotune-report/STUDY)")
    r.add_argument("--json", action="store_true", help="JSON on standard output")


def cmd_report(ns: argparse.Namespace) -> int:
    from autotune.profile import read_profile
    from autotune.report import gather, markdown
    from autotune.report_html import page

    if (ns.profile is None) == (ns.study is None):
        raise UserError("report: name a profile or --study, not both")
    profile = read_profile(Path(ns.profile)) if ns.profile else None
    study = profile.meta.study if profile is not None else ns.study
    data = gather(ns.storage, study, ns.runs_dir, profile)
    out = ns.out or Path("autotune-report") / study
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.html", page(data).encode())
    atomic_write(out / "report.md", markdown(data).encode())
    if ns.json:
        print(json.dumps({
            "study": study, "html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "verdict": data.verdict, "trials": len(data.trials), "failed": len(data.failed),
            "chosen_trial": data.chosen, "importances": data.importances,
        }, indent=2, sort_keys=True))
    else:
        print(f"report: {out / 'report.html'} (and {out / 'report.md'})")
    return 0


__all__ = ["add_report_command", "cmd_report"]
