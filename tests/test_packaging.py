"""Every package the code imports is declared in pyproject.toml (its dependencies, the engine
extras, or the dev tools for tests and benchmarks), as the installed package's metadata has
them (scripts/setup.sh installs the project afresh each time)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = {"autotune", "bench", "scripts", "tests"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Every requirement of the project, extras included."""
    reqs = importlib.metadata.requires("vllm-autotune") or []
    return {canonical(re.split(r"[\s<>=!~\[;(]", r, maxsplit=1)[0]) for r in reqs}


def imported(paths: list[Path]) -> dict[str, Path]:
    """Top-level modules imported anywhere in `paths`, absolute imports only."""
    out: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                out.setdefault(name.split(".")[0], path)
    return out


def test_every_imported_package_is_declared() -> None:
    files = [p for d in sorted(OWN) for p in (ROOT / d).rglob("*.py")
             if "no_vllm" not in p.parts]
    modules = imported(files)
    assert {"aiohttp", "numpy", "optuna", "vllm"} <= set(modules)  # the scan sees imports
    dists = importlib.metadata.packages_distributions()
    have = declared()
    missing = []
    for module, where in sorted(modules.items()):
        if module in OWN or module in sys.stdlib_module_names or module == "__future__":
            continue
        if not any(canonical(d) in have for d in dists.get(module, [module])):
            missing.append(f"{module} (imported in {where.relative_to(ROOT)}; distribution "
                           f"{dists.get(module)})")
    assert missing == []


def test_the_installed_command_is_the_light_entry() -> None:
    """The `autotune` script pyproject.toml installs starts at autotune.cli.entry (which
    loads the rest where an interrupt is one line: tests/cli/test_interrupts.py)."""
    import subprocess

    script = Path(sys.executable).with_name("autotune")
    assert "from autotune.cli.entry import run" in script.read_text()
    run = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("autotune "), run.stdout + run.stderr
