"""A search space's parameters: tuned (int, float, categorical) or fixed, and the settings
of one candidate."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

Scalar = Union[StrictBool, StrictInt, StrictFloat, str]
FixedValue = Union[Scalar, list[Scalar]]

# Options autotune owns for every server it starts; a space may not set them.
RESERVED_ARGS = frozenset({"model", "host", "port", "api-key", "config", "uds", "headless"})
ENV_PREFIX = "env:"
_OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


Condition = dict[str, Union[Scalar, list[Union[Scalar, None]], None]]


class IntParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int"]
    when: Condition | None = None
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step != 1:
            raise ValueError("log scale and step cannot be combined")
        return self

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high


class FloatParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float"]
    when: Condition | None = None
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined")
        return self

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and (
            self.low <= v <= self.high)


class CategoricalParam(BaseModel):
    """A choice among values. `null` among them means "leave it unset": the option is not
    passed (or the variable not set), so the search can return to vLLM's own default."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["categorical"]
    choices: list[Scalar | None] = Field(min_length=1)
    when: Condition | None = Field(None, description="tuned only when these earlier "
                                                     "parameters have these values (a list: "
                                                     "any of them); otherwise left unset")

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Scalar | None]) -> list[Scalar | None]:
        if len({json.dumps(c) for c in v}) != len(v):
            raise ValueError("choices must be unique")
        return v

    def contains(self, v: Any) -> bool:
        return v in self.choices


Tuned = Union[IntParam, FloatParam, CategoricalParam]


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        t = v.get("type")
        return t if t in ("int", "float", "categorical") else "bad-type"
    if isinstance(v, BaseModel):
        return str(getattr(v, "type", "fixed"))
    return "fixed"


class _BadType(BaseModel):
    """Catches a mapping without a valid `type`, to say so in one line."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _fail(cls, v: Any) -> Any:
        t = v.get("type") if isinstance(v, dict) else None
        if t is None:
            raise ValueError("a tuned parameter needs type: int, float or categorical")
        raise ValueError(f"type must be int, float or categorical, not {t!r}")


ParamSpec = Annotated[
    Union[
        Annotated[IntParam, Tag("int")],
        Annotated[FloatParam, Tag("float")],
        Annotated[CategoricalParam, Tag("categorical")],
        Annotated[_BadType, Tag("bad-type")],
        Annotated[FixedValue, Tag("fixed")],
    ],
    Discriminator(_kind),
]


@dataclass(frozen=True)
class TrialParams:
    """One candidate: vLLM options and server environment, fixed and tuned merged."""

    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class Suggester(Protocol):
    """The slice of `optuna.Trial` that sampling needs (so this module stays Optuna-free)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def env_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def holds(condition: Condition | None, values: dict[str, Any]) -> bool:
    """Whether the values drawn so far meet a parameter's `when` (none: always)."""
    for name, wanted in (condition or {}).items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if values.get(name) not in allowed:
            return False
    return True
