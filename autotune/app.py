"""Wire one `autotune run`: validate every input, then tune, then write the profile."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune import __version__
from autotune.engine import default_launcher, vllm_version
from autotune.errors import ConfigError
from autotune.models import resolve_model
from autotune.objective import TrialResult, TrialSetup, run_trial
from autotune.probes import MemoryBaseline, Probe, SystemProbe, detect_hardware
from autotune.profile import (
    Profile,
    ProfileMeta,
    model_slug,
    profile_path,
    read_profile,
    write_profile,
)
from autotune.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    TrialParams,
    load_space,
    resolve,
)
from autotune.tuner import StudyConfig, TrialCallback, best_trial, tune
from autotune.workload import load_workload

log = logging.getLogger(__name__)

SPACES_DIRS = (
    Path(__file__).resolve().parent / "search_spaces",  # installed wheel
    Path(__file__).resolve().parent.parent / "search_spaces",  # source checkout
)


def default_space_path(target: str) -> Path:
    name = "cpu.yaml" if target == "cpu" else "default.yaml"
    for d in SPACES_DIRS:
        if (d / name).is_file():
            return d / name
    return SPACES_DIRS[-1] / name


@dataclass(frozen=True)
class RunConfig:
    target: str
    model: str
    space_path: Path | None = None
    workload_path: Path | None = None
    trials: int = 10
    timeout_s: float | None = None
    storage: str = "sqlite:///autotune.db"
    study: str | None = None
    profiles_dir: Path = Path("profiles")
    runs_dir: Path = Path("autotune-runs")
    devices: tuple[int, ...] = ()
    launcher: tuple[str, ...] | None = None
    verify_options: bool = True


@dataclass
class RunOutcome:
    study: optuna.Study
    best: FrozenTrial | None
    profile_path: Path | None = None
    profile_written: bool = False
    note: str = ""
    results: dict[int, TrialResult] = field(default_factory=dict)


def option_values(space: SearchSpace, base_args: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value each vLLM option may take in this space, for checking before any start."""
    out: dict[str, list[Any]] = {k: [v] for k, v in base_args.items()}
    for name, spec in space.args.items():
        if isinstance(spec, (IntParam, FloatParam)):
            out[name] = [spec.low, spec.high]
        elif isinstance(spec, CategoricalParam):
            out[name] = list(spec.choices)
        else:
            out[name] = [spec]
    return out


def study_name(target: str, model: str, space: SearchSpace) -> str:
    return f"{target}.{model_slug(model)}.{space.name}"


def prepare(cfg: RunConfig, probe: Probe) -> tuple[SearchSpace, Path, Any, Any]:
    """All user-input checks, in the order a user would fix them. Starts no server."""
    if cfg.trials < 1:
        raise ConfigError("--trials", None, "must be at least 1")
    space_path = cfg.space_path or default_space_path(cfg.target)
    workload = load_workload(cfg.workload_path) if cfg.workload_path else None
    space = load_space(space_path, workload)
    hardware = detect_hardware(cfg.target, probe, cfg.devices)
    model = resolve_model(cfg.model)
    return space, space_path, hardware, model


def run(cfg: RunConfig, probe: Probe | None = None,
        on_trial: TrialCallback | None = None,
        on_ready: Callable[[str], None] | None = None) -> RunOutcome:
    probe = probe or SystemProbe()
    space, space_path, hardware, model = prepare(cfg, probe)
    clash = sorted(set(model.args) & set(space.args))
    if clash:
        raise ConfigError(str(space_path), f"args.{clash[0]}",
                          f"is set by the built-in model {cfg.model}")
    if cfg.verify_options:
        from autotune.vllm_args import check_options

        check_options(option_values(space, model.args), str(space_path))

    name = cfg.study or study_name(cfg.target, cfg.model, space)
    launcher = cfg.launcher or default_launcher()
    api_key = secrets.token_hex(16)
    run_dir = cfg.runs_dir / name
    setup = TrialSetup(model=model.path, launcher=launcher, workload=space.workload,
                       engine=space.engine, probe=probe,
                       base_args=dict(model.args),
                       gpu_indices=tuple(g.index for g in hardware.gpus), api_key=api_key,
                       objective_level=space.objective.level,
                       baseline=MemoryBaseline.take(probe, [g.index for g in hardware.gpus]))
    results: dict[int, TrialResult] = {}

    def runner(params: TrialParams, number: int) -> TrialResult:
        trial_dir = run_dir / f"trial-{number:04d}"
        result = run_trial(params, setup, trial_dir)
        (trial_dir / "result.json").write_text(json.dumps(
            {"trial": number, "study": name, "model": cfg.model, "target": cfg.target,
             "args": params.args, "workload": space.workload.model_dump(mode="json"),
             **result.model_dump(mode="json")}, indent=2))
        results[number] = result
        return result

    attrs = {"target": cfg.target, "model": cfg.model, "space": space.name,
             "metric": space.objective.metric,
             "workload": space.workload.model_dump(mode="json")}
    if on_ready:
        on_ready(f"study {name!r} in {redact_url(cfg.storage)}; logs in {run_dir}")
    study = tune(space, StudyConfig(cfg.storage, name, cfg.trials, cfg.timeout_s), runner,
                 attrs, on_trial)
    outcome = RunOutcome(study=study, best=best_trial(study), results=results)
    if outcome.best is None:
        outcome.note = "no trial met every constraint: no profile written"
        return outcome

    best = outcome.best
    params = resolve(space, best.params)
    settings = {"model": model.path, **model.args, **params.args}
    meta = ProfileMeta(
        autotune_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        target=cfg.target, model=cfg.model, hardware=hardware.describe(),
        vllm_version=vllm_version(), space=space.name, space_fingerprint=space.fingerprint(),
        workload=space.workload.model_dump(mode="json"), study=name, trial=best.number,
        objective={"metric": space.objective.metric, "direction": space.objective.direction,
                   "value": best.value},
        metrics={k: v for k, v in best.user_attrs.get("metrics", {}).items() if v is not None},
        env=dict(params.env),
        serve=serve_prefix(default_launcher()),
    )
    path = profile_path(cfg.profiles_dir, cfg.target, cfg.model)
    outcome.profile_path = path
    keep, why = keep_existing(path, meta)
    if keep:
        outcome.note = why
        return outcome
    write_profile(Profile(settings=settings, meta=meta), path)
    outcome.profile_written = True
    outcome.note = why
    return outcome


def keep_existing(path: Path, new: ProfileMeta) -> tuple[bool, str]:
    """Never silently replace a profile with a worse one measured the same way."""
    if not path.exists():
        return False, ""
    try:
        old = read_profile(path).meta
    except Exception:
        return False, f"replaced unreadable profile {path}"
    same = (old.objective.get("metric") == new.objective.get("metric")
            and old.space_fingerprint == new.space_fingerprint)
    if not same:
        return False, f"replaced {path} (it was tuned for another objective or workload)"
    ov, nv = float(old.objective["value"]), float(new.objective["value"])
    better = nv > ov if new.objective.get("direction") == "maximize" else nv < ov
    if better or nv == ov:
        return False, f"replaced {path}: {ov:.4g} -> {nv:.4g}"
    return True, (f"kept {path}: its {old.objective['metric']} {ov:.4g} beats this run's "
                  f"{nv:.4g} (delete it to replace)")


def serve_prefix(launcher: tuple[str, ...]) -> str:
    """How to start vLLM with a config file on this kind of host."""
    if launcher[-1] == "serve":
        return "vllm serve"
    return "python -m " + launcher[-1]


def redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
