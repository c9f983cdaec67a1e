"""b. strings, autotune's side: every alternative of the log regexes autotune matches, and the
/metrics names it reads."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import re._parser as sre_parse
else:  # pragma: no cover
    import sre_parse

if TYPE_CHECKING:
    pass

from scripts.gpu_build.common import REPO, rel

GAP = None  # a stretch of text that a regex leaves open


HOLE = "\x00"  # a format argument in a source template


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.(?:\d+|\*))?[sdifrxXeEgGcaou%]")


_BRACES = re.compile(r"\{[^{}]*\}")


_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Variant:
    """One literal shape of one alternative of one of autotune's regexes."""

    where: str  # where autotune keeps the regex, e.g. engine.logs._FATAL_OOM
    tokens: tuple[str | None, ...]  # characters, GAP where the regex leaves the text open
    ignorecase: bool

    @property
    def shown(self) -> str:
        out: list[str] = []
        for t in self.tokens:
            if t is GAP:
                if not out or out[-1] != "…":
                    out.append("…")
            else:
                out.append(t)
        return "".join(out)

    @property
    def pieces(self) -> list[str]:
        """The literal runs, in order."""
        return [p for p in "".join(HOLE if t is GAP else t for t in self.tokens).split(HOLE)
                if p]


def _expand(seq: Any, limit: int = 64) -> list[list[str | None]]:
    """The literal shapes a parsed regex can take: branches and groups expanded, anything
    else that matches text (classes, repeats, `.`) a GAP."""
    out: list[list[str | None]] = [[]]
    for op, av in seq:
        if op is sre_parse.LITERAL:
            alts: list[list[str | None]] = [[chr(av)]]
        elif op is sre_parse.SUBPATTERN:
            alts = _expand(av[-1], limit)
        elif op is sre_parse.BRANCH:
            alts = [x for item in av[1] for x in _expand(item, limit)]
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT) and av[0] == av[1] == 1:
            alts = _expand(av[2], limit)
        elif op in (sre_parse.AT, sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            continue  # zero width
        else:
            alts = [[GAP]]
        out = [a + b for a in out for b in alts][:limit]
    return out


def log_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """Every regex autotune.engine.logs keeps at module level (the patterns it reads server
    logs with), named where it is kept: `engine.logs._FAILURE_PATTERNS[oom_at_startup]`."""
    import autotune.engine.logs as logs

    out: list[tuple[str, re.Pattern[str]]] = []
    for name, value in sorted(vars(logs).items()):
        if isinstance(value, re.Pattern):
            out.append((f"engine.logs.{name}", value))
        elif isinstance(value, (tuple, list)):
            for item in value:
                parts = item if isinstance(item, tuple) else (item,)
                pats = [p for p in parts if isinstance(p, re.Pattern)]
                label = next((str(getattr(p, "value", p)) for p in parts
                              if not isinstance(p, re.Pattern)), "")
                out += [(f"engine.logs.{name}[{label}]" if label else f"engine.logs.{name}", p)
                        for p in pats]
    return out


def variants() -> list[Variant]:
    out = []
    for where, pattern in log_patterns():
        for tokens in _expand(sre_parse.parse(pattern.pattern, pattern.flags)):
            out.append(Variant(where, tuple(tokens), bool(pattern.flags & re.IGNORECASE)))
    return out


def metric_names() -> list[tuple[str, str]]:
    """The /metrics names autotune reads: every "vllm:..." string in its source, with where."""
    out: dict[str, str] = {}
    for path in sorted((REPO / "autotune").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"vllm:[a-z0-9_]+", node.value):
                out.setdefault(node.value, f"{rel(path)}:{node.lineno}")
    return sorted(out.items())
