"""Environment variable names checked against the installed vLLM's own list (`vllm/envs.py`),
read as source text rather than imported: importing `vllm.envs` imports vLLM and torch (14-17 s
on a 2-core host), parsing the file takes about 0.1 s."""

from __future__ import annotations

import ast
import difflib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autotune.engine.vllm_args import CHECKED_VLLM

# Only these names are checked: vLLM reads every variable of its own from `vllm/envs.py`, and
# warns of any other VLLM_ name it finds ("Unknown vLLM environment variable detected",
# Platform.validate_environ; `--fail-on-environ-validation` refuses it). Others (OMP_*,
# CUDA_*, HF_*, TORCH*, ...) belong to other libraries, which keep no list to check against.
VLLM_ENV_PREFIX = "VLLM_"


@dataclass(frozen=True)
class EnvNames:
    """The environment variables the installed vLLM reads, or why they are not known."""

    names: frozenset[str] | None
    why_not: str = ""


def env_names() -> EnvNames:
    """The keys of `environment_variables` in the installed vLLM's `vllm/envs.py`, read from
    its source: found where `import vllm` would find it, without importing it."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):  # hidden (None in sys.modules), or a broken install
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return EnvNames(None, "vLLM is not installed in this Python")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "envs.py"
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.AnnAssign):
                target: ast.expr = node.target
                value = node.value
            elif isinstance(node, ast.Assign):
                target, value = node.targets[0], node.value
            else:
                continue
            if (isinstance(target, ast.Name) and target.id == "environment_variables"
                    and isinstance(value, ast.Dict)):
                return EnvNames(frozenset(k.value for k in value.keys if isinstance(
                    k, ast.Constant) and isinstance(k.value, str)))
    return EnvNames(None, "the installed vLLM has no readable vllm/envs.py with its "
                          f"environment_variables (autotune was checked against vLLM "
                          f"{CHECKED_VLLM})")


def env_problems(names: Iterable[str], known: frozenset[str]) -> dict[str, str]:
    """{name: problem} for each VLLM_ name (in any case) that vLLM does not read."""
    out: dict[str, str] = {}
    for name in names:
        if not name.upper().startswith(VLLM_ENV_PREFIX) or name in known:
            continue
        # upper-cased: a lower-case spelling of a real name gets that name as its hint
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out[name] = f"unknown vLLM environment variable{hint}: vLLM reads only those listed " \
                    "in its vllm/envs.py"
    return out


__all__ = ["VLLM_ENV_PREFIX", "EnvNames", "env_names", "env_problems"]
