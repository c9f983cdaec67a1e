"""Load YAML into pydantic models; every problem becomes one line naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from autotune.core.errors import ConfigError

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


# A search space, workload or profile is a page of YAML; anything far larger is not one.
MAX_CONFIG_BYTES = 4 * 2**20
MAX_DATASET_BYTES = 2 * 2**30
MAX_ALIASES = 100  # anchors reused more often than this are a "billion laughs", not a config
MAX_DEPTH = 100


def read_text(path: str | Path, what: str = "", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """A file's UTF-8 text, or ConfigError naming the file: missing, unreadable, too large,
    not UTF-8."""
    p = Path(path)
    try:
        if not p.exists():
            raise ConfigError(str(p), None, f"{what}file not found")
        if p.is_dir():
            raise ConfigError(str(p), None, f"{what}is a directory, not a file")
        size = p.stat().st_size
        if size > max_bytes:
            raise ConfigError(str(p), None, f"{what}too large: {size / 2**20:.1f} MiB "
                              f"(at most {max_bytes / 2**20:.0f} MiB)")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), None, f"{what}cannot read: {exc.strerror}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), None, f"{what}not UTF-8 text (byte 0x{data[exc.start]:02x} "
                          f"at offset {exc.start})") from exc


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses keys given twice, alias bombs and nesting deep enough to
    exhaust the stack."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # a key given twice would silently keep the last value: refuse it, naming the line
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key.value!r} given twice", key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, source: str, field: str | None = None) -> Any:
    """The one YAML document in `text`; ConfigError naming `source` (and `field`) if not."""
    try:
        loader = _Loader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, field, f"malformed YAML: {where}{problem}") from exc
    except RecursionError as exc:  # deep flow collections recurse in the scanner too
        raise ConfigError(source, field, "malformed YAML: nested too deeply") from exc
    return data


def read_yaml(path: str | Path) -> Any:
    """The one YAML document in a file; ConfigError naming the file for anything else."""
    data = parse_yaml(read_text(path), str(path))
    if data is None:
        raise ConfigError(str(path), None, "empty: expected a YAML mapping")
    return data


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
