"""Which third-party packages a wheel's start-up imports: its import graph, read with ast."""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# The modules a dense model's server reaches on a CUDA host: the API server, the engine core,
# the GPU worker and model runner, the CUDA platform, the model, its attention backend (FA on
# Hopper), the sampler and the dummy weight loader. Everything else vLLM loads by name on demand
# (other models, other backends, structured output, multimodal processors).
DENSE_ENTRIES: tuple[str, ...] = (
    "vllm.entrypoints.openai.api_server",
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.platforms.cuda",
    "vllm.model_executor.models.qwen3",
    "vllm.v1.attention.backends.flash_attn",
    "vllm.v1.sample.sampler",
    "vllm.model_executor.model_loader.dummy_loader",
)

IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass
class Graph:
    """What the closure of the entries imports: third-party top-level names, by how."""

    required: dict[str, str] = field(default_factory=dict)  # name -> first module importing it
    guarded: dict[str, str] = field(default_factory=dict)  # inside try/except ImportError
    lazy: dict[str, str] = field(default_factory=dict)  # inside a function: on demand
    modules: set[str] = field(default_factory=set)  # the package's modules reached
    missing_entries: list[str] = field(default_factory=list)


def module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _catches_import_error(node: ast.Try) -> bool:
    for h in node.handlers:
        if h.type is None:
            return True
        names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if any(isinstance(n, (ast.Name, ast.Attribute))
               and (n.id if isinstance(n, ast.Name) else n.attr) in IMPORT_ERRORS for n in names):
            return True
    return False


def _suppresses_import_error(node: ast.With) -> bool:
    for item in node.items:
        call = item.context_expr
        if isinstance(call, ast.Call) and ast.unparse(call.func).endswith("suppress") and any(
                ast.unparse(a).split(".")[-1] in IMPORT_ERRORS for a in call.args):
            return True
    return False


def imports_of(path: Path, module: str) -> list[tuple[str, str]]:
    """(absolute module name, how) for each import in `path`: how is "required" (runs when the
    module loads), "guarded" (under an `if`, in a try/except ImportError or a
    suppress(ImportError)) or "lazy" (inside a function). `if TYPE_CHECKING:` blocks are
    skipped. A name of `from X import name` comes as "X.name" with "?" after how: a module
    only if such a file exists."""
    tree = ast.parse(path.read_bytes(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, str]] = []

    def absolute(level: int, name: str | None) -> str:
        if not level:
            return name or ""
        base = package.split(".")
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, *([name] if name else [])])

    def visit(nodes: list[ast.stmt], how: str) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                out.extend((a.name, how) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = absolute(node.level, node.module)
                out.append((base, how))
                # `from pkg import sub` loads pkg.sub when it is a module
                out.extend((f"{base}.{a.name}", how + "?") for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, "lazy")
            elif isinstance(node, ast.ClassDef):
                visit(node.body, how)
            elif isinstance(node, ast.If):
                # a conditional import (a platform, an env var, a feature probe) is not one
                # every start-up runs; the else of `if TYPE_CHECKING:` is
                inner = "guarded" if how == "required" else how
                if not _is_type_checking(node.test):
                    visit(node.body, inner)
                visit(node.orelse, how if _is_type_checking(node.test) else inner)
            elif isinstance(node, ast.Try):
                inner = "guarded" if how == "required" and _catches_import_error(node) else how
                visit(node.body, inner)
                for h in node.handlers:
                    visit(h.body, inner)
                visit(node.orelse + node.finalbody, how)
            elif isinstance(node, ast.With):
                inner = "guarded" if how == "required" and _suppresses_import_error(node) else how
                visit(node.body, inner)
            elif isinstance(node, (ast.For, ast.While)):
                visit(node.body + node.orelse, how)

    visit(tree.body, "required")
    return out


def closure(root: Path, entries: tuple[str, ...] = DENSE_ENTRIES, package: str = "vllm"
            ) -> Graph:
    """Follow `package`'s own modules from `entries` through the imports that run when they
    load; record every third-party top-level name met on the way, by how it is imported."""
    g = Graph()
    queue: deque[str] = deque()
    for e in entries:
        if module_file(root, e) is None:
            g.missing_entries.append(e)
        else:
            queue.append(e)
    while queue:
        name = queue.popleft()
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            parent = ".".join(parts[:i])
            path = module_file(root, parent)
            if path is None or parent in g.modules:
                continue
            g.modules.add(parent)
            for target, how in imports_of(path, parent):
                maybe = how.endswith("?")
                how = how.rstrip("?")
                top = target.split(".")[0]
                if not top:
                    continue
                if top == package:
                    if how == "required" and module_file(root, target) is not None:
                        queue.append(target)
                    continue
                if maybe or top in sys.stdlib_module_names or top == "__future__":
                    continue
                bucket = {"required": g.required, "guarded": g.guarded, "lazy": g.lazy}[how]
                bucket.setdefault(top, parent)
    # a name the start-up needs anyway is not also "guarded" or "lazy"
    for name in g.required:
        g.guarded.pop(name, None)
        g.lazy.pop(name, None)
    for name in g.guarded:
        g.lazy.pop(name, None)
    return g


def guarded_everywhere(root: Path, module: str, package: str = "vllm") -> tuple[bool, list[str]]:
    """Whether every import of `module` in the package's source is guarded (try/except
    ImportError, suppress(ImportError)) or lazy: a compiled part that may then be left out.
    Returns (that, the places of unguarded imports)."""
    bad: list[str] = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        try:
            found = imports_of(path, name)
        except SyntaxError:
            continue
        for target, how in found:
            if target == module and how.rstrip("?") == "required":
                bad.append(str(path.relative_to(root)))
    return not bad, bad
