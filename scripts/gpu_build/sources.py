"""b. strings, the wheel's side: its string literals, f-strings and %-formats read with `ast`, and
each alternative found in them (or not)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune.space.search import SearchSpace

from scripts.gpu_build.common import CPU_ONLY, NOT_IN_BASELINE, NOT_VLLM, Report
from scripts.gpu_build.patterns import (
    _BRACES,
    _PERCENT,
    _WORD,
    HOLE,
    Variant,
    metric_names,
    variants,
)


@dataclass(frozen=True)
class Template:
    """A string the wheel's code builds, format arguments as HOLE."""

    where: str  # file:line in the wheel
    text: str
    folded: str


def templates(root: Path) -> list[Template]:
    """Every string literal, f-string and string concatenation in the wheel's Python source
    (docstrings left out), %-formats and .format() fields as HOLE."""
    out: list[Template] = []
    for path in sorted((root / "vllm").rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        name = str(path.relative_to(root))
        skip: set[int] = set()
        fmt: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant,
                                                                       ast.JoinedStr)):
                skip.add(id(node.value))  # a docstring or a bare string: not output
            elif isinstance(node, ast.JoinedStr):
                skip.update(id(v) for v in node.values)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
                fmt.add(id(node.func.value))
        for node in ast.walk(tree):
            text = None
            if id(node) in skip:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = _BRACES.sub(HOLE, node.value) if id(node) in fmt else node.value
            elif isinstance(node, ast.JoinedStr):
                text = _joined(node)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                parts = _added(node)
                if any(p != HOLE for p in parts):
                    text = "".join(parts)
            if text is not None and len(text) >= 4:
                text = _PERCENT.sub(HOLE, text)
                out.append(Template(f"{name}:{getattr(node, 'lineno', 0)}", text,
                                    text.casefold()))
    return out


def _joined(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else HOLE
                   for v in node.values)


def _added(node: ast.expr) -> list[str]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _added(node.left) + _added(node.right)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [_joined(node)]
    return [HOLE]


def _place(piece: str, text: str, start: int, head: bool, tail: bool
           ) -> tuple[int, str] | None:
    """Where `piece` ends in `text` from `start`, and what of it a format argument stands for:
    at the start (`head`) or end (`tail`) of the regex's text, up to a third of a piece may be
    a HOLE in the template ("GPU" in "%s KV cache size")."""
    i = text.find(piece, start)
    if i >= 0:
        return i + len(piece), ""
    n = len(piece)
    most = n // 3
    for h in range(most + 1 if head else 1):
        for k in range(most - h + 1 if tail else 1):
            core = piece[h:n - k]
            if (h == 0 and k == 0) or len(core) < 4:
                continue
            j = text.find((HOLE if h else "") + core + (HOLE if k else ""), start)
            if j >= 0:
                cut = [x for x in (piece[:h], piece[n - k:] if k else "") if x]
                return j + (1 if h else 0) + len(core), " and ".join(map(repr, cut))
    return None


def _matches(v: Variant, t: Template) -> str | None:
    """None where the template cannot print the variant; else what format arguments stand
    for ("" when the variant is there verbatim)."""
    pieces = [p.casefold() for p in v.pieces] if v.ignorecase else v.pieces
    text = t.folded if v.ignorecase else t.text
    pos, cut = 0, []
    for i, piece in enumerate(pieces):
        placed = _place(piece, text, pos, i == 0, i == len(pieces) - 1)
        if placed is None:
            return None
        pos = placed[0]
        if placed[1]:
            cut.append(placed[1])
    return ", ".join(cut)


def _key(v: Variant) -> str:
    """A part of the variant every match holds verbatim: the longest word of the middle
    third of its longest piece (no format argument reaches there)."""
    piece = max(v.pieces, key=len)
    n = len(piece)
    middle = piece[n // 3:n - n // 3] if n >= 6 else piece
    words = _WORD.findall(middle)
    key = max(words, key=len) if words and len(max(words, key=len)) >= 3 else middle
    return key.casefold() if v.ignorecase else key


def find(v: Variant, corpus: Sequence[Template]) -> list[tuple[Template, str]]:
    key = _key(v)
    hits = []
    for t in corpus:
        if key in (t.folded if v.ignorecase else t.text):
            cut = _matches(v, t)
            if cut is not None:
                hits.append((t, cut))
    return hits


def check_strings(root: Path, spaces: Sequence[tuple[Path, SearchSpace]], report: Report,
                  verbose: bool) -> None:
    corpus = templates(root)
    counts = {"found": 0, "cpu_only": 0, "not_vllm": 0, "not_in_baseline": 0}
    for v in variants():
        hits = find(v, corpus)
        where = ""
        if hits:
            t, cut = hits[0]
            more = f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""
            note = f" ({cut} is a format argument there)" if cut else ""
            where = f"{t.where}{more}{note}"
        shown = f"{v.shown!r:<60} {v.where}"
        if v.shown in NOT_VLLM:
            counts["not_vllm"] += 1
            if verbose:
                also = f"; in vLLM too: {where}" if where else ""
                print(f"    elsewhere  {shown}: {NOT_VLLM[v.shown]}{also}")
        elif v.shown in CPU_ONLY:
            counts["cpu_only"] += 1
            if where:
                report.ok(f"{shown}: {where} (CPU only)", verbose)
            else:
                report.note(f"CPU-only log text not in the wheel: {v.shown!r} ({v.where}; "
                            f"{CPU_ONLY[v.shown]}): not a GPU path", "cpu-only")
        elif v.shown in NOT_IN_BASELINE:
            counts["not_in_baseline"] += 1
            if where:
                report.note(f"{shown}: found {where}", "found")
            else:
                report.note(f"{shown}: not in vLLM ({NOT_IN_BASELINE[v.shown]}): matches "
                            "nothing vLLM prints", "absent")
        elif hits:
            counts["found"] += 1
            report.ok(f"{shown}: {where}", verbose)
        else:
            report.bad(f"log text NOT FOUND in the wheel's source: {v.shown!r} ({v.where})")
    print(f"    ok         {counts['found']} GPU-path log texts autotune matches found in the "
          f"wheel; {counts['cpu_only']} CPU-only; {counts['not_vllm']} are other programs' "
          f"words (not drift); {counts['not_in_baseline']} match nothing vLLM prints")
    report.facts["log_texts"] = counts
    names = {t.text: t.where for t in corpus}
    for name, used in metric_names():
        plain = name.removesuffix("_total")  # prometheus_client adds _total to a Counter
        at = names.get(name) or names.get(plain)
        if at:
            report.ok(f"metric {name} (read at {used}): {at}", verbose)
        else:
            report.bad(f"metric NOT FOUND in the wheel's source: {name} (read at {used})")
    from autotune.engine.argv import API_KEY_ENV

    env_names = sorted({k for _, s in spaces for k in s.env})
    envs = [t for t in corpus if t.where.startswith("vllm/envs.py:")]
    # the server's API key travels in this variable, never on its command line
    for name in [API_KEY_ENV, *env_names]:
        at = next((t.where for t in envs if t.text == name), None)
        if at:
            report.ok(f"env var {name}: {at}", verbose or name == API_KEY_ENV)
        else:
            report.bad(f"env var NOT FOUND in the wheel's vllm/envs.py: {name}")
    if not env_names:
        print("    ok         the GPU spaces set no env vars")
