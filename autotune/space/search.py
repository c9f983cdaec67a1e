"""The search-space model: which vLLM options and server env vars to tune, fix, and score."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autotune.core.config import load_model, parse_model
from autotune.measure.quality import Quality
from autotune.measure.workload import Workload, read_dataset
from autotune.space.goals import Objective
from autotune.space.params import (
    _ENV_RE,
    _OPTION_RE,
    ENV_PREFIX,
    RESERVED_ARGS,
    CategoricalParam,
    FloatParam,
    IntParam,
    ParamSpec,
    Scalar,
    Suggester,
    TrialParams,
    Tuned,
    env_value,
    holds,
)
from autotune.space.rules import parse_rule, values_of


class Pruning(BaseModel):
    """Stop measuring a candidate once its interval shows it cannot reach the best so far."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    margin: float = Field(0.10, ge=0, lt=1, description="how far below the best's interval "
                                                       "a candidate's must lie: server starts "
                                                       "differ by more than one start's "
                                                       "interval shows")


class Confirm(BaseModel):
    """The confirmation round: finalists, vLLM's defaults and the current profile measured
    again in interleaved rounds, a fresh server each time."""

    model_config = ConfigDict(extra="forbid")
    finalists: int = Field(2, ge=0, description="best feasible candidates of the search")
    rounds: int = Field(4, ge=2, le=50, description="the budget: at most this many server "
                        "starts per arm; the rounds stop once every challenger is settled")
    min_rounds: int = Field(3, ge=2, le=50, description="rounds before the first look")
    detect: float = Field(0.05, gt=0, lt=1, description="the smallest gain worth having: a "
                          "challenger shown not to beat the reference by this much is "
                          "settled")
    min_gain: float = Field(0.0, ge=0, lt=1, description="a challenger must win by at least "
                                                        "this share, beyond noise")
    max_loss: float = Field(0.05, ge=0, lt=1, description="several goals: the most a winner "
                                                         "may lose on any other goal, shown "
                                                         "by its interval")
    replace_gain: float = Field(0.05, ge=0, lt=1, description="a challenger must beat the "
                                "current profile by at least this share, beyond noise: "
                                "settings that serve alike never replace each other, so "
                                "nightly re-tunes do not flap")

    @model_validator(mode="after")
    def _budget(self) -> Confirm:
        # as `measure:` refuses min_rounds above max_rounds. Left to its default, min_rounds
        # follows a smaller budget (the first look comes at `rounds`, as decide.sequential's
        # Rule.first_look takes it), so `rounds: 2` alone stays a 2-round budget.
        if "min_rounds" in self.model_fields_set and self.min_rounds > self.rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) is above rounds "
                             f"({self.rounds}), the budget")
        return self


class SamplerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["tpe", "gp", "nsga2", "random", "grid"] = "tpe"
    # TPE's default of 10 random start-up trials is most of a typical 10-20 trial budget.
    n_startup_trials: int = Field(4, ge=0)
    # start-up trials: one option changed at a time from vLLM's defaults, then the changes
    # that helped combined (screening.py); or the sampler's own (random) start-up
    startup: Literal["screen", "random"] = "screen"
    seed: int | None = 0
    # a new study's first candidates after vLLM's defaults: this model's profiles on other
    # hardware, mapped into the space (warm.py); off unless bench.samplers shows it pays
    warm_start: bool = False


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    startup_timeout_s: float = Field(600.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    settle_timeout_s: float = Field(60.0, ge=0, description="wait for the last trial's memory "
                                                            "to come back before the next")
    stall_s: float = Field(10.0, gt=0, description="requests in flight with no byte from the "
                                                   "server this long: probe /health; no "
                                                   "answer is hung_under_load")


class SearchSpace(BaseModel):
    """A search-space file. Plain values are fixed; mappings with `type` are tuned."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    args: dict[str, ParamSpec] = Field(default_factory=dict)
    env: dict[str, ParamSpec] = Field(default_factory=dict)
    objective: Objective = Field(default_factory=lambda: Objective())
    workload: Workload = Field(default_factory=lambda: Workload())
    sampler: SamplerSettings = Field(default_factory=lambda: SamplerSettings())
    engine: EngineSettings = Field(default_factory=lambda: EngineSettings())
    pruning: Pruning = Field(default_factory=lambda: Pruning())
    confirm: Confirm = Field(default_factory=lambda: Confirm())
    quality: Quality | None = Field(None, description="greedy outputs of candidates that "
                                    "change numerics must agree with vLLM's defaults'")
    rules: list[str] = Field(default_factory=list, description="relations every candidate "
                             "must satisfy, e.g. 'max-num-batched-tokens >= max-num-seqs'; "
                             "one that does not is recorded without a start")
    enqueue: list[dict[str, Scalar | None]] = Field(
        default_factory=list, description="first candidates after vLLM's defaults (which "
                                          "always go first)")

    @field_validator("args", mode="before")
    @classmethod
    def _normalize_args(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for k, spec in v.items():
            key = str(k).removeprefix("--").replace("_", "-")
            if not _OPTION_RE.match(key):
                raise ValueError(f"{k!r} is not a vLLM long option name")
            if key in RESERVED_ARGS:
                raise ValueError(f"{key!r} is set by autotune, not by a search space")
            out[key] = spec
        return out

    @field_validator("env", mode="before")
    @classmethod
    def _check_env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for k in v:
                if not _ENV_RE.match(str(k)):
                    raise ValueError(f"{k!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _check_level(self) -> SearchSpace:
        n = len(self.workload.load_levels())
        if not -n <= self.objective.level < n:
            raise ValueError(f"objective.level {self.objective.level} is outside the "
                             f"workload's {n} load level(s)")
        return self

    @model_validator(mode="after")
    def _check_enqueue(self) -> SearchSpace:
        tuned = self.tuned()
        for i, cand in enumerate(self.enqueue):
            for k, v in cand.items():
                spec = tuned.get(k)
                if spec is None:
                    raise ValueError(f"enqueue[{i}]: {k!r} is not a tuned parameter")
                if not spec.contains(v):
                    raise ValueError(f"enqueue[{i}]: {k}={v!r} is outside its range")
        return self

    @model_validator(mode="after")
    def _check_capacity(self) -> SearchSpace:
        if any(g.metric == "capacity" for g in self.objective.goals()) and (
                self.workload.capacity is None):
            raise ValueError("objective.metric capacity needs workload.capacity (its "
                             "levels and SLOs)")
        return self

    @model_validator(mode="after")
    def _check_when(self) -> SearchSpace:
        tuned = self.tuned()
        order = list(tuned)
        for i, (name, spec) in enumerate(tuned.items()):
            for other in spec.when or {}:
                key = other if other in tuned else None
                if key is None:
                    raise ValueError(f"{name}: when: {other!r} is not a tuned parameter")
                if order.index(key) > i:
                    raise ValueError(f"{name}: when: {other!r} must come before {name!r}")
        return self

    @model_validator(mode="after")
    def _check_rules(self) -> SearchSpace:
        names = set(self.args) | {ENV_PREFIX + k for k in self.env}
        for i, text in enumerate(self.rules):
            try:
                parse_rule(text, names)
            except ValueError as exc:
                raise ValueError(f"rules[{i}]: {exc}") from None
        return self

    def tuned(self) -> dict[str, Tuned]:
        """Tuned parameters by Optuna name: vLLM options as is, env vars as `env:NAME`."""
        out: dict[str, Tuned] = {}
        for k, spec in self.args.items():
            if isinstance(spec, (IntParam, FloatParam, CategoricalParam)):
                out[k] = spec
        for k, spec in self.env.items():
            if isinstance(spec, (IntParam, FloatParam, CategoricalParam)):
                out[ENV_PREFIX + k] = spec
        return out

    def fingerprint(self) -> str:
        """Identifies what a study measures; a study is never continued with another space.

        Only what the file sets counts (defaults are left out), so a newer autotune that adds
        a field with a default does not orphan existing studies."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"description"},
                                          exclude_defaults=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_space(path: str | Path, workload_override: Workload | None = None) -> SearchSpace:
    space = load_model(SearchSpace, path)
    if workload_override is not None:
        data = space.model_dump()
        data["workload"] = workload_override.model_dump()
        return parse_model(SearchSpace, data, str(path))
    w = space.workload.with_base_dir(Path(path).resolve().parent)
    if w.dataset is not None:
        read_dataset(w)
    return space.model_copy(update={"workload": w})


def parse_space(data: dict[str, Any], source: str = "<space>") -> SearchSpace:
    return parse_model(SearchSpace, data, source)


def suggest(space: SearchSpace, trial: Suggester) -> TrialParams:
    values: dict[str, Any] = {}
    for name, spec in space.tuned().items():
        if not holds(spec.when, values):
            continue  # exists only when another parameter has a given value: left unset
        if isinstance(spec, IntParam):
            values[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step,
                                             log=spec.log)
        elif isinstance(spec, FloatParam):
            values[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step,
                                               log=spec.log)
        else:
            values[name] = trial.suggest_categorical(name, spec.choices)
    return resolve(space, values)


def resolve(space: SearchSpace, values: dict[str, Any]) -> TrialParams:
    """Fixed settings plus the given tuned values (by Optuna name) as one candidate. A tuned
    parameter that is None, or missing from `values`, is left unset: vLLM's default."""
    tuned = space.tuned()
    args: dict[str, Any] = {}
    env: dict[str, str] = {}
    for k, spec in space.args.items():
        v = values.get(k) if k in tuned else spec
        if v is not None:
            args[k] = v
    for k, spec in space.env.items():
        key = ENV_PREFIX + k
        v = values.get(key) if key in tuned else spec
        if v is not None:
            env[k] = env_value(v)
    return TrialParams(args=args, env=env)


def baseline_params(space: SearchSpace) -> TrialParams:
    """vLLM's defaults: the space's fixed settings and none of its tuned ones, exactly what
    `vllm serve MODEL` plus those settings gives."""
    return resolve(space, {})


def broken_rule(space: SearchSpace, params: TrialParams) -> str | None:
    """The first rule the candidate breaks, with its values; None when it keeps them all."""
    names = set(space.args) | {ENV_PREFIX + k for k in space.env}
    values = values_of(params)
    for text in space.rules:
        rule = parse_rule(text, names)
        if rule.broken_by(values):
            shown = ", ".join(f"{t.name}={values[t.name]}" for t in (rule.left, rule.right)
                              if t.name is not None)
            return f"breaks the rule {rule.text!r} ({shown})"
    return None
