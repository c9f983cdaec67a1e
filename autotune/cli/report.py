"""`autotune report`: a study (or the study behind a profile) as an HTML page and a Markdown
summary, written side by side; `--json` prints where they are and what they say."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.cli.flags import add_storage, folder, parse_study
from autotune.core.errors import UserError
from autotune.measure.records import atomic_write

if TYPE_CHECKING:
    import optuna

    from autotune.app.schema import ReportDoc
    from autotune.report.gather import ReportData

RUN_FAILED = 1


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
    # a verdict the storage says was reached, with its record nowhere (a study from before
    # records were kept in it, copied without its run folder): the report cannot state it
    lost = (profile is None and data.confirmation is None and confirmed_in_storage(found))
    missing = missing_sources(found, ns.runs_dir, [data.chosen, baseline_of(data)], lost)
    data.verdict = missing_note(missing, data.verdict, data.confirmation is not None,
                                profile is not None)
    out = ns.out or Path("autotune-report") / study
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.html", page(data).encode())
    atomic_write(out / "report.md", markdown(data).encode())
    if ns.json:
        print(report_doc(data, found, out, missing).model_dump_json(indent=2))
    else:
        print(f"report: {out / 'report.html'} (and {out / 'report.md'})")
    if lost:
        print(f"autotune: report: the study's confirmation round finished, but its record is "
              f"in neither the study's storage nor {ns.runs_dir / study / 'confirm'}: no "
              "verdict to report (--runs-dir names the folder the run wrote it under)",
              file=sys.stderr)
        return RUN_FAILED
    if missing:
        print(f"autotune: report: could not find {', '.join(map(str, missing))}",
              file=sys.stderr)
    return 0


def report_doc(data: ReportData, study: optuna.Study, out: Path, missing: list[Path]
               ) -> ReportDoc:
    """`report --json`: where the page and the summary are, and what they say."""
    from autotune.app.schema import ConfirmationDoc, ReportDoc, TrialDoc
    from autotune.study.standing import study_objective_or_none
    from autotune.study.trials import shown

    objective = study_objective_or_none(study.user_attrs)
    ranked = data.importances if isinstance(data.importances, dict) else {}
    return ReportDoc(
        study=data.study, html=str(out / "report.html"), markdown=str(out / "report.md"),
        verdict=data.verdict, note=data.note, profile=data.profile_path,
        chosen_trial=data.chosen, failed=len(data.failed),
        trials=[TrialDoc.of(t, objective) for t in study.get_trials(deepcopy=False)
                if shown(t)],
        confirmation=None if data.confirmation is None else ConfirmationDoc.of(
            data.confirmation),
        importances=ranked,
        importances_note=None if isinstance(data.importances, dict) else data.importances,
        missing=[str(p) for p in missing])


def baseline_of(data: ReportData) -> int | None:
    """The measured trial of vLLM's defaults in a report's rows."""
    return next((t.number for t in data.trials if t.baseline and t.served), None)


__all__ = ["add_report_command", "cmd_report"]
