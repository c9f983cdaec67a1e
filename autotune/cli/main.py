"""The command line: parse flags, call the tuner, own the terminal (progress, tables, errors)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune import __version__
from autotune.cli.flags import (
    add_storage,
    folder,
    output_file,
    parse_devices,
    parse_duration,
    parse_launcher,
    parse_objective,
    parse_seed,
    parse_study,
    parse_weights,
    with_debug,
)
from autotune.cli.interrupts import EXIT_INTERRUPTED, INTERRUPTED, delivered, handled, settle
from autotune.cli.plan import add_plan_command
from autotune.cli.profiles import add_profile_commands
from autotune.cli.report import add_report_command
from autotune.core.errors import AutotuneError, UserError
from autotune.report.tables import front_text
from autotune.scale.lock import Busy

USAGE_ERROR = 2
RUN_FAILED = 1
BUSY = 75  # another run holds the profile's lock: try again later (EX_TEMPFAIL)
PROFILE_COMMANDS = ("profiles", "serve", "check")

class _Help(argparse.HelpFormatter):
    """Help wrapped between words only: a metric list or a path is never cut in two (argparse
    breaks long words and hyphenated ones at the line's end)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False,
                             break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """One line and exit 2 for a usage error; --debug before or after the command."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)
        with_debug(self, top)

    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(USAGE_ERROR, f"autotune: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="autotune", description="Tune vLLM serving settings against a workload.",
                top=True)
    p.add_argument("--version", action="version", version=f"autotune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    add_run_args(sub.add_parser("run", help="run (or continue) a study and write the best "
                                "profile"), trials_help="finished trials the study should hold "
                                "in total (default 10)", trials=10)
    t = sub.add_parser("retune", help="re-tune a profile: search new candidates, confirm them "
                       "against it, replace it only beyond noise (exit 0 unchanged, 10 "
                       "updated, 11 regression, 1 failed, 75 locked)")
    add_run_args(t, trials=4, trials_help="new candidates to search (default 4; twice as many "
                 "when vLLM, the hardware or the model changed since the profile)")
    add_profile_commands(sub)
    add_report_command(sub)
    add_plan_command(sub)

    f = sub.add_parser("pareto", help="list a multi-objective study's Pareto front, or "
                       "export its points as profiles")
    f.add_argument("--study", required=True, type=parse_study,
                   help="the multi-objective study's name (autotune run prints it)")
    add_storage(f, reads=True)
    f.add_argument("--export", type=folder, metavar="DIR",
                   help="write every point of the front as a profile in DIR")
    f.add_argument("--json", action="store_true", help="the front as JSON on standard "
                   "output: every point's settings and figures (docs/json.md)")

    v = sub.add_parser("validate", help="check search spaces, workloads and profiles")
    v.add_argument("files", nargs="+", type=Path,
                   help="search-space, workload or profile files (YAML)")
    v.add_argument("--no-verify-options", action="store_true",
                   help="skip checking options against vLLM's own parser")
    v.add_argument("--json", action="store_true", help="a JSON list on standard output: "
                   "one object per file (path, kind, ok, error)")
    return p


def add_run_args(r: argparse.ArgumentParser, trials: int, trials_help: str) -> None:
    r.add_argument("--gpu", required=True, help="target hardware: auto (what NVML finds, else "
                   "cpu), cpu, a10g, l4, a100-40gb, a100-80gb, h100, h200…")
    r.add_argument("--model", required=True,
                   help="hub id, local model directory, or builtin:tiny-qwen3")
    r.add_argument("--space", type=Path, help="search-space YAML (default: the shipped "
                   "search_spaces/GPU.yaml for cpu, a10g, l4, a100-80gb and h100, "
                   "search_spaces/default.yaml for other cards)")
    r.add_argument("--workload", type=Path, help="workload YAML, replacing the space's own")
    r.add_argument("--trials", type=int, default=trials, help=trials_help)
    r.add_argument("--timeout", type=parse_duration, help="stop starting trials after this "
                   "long, e.g. 45m or 2h")
    add_storage(r)
    r.add_argument("--study", type=parse_study, help="study name (default TARGET.MODEL.SPACE)")
    r.add_argument("--profiles-dir", type=folder, default=Path("profiles"),
                   help="where profiles are read and written (default profiles)")
    r.add_argument("--runs-dir", type=folder, default=Path("autotune-runs"),
                   help="where server logs and per-trial results go")
    r.add_argument("--gpus", "--devices", dest="devices", type=parse_devices, default=(),
                   help="GPU indices the run may use, e.g. 0 or 0,1,2,3 (default: the first "
                        "GPU); each server takes as many as its candidate needs")
    r.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="trials side by side on this host (default: one per --gpus GPU, "
                        "one on a CPU host): each server gets its own GPUs, or its own cores")
    r.add_argument("--search-only", action="store_true",
                   help="run trials of the study, then stop: no confirmation, no profile "
                        "(what the extra workers of --parallel do)")
    r.add_argument("--launcher", type=parse_launcher, help="command that starts the server, "
                   "before its options (default: 'vllm serve' if it works, else python -m "
                   "vllm.entrypoints.openai.api_server)")
    r.add_argument("--no-verify-options", action="store_true",
                   help="skip checking options against vLLM's own parser")
    r.add_argument("--json", metavar="FILE", type=output_file, help="write a JSON summary to "
                   "FILE ('-': standard output, the text going to standard error)")
    r.add_argument("--quiet", action="store_true", help="no progress: only the verdict, "
                   "the profile and errors")
    r.add_argument("--replace", action="store_true",
                   help="replace an existing profile even if it was measured on other "
                        "hardware (it is kept in history/)")
    r.add_argument("--ignore-hardware-mismatch", action="store_true",
                   help="tune cards NVML names otherwise as the --gpu target (profiles go "
                        "under that target's name)")

    o = r.add_argument_group("objective and search (override the space file's)")
    o.add_argument("--objective", type=parse_objective, metavar="METRIC[:max|min],...",
                   help="one metric, or several for a Pareto front (the first is the "
                        "primary), e.g. output_throughput,p95_ttft_ms:min")
    o.add_argument("--weights", type=parse_weights, metavar="METRIC=W,...",
                   help="a weighted score: the product of each metric to its weight, e.g. "
                        "output_throughput=1,p95_ttft_ms=-0.5")
    o.add_argument("--choose", choices=("primary", "knee"),
                   help="which point of a Pareto front becomes the profile")
    o.add_argument("--sampler", choices=SAMPLER_NAMES, help="tpe (default), gp, nsga2, "
                   "random or grid")
    o.add_argument("--seed", type=parse_seed, help="the sampler's seed (repeatable searches)")



SAMPLER_NAMES = ("tpe", "gp", "nsga2", "random", "grid")
def cmd_pareto(ns: argparse.Namespace) -> int:
    import optuna

    from autotune.study.front import export_front, study_objective
    from autotune.study.storage import load_existing

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_existing(ns.storage, ns.study)  # read-only: a missing one is not created
    objective = study_objective(study)
    if not objective.multi:
        raise UserError(f"--study {ns.study}: one objective ({objective.metric}), no Pareto "
                        "front")
    if ns.json:
        from autotune.app.schema import FrontDoc
        from autotune.study.front import front_record

        print(FrontDoc.model_validate(front_record(study, objective)).model_dump_json(
            indent=2))
    else:
        print(front_text(study, objective.choose))
    if ns.export:
        for path in export_front(study, ns.export):
            # with --json, standard output is the JSON alone
            print(f"wrote {path}", file=sys.stderr if ns.json else sys.stdout)
    return 0


def cmd_validate(ns: argparse.Namespace) -> int:
    """Every file checked; one line each (ok on standard output, errors on standard error)."""
    import json

    from autotune.app.validate import check_files

    def note(line: str) -> None:  # before a slow check, or of one that could not be made
        print(f"autotune: {line}", file=sys.stderr, flush=True)

    checked = check_files(ns.files, not ns.no_verify_options, note)
    if ns.json:
        print(json.dumps([c.summary() for c in checked], indent=2))
    else:
        for c in checked:
            if c.error is None:
                print(f"{c.path}: ok ({c.kind})", flush=True)
            else:
                print(f"autotune: error: {c.error}", file=sys.stderr, flush=True)
    return 0 if all(c.ok for c in checked) else USAGE_ERROR


def dispatch(ns: argparse.Namespace) -> int:
    """The command, with its errors as one line and an exit code."""
    try:
        if ns.command == "run":
            from autotune.cli.run import cmd_run

            return cmd_run(ns)
        if ns.command == "retune":
            from autotune.cli.run import cmd_retune

            return cmd_retune(ns)
        if ns.command in PROFILE_COMMANDS:
            from autotune.cli.profiles import run_profile_command

            return run_profile_command(ns)
        if ns.command == "pareto":
            return cmd_pareto(ns)
        if ns.command == "plan":
            from autotune.cli.plan import cmd_plan

            return cmd_plan(ns)
        if ns.command == "report":
            from autotune.cli.report import cmd_report

            return cmd_report(ns)
        return cmd_validate(ns)
    except Busy as exc:
        print(f"autotune: {exc}", file=sys.stderr)
        return BUSY
    except UserError as exc:
        if ns.debug:
            raise
        print(f"autotune: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except AutotuneError as exc:
        if ns.debug:
            raise
        print(f"autotune: {exc}", file=sys.stderr)
        return RUN_FAILED
    except OSError as exc:  # a file or folder the checks above could not foresee
        if ns.debug:
            raise
        print(f"autotune: error: {os_error_line(exc)}", file=sys.stderr)
        return RUN_FAILED


def main(argv: Sequence[str] | None = None, ending: bool = False) -> int:
    """The command; `ending`: the process ends when it returns (autotune.cli.entry), so an
    interrupt's signals are ignored from its line to the exit (interrupts.settle)."""
    try:
        return _command(argv)
    except KeyboardInterrupt:  # also one landing as the handlers are put in place or back,
        # or while the arguments are read
        if ending:
            settle()
        else:
            handled()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


def _command(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # `autotune serve PROFILE -- --port 8001`: what follows `--` goes to vLLM as is
    extra = args[args.index("--") + 1:] if "--" in args else []
    parser = build_parser()
    ns, unknown = parser.parse_known_args(args[:args.index("--")] if "--" in args else args)
    if unknown:
        parser.error(unrecognized(ns, unknown))
    if "--" in args and ns.command != "serve":
        parser.error("options after -- go to vLLM, and only `autotune serve` starts it")
    ns.extra = extra
    ns.argv = args
    if ns.command == "profiles":  # `| head` ends it quietly (it starts no server)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    logging.basicConfig(level=logging.DEBUG if ns.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM takes the same path as Ctrl-C, so `with` blocks stop their servers; neither
    # is lost where Python would swallow it (autotune.cli.interrupts)
    with delivered():
        return dispatch(ns)


def unrecognized(ns: argparse.Namespace, unknown: list[str]) -> str:
    """argparse's complaint, with where vLLM's own options go for `serve`."""
    line = f"unrecognized arguments: {' '.join(unknown)}"
    if ns.command == "serve":
        line += (f" (vLLM's own options go after --: autotune serve {ns.profile} "
                 f"{'--print ' if ns.print_only else ''}-- {' '.join(unknown)})")
    return line


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming its file(s): `PATH: Permission denied`."""
    names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{' -> '.join(names)}: {what}" if names else what


if __name__ == "__main__":
    sys.exit(main(ending=True))
