"""Every input of a run (flags, files, model, tokenizer, machine), checked before any start."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.config import parse_model
from autotune.core.errors import ConfigError
from autotune.engine.hardware import HardwareInfo, detect_hardware
from autotune.engine.probes import Probe
from autotune.engine.vllm_env import VLLM_ENV_PREFIX, EnvNames
from autotune.measure.plan import Plan
from autotune.measure.workload import load_workload
from autotune.model.resolve import ResolvedModel, check_weights, resolve_model
from autotune.model.tokens import context_length, load_tokenizer, local_file
from autotune.profiles.profile import profile_path
from autotune.space.limits import (
    check_args,
    check_context_limit,
    check_workload,
    context_ceiling,
    model_len,
)
from autotune.space.params import CategoricalParam, FloatParam, IntParam
from autotune.space.search import SearchSpace, load_space
from autotune.study.samplers import grid_of

log = logging.getLogger(__name__)

SPACES_DIRS = (
    Path(__file__).resolve().parents[1] / "search_spaces",  # installed wheel
    Path(__file__).resolve().parents[2] / "search_spaces",  # source checkout
)


def default_space_path(target: str) -> Path:
    """The shipped space for a `--gpu` target (`search_spaces/<target>.yaml`: cpu, a10g, l4,
    a100-80gb, h100), or the generic GPU space for other cards."""
    for name in (f"{target}.yaml", "default.yaml"):
        for d in SPACES_DIRS:
            if (d / name).is_file():
                return d / name
    return SPACES_DIRS[-1] / "default.yaml"


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
    replace: bool = False  # replace a profile measured on other hardware
    mismatch_ok: bool = False  # tune as `target` cards that NVML names otherwise
    more_trials: bool = False  # `trials` counts new trials, not the study's total (re-tune)
    seeds: tuple[dict[str, Any], ...] = ()  # a new study's first candidates (warm start)
    parallel: int = 1  # trials side by side on this host (worker processes; slots.py)
    search_only: bool = False  # a worker of a --parallel run: trials only, no verdict
    # command-line overrides of the space file
    objective: dict[str, Any] | None = None  # fields of `objective:` to replace
    sampler: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Inputs:
    """Everything a run needs, checked before any server starts."""

    space: SearchSpace
    space_path: Path
    hardware: HardwareInfo
    model: ResolvedModel
    plan: Plan


def option_values(space: SearchSpace, base_args: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value each vLLM option may take in this space, for checking before any start."""
    out: dict[str, list[Any]] = {k: [v] for k, v in base_args.items()}
    for name, spec in space.args.items():
        if isinstance(spec, (IntParam, FloatParam)):
            out[name] = [spec.low, spec.high]
        elif isinstance(spec, CategoricalParam):
            out[name] = [c for c in spec.choices if c is not None]
        else:
            out[name] = [spec]
    return out


# vLLM options that are fractions: its parser takes any float, the engine refuses the rest
# only after a start-up.
FRACTIONS = ("gpu-memory-utilization",)


def check_fractions(space: SearchSpace, source: str) -> None:
    for name in FRACTIONS:
        for v in option_values(space, {}).get(name, []):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 < v <= 1:
                raise ConfigError(source, f"args.{name}", f"{v} is not a fraction in (0, 1]")


def check_space(space: SearchSpace, source: str, workload_source: str | None = None) -> None:
    """What `run` refuses of a space itself before any start, with no model, machine or
    engine: fractions out of (0, 1], sizes and limits that cannot be right, SLO bounds no
    request meets, a grid over what has none. `validate` calls it too. `workload_source`: the
    `--workload` file that replaced the space's own workload (its errors name that file)."""
    check_fractions(space, source)
    check_args(space, source)
    if workload_source is None:
        check_workload(space.workload, source, "workload.")
    else:
        check_workload(space.workload, workload_source)
    if space.sampler.name == "grid":
        grid_of(space, source)


def check_env_names(space: SearchSpace, source: str, known: EnvNames | None = None
                    ) -> str | None:
    """Refuse a VLLM_ variable in `env:` that the installed vLLM does not read (it would be
    set, ignored, and tuned for nothing); other names are other libraries'. Returns what to
    tell the user when vLLM's list cannot be read (nothing is refused then)."""
    from autotune.engine.vllm_env import env_names, env_problems

    ours = [name for name in space.env if name.upper().startswith(VLLM_ENV_PREFIX)]
    if not ours:
        return None
    known = known if known is not None else env_names()
    if known.names is None:
        return f"{source}: env: names not checked against vLLM's list: {known.why_not}"
    found = env_problems(ours, known.names)
    if found:
        name = next(iter(found))
        raise ConfigError(source, f"env.{name}", found[name])
    return None


