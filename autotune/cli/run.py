"""`autotune run` and `autotune retune` on the terminal: progress lines (under a live panel on
a terminal), tables, the verdict.

With `--json -` the progress goes to standard error and only the JSON summary to standard
output, so a scheduler can read it as is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypedDict

from autotune.app.inputs import RunConfig
from autotune.app.run import RunOutcome
from autotune.cli.live import LiveDisplay, RunView
from autotune.core.events import listening
from autotune.core.units import plural, unit
from autotune.decide.confirm import Arm
from autotune.measure.records import atomic_write
from autotune.measure.result import TrialResult
from autotune.report.tables import (
    cell,
    confirmation_rows,
    est,
    front_text,
    summary_rows,
    table,
)
from autotune.study.trials import queued_note
from autotune.study.tuner import TrialReport

RUN_FAILED = 1


def run_config(ns: argparse.Namespace) -> RunConfig:
    from autotune.cli.flags import SPACE, WORKLOAD, objective_override, refuse_misfiled

    refuse_misfiled(ns.space, SPACE)
    refuse_misfiled(ns.workload, WORKLOAD)
    return RunConfig(
        target=ns.gpu, model=ns.model, space_path=ns.space, workload_path=ns.workload,
        trials=ns.trials, timeout_s=ns.timeout, storage=ns.storage, study=ns.study,
        profiles_dir=ns.profiles_dir, runs_dir=ns.runs_dir, devices=ns.devices,
        launcher=tuple(shlex.split(ns.launcher)) if ns.launcher else None,
        verify_options=not ns.no_verify_options, replace=ns.replace,
        mismatch_ok=ns.ignore_hardware_mismatch,
        objective=objective_override(ns), sampler=ns.sampler, seed=ns.seed,
        parallel=parallel(ns), search_only=ns.search_only,
    )


def parallel(ns: argparse.Namespace) -> int:
    from autotune.core.errors import UserError

    if ns.command == "retune":
        # a re-tune counts its budget from the study it finds: one worker
        if (ns.parallel or 1) > 1 or ns.search_only:
            raise UserError("retune runs as one worker (its budget counts from the trials "
                            "it finds): drop --parallel/--search-only, or use run")
        return 1
    if ns.parallel is None:
        return max(1, len(ns.devices))
    if ns.parallel < 1:
        raise UserError(f"--parallel: {ns.parallel} is not a number of trials (1 or more)")
    return int(ns.parallel)


def measured(r: TrialResult) -> str:
    w = r.metrics.get(r.watched)
    u = unit(r.watched)
    stalls = r.stalls()
    return (f"{r.watched} {cell(r.watched, w)}{' ' + u if u and w else ''} "
            f"({w.n if w else 0} rounds, {r.measure_s:.0f} s), "
            f"p95 TTFT {est(r.metrics.get('p95_ttft_ms'))} ms"
            + (f"; {stalls}" if stalls else ""))


class Callbacks(TypedDict):
    on_trial: Callable[[TrialReport], None]
    on_ready: Callable[[str], None]
    on_confirm: Callable[[list[Arm], int], None]
    on_round: Callable[[int, Arm, TrialResult], None]


def progress(say: Callable[[str], None], view: RunView | None = None) -> Callbacks:
    """The callbacks `app.run` takes: one line per event through `say`, and the live
    display's state when there is one."""
    def on_trial(rep: TrialReport) -> None:
        if view is not None:
            view.on_trial(rep)
        r = rep.result
        who = f"trial {rep.number}" + (" (vLLM defaults)" if rep.baseline else "")
        if rep.repeat_of is not None:
            say(f"{who}: the same settings as trial {rep.repeat_of}: answered from its "
                "measurement, no server started")
        elif r.status == "ok":
            missed = "; ".join(m.text() for m in rep.missed) or "misses a constraint"
            say(f"{who}: {measured(r)}, startup {r.value('startup_s') or 0:.0f} s"
                f"{'' if rep.feasible else f' (infeasible: {missed})'}")
        elif r.status == "pruned":
            saved = f" (about {r.saved_s:.0f} s of measuring saved)" if r.saved_s >= 1 else ""
            say(f"{who}: pruned, {r.detail}{saved}")
        else:
            say(f"{who}: FAILED {r.reason.value if r.reason else ''}: {r.detail}")

    def on_confirm(arms: list[Arm], rounds: int) -> None:
        if view is not None:
            view.on_confirm(len(arms) * rounds)
        say(f"\nconfirming {', '.join(a.name for a in arms)} in interleaved rounds, a fresh "
            f"server each, until every challenger is settled: at most {rounds} rounds "
            f"({len(arms) * rounds} starts; the space's confirm.rounds is that budget)")

    def on_round(r: int, arm: Arm, result: TrialResult) -> None:
        if view is not None:
            view.on_round()
        what = measured(result) if result.status == "ok" else (
            f"FAILED {result.reason.value if result.reason else ''}: {result.detail}")
        say(f"  round {r + 1}: {arm.name}: {what}")

    return Callbacks(on_trial=on_trial, on_ready=say, on_confirm=on_confirm,
                     on_round=on_round)


