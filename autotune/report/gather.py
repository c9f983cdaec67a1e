"""`autotune report`: what a study holds, gathered for a page and a summary (pure reading).

A study in its storage, the run folder beside it (per-request samples, the confirmation
round), and the profile it made, if one is named: `gather` reads them into `ReportData`;
`markdown` writes the summary; `autotune.report.html` draws the page.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune.core.errors import UserError
from autotune.core.stats import Estimate
from autotune.core.units import axis_title, plural
from autotune.decide.confirm import BASELINE_NAME, Confirmation
from autotune.measure.records import read_samples
from autotune.profiles.card import card_text
from autotune.profiles.profile import Profile
from autotune.report.records import pick, records
from autotune.report.tables import cell, confirmation_rows
from autotune.space.goals import Objective
from autotune.study.standing import INFEASIBLE, Miss, standing, study_objective_or_none
from autotune.study.storage import redact_url
from autotune.study.trials import (
    COUNTED,
    STALLS,
    is_baseline,
    metrics_of,
    queued_note,
    shown,
)

LATENCY = "p95_ttft_ms"
MEMORY = "peak_memory_bytes"


@dataclass
class TrialRow:
    number: int
    status: str  # ok | infeasible | failed | pruned | running (study.standing)
    baseline: bool
    params: dict[str, Any]
    metrics: dict[str, Estimate]
    reason: str = ""  # failed: why; infeasible: the constraints missed, by how much
    detail: str = ""
    log_tail: str = ""
    missed: list[Miss] = field(default_factory=list)
    stalls: str = ""  # how many rounds had a first-token stall (measure/stalls.py)

    @property
    def feasible(self) -> bool:
        return self.status == "ok"

    @property
    def served(self) -> bool:
        """Measured a server that served the load (feasible or not)."""
        return self.status in ("ok", INFEASIBLE)

    @property
    def label(self) -> str:
        return f"trial {self.number}" + (" (vLLM defaults)" if self.baseline else "")


@dataclass
class ReportData:
    study: str
    metric: str
    maximize: bool
    trials: list[TrialRow]
    importances: dict[str, float] | str  # by parameter, or why there are none
    confirmation: Confirmation | None = None
    chosen: int | None = None  # the search trial of the profile (None: vLLM's defaults)
    verdict: str = ""
    note: str | None = None  # the profile's run is not the one shown: which one is, plainly
    # per-request latencies (ms) of vLLM's defaults and of the chosen settings
    latencies: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    hardware: str = "unknown"  # the hardware key the study was measured on
    vllm_version: str = "unknown"
    profile_path: str | None = None  # the profile reported (None: a study named by --study)
    deploy: str | None = None  # the profile's deploy command
    queued: str | None = None  # candidates left queued by the budget, and how they get measured
    card: list[str] = field(default_factory=list)  # the reported profile's baseline card

    def header(self) -> list[tuple[str, str]]:
        """What was measured on what, and how to deploy it: the top of the page."""
        return [("hardware", self.hardware), ("vLLM", self.vllm_version),
                ("profile", self.profile_path or "none named (autotune report PROFILE "
                 "reports a profile's study)"),
                ("deploy", self.deploy or "-")]

    @property
    def failed(self) -> list[TrialRow]:
        return [t for t in self.trials if t.status == "failed"]

    @property
    def measured(self) -> list[TrialRow]:
        return [t for t in self.trials if t.metrics.get(self.metric) is not None]


def _row(t: FrozenTrial, objective: Objective | None) -> TrialRow:
    metrics = metrics_of(t)
    s = standing(t, objective, metrics)
    return TrialRow(number=t.number, status=s.status, baseline=is_baseline(t),
                    params=dict(t.params), metrics=metrics, reason=s.reason or "",
                    detail=str(t.user_attrs.get("detail") or ""),
                    log_tail=str(t.user_attrs.get("log_tail") or ""), missed=s.missed,
                    stalls=str(t.user_attrs.get(STALLS) or ""))


# Below this many measured trials an importance is noise: the evaluator compares the best tenth
# of the trials with the rest, and a handful cannot tell a setting's effect from the machine's.
MIN_TRIALS_FOR_IMPORTANCE = 8


def importances(study: optuna.Study, metric: str, maximize: bool) -> dict[str, float] | str:
    """Optuna's parameter importance (its default evaluator, PED-ANOVA) for `metric`, over
    the trials that measured it and only the settings that took at least two values among
    them (a setting that never changed has no effect to rank); or why there is none."""
    done = [t for t in study.get_trials(deepcopy=False, states=COUNTED)
            if _measured(metrics_of(t).get(metric))]
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{plural(len(done), 'measured trial')}; ranking settings takes at least "
                f"{MIN_TRIALS_FOR_IMPORTANCE}")
    varied = sorted(k for k in {k for t in done for k in t.params}
                    if len({repr(t.params[k]) for t in done if k in t.params}) > 1)
    if not varied:
        return f"no setting took two values among the {len(done)} measured trials"
    # only the trials that set every varied setting (vLLM's defaults may leave some unset)
    used = [t for t in done if all(k in t.params for k in varied)]
    if len(used) < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{plural(len(used), 'measured trial')} set every varied setting "
                f"({', '.join(varied)}); ranking them takes at least "
                f"{MIN_TRIALS_FOR_IMPORTANCE}")
    # a study of just those trials and settings: the evaluator sees nothing else (failed
    # trials' placeholder values, settings held fixed, other goals of a multi-goal study)
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        sub = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                  direction="maximize" if maximize else "minimize")
        for t in used:
            sub.add_trial(optuna.trial.create_trial(
                params={k: t.params[k] for k in varied},
                distributions={k: t.distributions[k] for k in varied},
                value=metrics_of(t)[metric].value))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # experimental-feature notices
            found = optuna.importance.get_param_importances(sub, params=varied)
    except (RuntimeError, ValueError) as exc:
        return f"Optuna could not evaluate it: {exc}"
    finally:
        optuna.logging.set_verbosity(quiet)
    return {k: float(v) for k, v in found.items()}


def _measured(e: Estimate | None) -> bool:
    return e is not None and math.isfinite(e.value)


def _latencies(run_dir: Path, trial: int | None) -> dict[str, list[float]]:
    """TTFT and end-to-end latency (ms) of every served request of a search trial."""
    if trial is None:
        return {}
    path = run_dir / f"trial-{trial:04d}" / "samples.jsonl.gz"
    if not path.exists():
        return {}
    samples = [s for _, _, s in read_samples(path) if s.ok]
    return {"TTFT": [s.ttft * 1000 for s in samples if s.ttft is not None],
            "end-to-end": [(s.end - s.start) * 1000 for s in samples]}


def gather(storage: str | optuna.storages.BaseStorage, study_name: str, runs_dir: Path,
           profile: Profile | None = None, profile_path: str | Path | None = None
           ) -> ReportData:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        where = redact_url(storage) if isinstance(storage, str) else "the storage"
        raise UserError(f"no study {study_name!r} in {where}") from None
    metric = str(study.user_attrs.get("metric", "output_throughput"))
    direction = (study.user_attrs.get("objective") or {}).get("direction", "maximize")
    objective = study_objective_or_none(study.user_attrs)
    trials = [_row(t, objective) for t in study.get_trials(deepcopy=False) if shown(t)]
    run_dir = runs_dir / study_name
    shown_record, note = pick(records(study.user_attrs, run_dir), profile)
    conf = None if shown_record is None else shown_record.confirmation
    chosen, verdict = _chosen(trials, metric, direction == "maximize", conf, profile)
    baseline = next((t.number for t in trials if t.baseline and t.served), None)
    maximize = direction == "maximize"
    data = ReportData(study=study_name, metric=metric, maximize=maximize, trials=trials,
                      importances=importances(study, metric, maximize),
                      confirmation=conf, chosen=chosen, verdict=verdict, note=note,
                      queued=queued_note(study))
    _provenance(data, study.user_attrs, profile, profile_path)
    arms = {BASELINE_NAME: baseline}
    if chosen is not None and chosen != baseline:
        arms[f"chosen (trial {chosen})"] = chosen
    for name, number in arms.items():
        found = _latencies(run_dir, number)
        if found:
            data.latencies[name] = found
    return data


def _provenance(data: ReportData, attrs: dict[str, Any], profile: Profile | None,
                profile_path: str | Path | None) -> None:
    """The hardware and vLLM of the profile (else of the study), and how to deploy it."""
    hardware = profile.meta.hardware if profile is not None else attrs.get("hardware") or {}
    data.hardware = str(hardware.get("key") or attrs.get("target") or "unknown")
    data.vllm_version = str(profile.meta.vllm_version if profile is not None
                            else attrs.get("vllm_version") or "unknown")
    if profile is not None and profile_path is not None:
        data.profile_path = str(profile_path)
        data.deploy = profile.deploy_command(profile_path)
    if profile is not None and profile.meta.card is not None:
        data.card = card_text(profile.meta.card)


def _chosen(trials: list[TrialRow], metric: str, maximize: bool, conf: Confirmation | None,
            profile: Profile | None) -> tuple[int | None, str]:
    """The search trial whose settings were kept, and the verdict that kept them."""
    if profile is not None:
        return profile.meta.trial, profile.meta.verdict
    if conf is not None:
        winner = conf.arm(conf.verdict.winner)
        return (winner.trial if winner is not None else None), conf.verdict.summary
    ranked = sorted((t for t in trials if t.feasible and t.metrics.get(metric)),
                    key=lambda t: t.metrics[metric].value, reverse=maximize)
    return (ranked[0].number if ranked else None), "no confirmation round recorded"


def trial_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    header = ["trial", "status", f"{axis_title(data.metric)} [95% over rounds]",
              "p95 TTFT (ms)", "peak memory (GiB)", "settings", "why"]
    rows = []
    for t in data.trials:
        why = (f"misses {t.reason}" if t.missed else
               f"{t.reason}: {t.detail}" if t.status == "failed" else "")
        if t.stalls:
            why = f"{why}; {t.stalls}" if why else t.stalls
        rows.append([t.label, t.status, cell(data.metric, t.metrics.get(data.metric)),
                     cell(LATENCY, t.metrics.get(LATENCY)),
                     cell(MEMORY, t.metrics.get(MEMORY), 3),
                     ", ".join(f"{k}={v}" for k, v in t.params.items() if v is not None)
                     or "vLLM's defaults", why])
    return header, rows


def markdown(data: ReportData) -> str:
    """The summary a team pastes into a ticket or reads in a terminal."""
    def md(header: list[str], rows: list[list[str]]) -> str:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        return "\n".join(["| " + " | ".join(header) + " |",
                          "|" + "---|" * len(header), *("| " + " | ".join(r) + " |"
                                                        for r in esc)])

    out = [f"# autotune report: {data.study}", "",
           *(f"- **{k}:** " + (f"`{v}`" if k == "deploy" and data.deploy else v)
             for k, v in data.header()),
           "", f"**Verdict:** {data.verdict}", "",
           *([f"**Note:** {data.note}", ""] if data.note else []),
           *(["## Baseline card", "", *(f"- {line}" for line in data.card), ""]
             if data.card else [])]
    if data.confirmation is not None:
        c = data.confirmation
        budget = f" (budget {c.max_rounds})" if c.max_rounds else ""
        out += [f"## Confirmation: {c.rounds} interleaved rounds{budget}, a fresh server each",
                "", "Figures are means over starts; ratios are paired by round (95%); the "
                f"decision's own intervals are at {c.verdict.level:.1%}.", "",
                md(*confirmation_rows(c)), ""]
    out += ["## Search", "", "One server start per trial; intervals over its rounds (95%).", "",
            md(*trial_table(data)), "", *([data.queued + ".", ""] if data.queued else [])]
    if data.failed:
        out += ["## Failed trials", ""]
        for t in data.failed:
            out += [f"- {t.label}: **{t.reason}**: {t.detail}"]
        out += [""]
    out += ["## Parameter importance", ""]
    if isinstance(data.importances, dict):
        out += [md(["setting", "importance"], [
            [k, f"{v:.2f}"] for k, v in data.importances.items()]), ""]
    else:
        out += [f"Not computed: {data.importances}.", ""]
    return "\n".join(out)


__all__ = ["ReportData", "TrialRow", "gather", "markdown"]
