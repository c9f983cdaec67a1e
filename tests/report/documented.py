"""The JSON schemas docs/json.md documents, read back from the page, and a command's output
checked against them (helpers for the tests; no test here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from autotune.app.schema import SCHEMAS

DOC = Path(__file__).resolve().parents[2] / "docs" / "json.md"


def documented() -> dict[str, Any]:
    """Each command's schema as the page prints it: `<!-- schema: NAME -->` then a json block."""
    text = DOC.read_text(encoding="utf-8")
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r"<!-- schema: (\w+) -->\s*```json\n(.*?)\n```", text, flags=re.S)}


def shape(node: Any) -> Any:
    """What a schema says of the data (keys, types, which are required), without what pydantic
    releases word differently (titles, descriptions, the order of `required`, an
    `additionalProperties: true` that is the default anyway)."""
    if isinstance(node, list):
        return [shape(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: shape(v) for k, v in node.items()
           if k not in ("title", "description", "default", "required", "examples")
           and not (k == "additionalProperties" and v is True)}  # JSON Schema's default
    if "required" in node:
        out["required"] = sorted(node["required"])
    return out


def check_documented(command: str, doc: object) -> None:
    """`doc` is what the page documents for `command`: the page's schema is the code's, and
    the code's model reads `doc` with no key unknown or missing, every figure a number."""
    assert shape(documented()[command]) == shape(SCHEMAS[command].model_json_schema()), (
        f"docs/json.md's schema of {command} is not the code's: regenerate it "
        "(python -m autotune.app.schema)")
    SCHEMAS[command].model_validate_json(json.dumps(doc), strict=True)