def check_model_context(space: SearchSpace, model: ResolvedModel, source: str) -> None:
    """A max-model-len above the model's own context, which vLLM refuses at start-up."""
    context = context_length(model.path)
    path = local_file(model.path, "config.json")
    if context is None or path is None:
        return  # the model's config is not readable here: vLLM judges
    config = json.loads(path.read_text())
    env = space.env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN")
    allowed = env is not None or bool(os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN"))
    check_context_limit(space, model.args, context_ceiling(config, context), source, allowed)


def smallest_context(space: SearchSpace, model: ResolvedModel | None
                     ) -> tuple[int | None, str]:
    """The shortest max-model-len any candidate can get, and where it comes from (without a
    model, as `validate` has none: what the space's own max-model-len allows). `auto` (-1)
    and a value left unset are the model's own context."""
    spec = space.args.get("max-model-len", model.args.get("max-model-len") if model else None)
    default = context_length(model.path) if model else None
    if isinstance(spec, IntParam):
        return spec.low, "args.max-model-len"
    model_own = "the model's max_position_embeddings" if default is not None else ""
    if spec is None or isinstance(spec, FloatParam):
        return default, model_own
    choices = spec.choices if isinstance(spec, CategoricalParam) else [spec]
    given = [n for c in choices if (n := model_len(c)) is not None]
    if given and (default is None or min(given) <= default):
        return min(given), "args.max-model-len"
    return default, model_own


def check_context(space: SearchSpace, model: ResolvedModel | None, plan: Plan, source: str,
                  field: str | None) -> None:
    """Every planned request (prompt plus output) fits the shortest context a candidate can
    get; else one line naming `source` and `field`. Without a model (`validate`): the space's
    own max-model-len only."""
    context, where = smallest_context(space, model)
    longest = plan.longest_request() if context is not None else None
    if context is not None and longest is not None and longest > context:
        raise ConfigError(source, field,
                          f"requests of up to {longest} tokens (prompt plus output) do not "
                          f"fit a context of {context} ({where})")


def override(space: SearchSpace, cfg: RunConfig, source: str) -> SearchSpace:
    """The space with the command line's objective, sampler and seed in place of its own."""
    if cfg.objective is None and cfg.sampler is None and cfg.seed is None:
        return space
    data = space.model_dump()
    if cfg.objective is not None:
        data["objective"] = {**data["objective"], **cfg.objective}
    if cfg.sampler is not None:
        data["sampler"]["name"] = cfg.sampler
    if cfg.seed is not None:
        data["sampler"]["seed"] = cfg.seed
    return parse_model(SearchSpace, data, f"{source} (with --objective/--sampler/--seed)")


def run_profile_path(cfg: RunConfig, hardware_key: str) -> Path:
    """Where this run's profile goes: a `--workload` file adds its name, so a model tuned for
    several workloads keeps one profile for each."""
    workload = cfg.workload_path.stem if cfg.workload_path else ""
    return profile_path(cfg.profiles_dir, hardware_key, cfg.model, workload)


def run_space(cfg: RunConfig) -> tuple[Path, SearchSpace]:
    """The run's space file and its space, with --workload, --objective, --sampler and
    --seed in place of the file's own."""
    space_path = cfg.space_path or default_space_path(cfg.target)
    workload = load_workload(cfg.workload_path) if cfg.workload_path else None
    return space_path, override(load_space(space_path, workload), cfg, str(space_path))


def prepare(cfg: RunConfig, probe: Probe) -> Inputs:
    """All user-input checks, in the order a user would fix them. Starts no server."""
    if cfg.trials < 1:
        raise ConfigError("--trials", None, "must be at least 1")
    space_path, space = run_space(cfg)
    check_space(space, str(space_path), str(cfg.workload_path) if cfg.workload_path else None)
    if cfg.verify_options and (why := check_env_names(space, str(space_path))):
        # only where vLLM is not here to ask (a --launcher elsewhere): nothing to refuse on
        log.info(why)
    hardware = detect_hardware(cfg.target, probe, cfg.devices, cfg.mismatch_ok)
    model = resolve_model(cfg.model)
    check_weights(model, space.args.get("load-format"))
    check_model_context(space, model, str(space_path))
    plan = Plan(space.workload, load_tokenizer(model.path))
    check_context(space, model, plan, str(cfg.workload_path or space_path),
                  None if cfg.workload_path else "workload")
    return Inputs(space, space_path, hardware, model, plan)
