"""Load YAML into pydantic models; every problem becomes one line naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from autotune.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# Union branch tags used by our discriminated unions; never shown to the user.
_UNION_TAGS = frozenset({"int", "float", "categorical", "fixed", "bad-type", "dist", "uniform",
                         "normal", "lognormal"})


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a dotted path, dropping union tags."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_TAGS or "[" in item:
            # Union branch names are pydantic's, not the user's: hide them.
            continue
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def validation_message(exc: ValidationError) -> tuple[str, str]:
    """The first error of a ValidationError as (field path, message)."""
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return field_path(tuple(err["loc"])), msg


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(str(p), None, "file not found")
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), None, f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), None, f"malformed YAML: {where}{problem}") from exc


def parse_model(model: type[M], data: Any, source: str, prefix: str = "") -> M:
    """Validate `data` as `model`; errors name `source` and the field (under `prefix`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or None, f"expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, msg = validation_message(exc)
        if prefix:
            field = prefix if field == "(top level)" else f"{prefix}.{field}"
        raise ConfigError(source, field, msg) from exc


def load_model(model: type[M], path: str | Path) -> M:
    return parse_model(model, read_yaml(path), str(path))
