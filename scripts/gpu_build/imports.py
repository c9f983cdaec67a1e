"""d. modules: every vLLM module (and name) autotune imports or launches, looked up in the wheel."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from scripts.gpu_build.common import REPO, Report, rel


def _is_vllm(module: str | None) -> bool:
    return bool(module) and str(module).split(".")[0] == "vllm"


def _alternatives(tree: ast.AST) -> dict[tuple[int, str], tuple[str, ...]]:
    """`try: from A import x` / `except ImportError: from B import x`: for each such import
    of a name (by the import node's id and the name), every module the name is tried from, in
    order (one of them is enough). A name imported from one place only has no entry."""
    out: dict[tuple[int, str], tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        tried = [n for n in node.body if isinstance(n, ast.ImportFrom)]
        for h in node.handlers:
            tried += [n for n in h.body if isinstance(n, ast.ImportFrom)]
        by_name: dict[str, list[ast.ImportFrom]] = {}
        for n in tried:
            if n.level == 0 and _is_vllm(n.module):
                for a in n.names:
                    by_name.setdefault(a.name, []).append(n)
        for name, group in by_name.items():
            if len(group) > 1:
                for n in group:
                    out[(id(n), name)] = tuple(str(g.module) for g in group)
    return out


def vllm_imports() -> list[tuple[tuple[str, ...], str | None, str]]:
    """(modules, name or None, where) for every vLLM module autotune's source imports or names
    as a string (a `-m` launch): the internals it relies on. An import tried from several
    modules in turn (one per vLLM release) lists them all, once: a `try`/`except ImportError`
    pair, or the places autotune.engine.vllm_args looks for the serve parser in
    (`PARSER_MODULES`, the list itself: its strings are not `-m` launches)."""
    from autotune.engine.vllm_args import PARSER_MODULES

    out: list[tuple[tuple[str, ...], str | None, str]] = []
    for path in sorted((REPO / "autotune").rglob("*.py")):
        tree = ast.parse(path.read_text())
        alternatives = _alternatives(tree)
        seen: set[tuple[tuple[str, ...], str]] = set()
        for node in ast.walk(tree):
            at = f"{rel(path)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "PARSER_MODULES" for t in node.targets):
                out.append((PARSER_MODULES, "make_arg_parser", at))
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_vllm(node.module):
                for a in node.names:
                    modules = alternatives.get((id(node), a.name), (str(node.module),))
                    if (modules, a.name) not in seen:
                        seen.add((modules, a.name))
                        out.append((modules, a.name, at))
            elif isinstance(node, ast.Import):
                out += [((a.name,), None, at) for a in node.names if _is_vllm(a.name)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"vllm(?:\.\w+)+", node.value) \
                    and node.value not in PARSER_MODULES:
                out.append(((node.value,), None, at))
    return out


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()),
                None)


def top_level_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level (`__getattr__`: anything)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(errors="replace")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def defined_in(root: Path, name: str) -> list[str]:
    """The wheel's modules that define `name` (def or class) at top level: where it went."""
    out = []
    for path in sorted((root / "vllm").rglob("*.py")):
        text = path.read_text(errors="replace")
        if re.search(rf"^(?:def|class) {re.escape(name)}\b", text, re.MULTILINE):
            out.append(".".join(path.relative_to(root).with_suffix("").parts))
    return out


def _has(root: Path, module: str, name: str | None) -> Path | None:
    """The wheel's file for `module`, if it has it and (when given) defines `name` there."""
    path = module_file(root, module)
    if path is None or name is None:
        return path
    names = top_level_names(path)
    if name in names or "__getattr__" in names or module_file(root, f"{module}.{name}"):
        return path
    return None


def check_imports(root: Path, report: Report, verbose: bool) -> None:
    for modules, name, at in vllm_imports():
        shown = " or ".join(f"{m}.{name}" if name else m for m in modules)
        found = next(((m, p) for m in modules if (p := _has(root, m, name)) is not None), None)
        if found is not None:
            report.ok(f"{shown} (used at {at}): {found[1].relative_to(root)}", verbose)
            continue
        moved = defined_in(root, name) if name else []
        hint = f"; {name} is now in {', '.join(moved)}" if moved else ""
        if name is None or all(module_file(root, m) is None for m in modules):
            report.bad(f"vLLM module NOT FOUND: {' or '.join(modules)} (autotune uses {shown} "
                       f"at {at}){hint}")
        else:
            report.bad(f"{name} NOT FOUND in {' or '.join(modules)} (autotune uses it at "
                       f"{at}){hint}")