@contextlib.contextmanager
def watching(ns: argparse.Namespace, out: TextIO, budget: int) -> Iterator[Callbacks]:
    """The run's progress on `out`: a live display on a terminal, plain lines elsewhere
    (logs, schedulers, CI), nothing with --quiet."""
    if ns.quiet:
        yield progress(lambda _: None)
    elif not (out.isatty() and os.environ.get("TERM", "") not in ("", "dumb")):
        yield progress(lambda text: print(text, file=out, flush=True))
    else:
        view = RunView(budget)
        with LiveDisplay(view, out) as live, listening(view.on_phase):
            yield progress(live.say, view)


def report(outcome: RunOutcome, out: TextIO) -> None:
    """The search's table, the front, the confirmation round, what was saved."""
    def say(text: str = "") -> None:
        print(text, file=out)

    metric = outcome.study.user_attrs.get("metric", "output_throughput")
    header, rows = summary_rows(outcome.study, metric)
    say("\nsearch: one server start per trial; intervals over its rounds (95%)")
    say(table(rows, header))
    if outcome.front:
        say("\n" + front_text(outcome.study, outcome.study.user_attrs.get(
            "objective", {}).get("choose", "primary")))
    if outcome.confirmation is not None:
        conf = outcome.confirmation
        header, rows = confirmation_rows(conf)
        say(f"\nconfirmation: {conf.rounds} interleaved rounds (budget {conf.max_rounds}), a "
            "fresh server each; figures are means over starts, ratios paired by round (95%; "
            f"the decision's own intervals at {conf.verdict.level:.1%})")
        say(table(rows, header))
    say()
    if outcome.saved_s > 0:
        n = sum(1 for r in outcome.results.values() if r.status == "pruned")
        say(f"pruning stopped {plural(n, 'hopeless candidate')} early: about "
            f"{outcome.saved_s:.0f} s of measuring saved (estimated)")
    left = queued_note(outcome.study)
    if left:
        say(left)
    refused = [t for t in outcome.study.trials if t.user_attrs.get("no_start")]
    if refused:
        kinds = sorted({str(t.user_attrs.get("reason")) for t in refused})
        say(f"{plural(len(refused), 'candidate')} refused before a start ({', '.join(kinds)}): "
            f"{plural(len(refused), 'server start-up')} saved, none counted in the budget")


def cmd_run(ns: argparse.Namespace) -> int:
    from autotune.app.run import run
    from autotune.app.summary import run_summary

    out = sys.stderr if ns.json == "-" else sys.stdout
    cfg = run_config(ns)
    with watching(ns, out, ns.trials) as callbacks:
        outcome = run(cfg, **callbacks, workers=workers(ns, cfg, callbacks["on_ready"]))
    if not ns.quiet:
        report(outcome, out)
    if ns.json:
        write_summary(ns.json, run_summary(outcome))
    if outcome.deferred:
        print(f"autotune: {outcome.note}", file=out)
        return 0
    if not outcome.decided:
        print(f"autotune: {outcome.note}", file=sys.stderr)
        return RUN_FAILED
    print(f"verdict: {outcome.note}", file=out)
    if outcome.profile_written:
        print(f"profile: {outcome.profile_path}", file=out)
    return 0


def cmd_retune(ns: argparse.Namespace) -> int:
    from autotune.app.retune import RetunePlan, retune

    out = sys.stderr if ns.json == "-" else sys.stdout

    def on_plan(plan: RetunePlan) -> None:
        if ns.quiet:
            return
        if plan.current is None:
            print(f"no profile at {plan.path} yet: this re-tune is a first run", file=out)
        else:
            print(f"re-tuning {plan.path} (created {plan.current.meta.created[:10]}, "
                  f"{plan.current.meta.vllm_version}): {plan.trials} new candidate(s), "
                  "then a confirmation round with it", file=out)
        if plan.changes:
            print(f"changed since the profile: {'; '.join(plan.changes)}: its old results "
                  f"are not trusted, the search is widened to {plan.trials} candidates",
                  file=out)

    with watching(ns, out, ns.trials) as callbacks:
        result = retune(run_config(ns), ns.trials, on_plan=on_plan, **callbacks)
    if not ns.quiet:
        report(result.run, out)
    if result.regression:
        print(f"REGRESSION: {result.regression}", file=out)
    print(f"{'verdict' if result.run.decided else 'autotune'}: {result.run.note}", file=out)
    print(f"re-tune: {result.status} (exit {result.exit_code})", file=out)
    if ns.json:
        write_summary(ns.json, result.summary())
    return result.exit_code


def workers(ns: argparse.Namespace, cfg: RunConfig, say: Callable[[str], None]
            ) -> Callable[[], contextlib.AbstractContextManager[object]] | None:
    """The extra worker processes of `--parallel N` (none for a worker itself)."""
    if cfg.parallel <= 1 or cfg.search_only:
        return None
    from autotune.scale.workers import spawned

    return lambda: spawned(ns.argv, cfg.parallel, cfg.runs_dir / "workers", say)


def write_summary(where: str, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    if where == "-":
        sys.stdout.write(text)
    else:
        atomic_write(Path(where), text.encode())
