"""`autotune validate`: check a file as a search space, workload or profile; start nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune.config import read_text, read_yaml
from autotune.profile import META_BEGIN, read_profile
from autotune.space import SearchSpace, load_space
from autotune.workload import load_workload


def validate_files(paths: Sequence[Path], verify_options: bool = True) -> list[str]:
    """What each file is; raise ConfigError (file and field) for the first that is not valid.

    The search spaces' vLLM options are also checked against the installed vLLM's parser, as
    `autotune run` does before it starts anything (all files in one child process)."""
    kinds: list[str] = []
    options: list[tuple[dict[str, list[Any]], str]] = []
    for path in paths:
        kind, values = _validate(path)
        kinds.append(kind)
        if values is not None:
            options.append((values, str(path)))
    if verify_options:
        from autotune.vllm_args import check_option_sets

        check_option_sets(options)
    return kinds


def _validate(path: Path) -> tuple[str, dict[str, list[Any]] | None]:
    """The file's kind and, for a search space, the option values to put to vLLM's parser."""
    data = read_yaml(path)
    if META_BEGIN in read_text(path):
        read_profile(path)
        return "profile", None
    if isinstance(data, dict) and "name" in data:
        space = load_space(path)
        from autotune.inputs import check_fractions, option_values

        check_fractions(space, str(path))
        if space.sampler.name == "grid":
            from autotune.samplers import grid_of

            grid_of(space, str(path))
        _check_context(space, path)
        return "search space", {k: list(v) for k, v in option_values(space, {}).items()}
    load_workload(path)
    return "workload", None


def _check_context(space: SearchSpace, path: Path) -> None:
    """What `run` refuses before a start, without a model: requests longer than the space's
    own max-model-len allows. A synthetic workload's lengths are declared, so the longest
    request needs no model's tokenizer (the texts planned with a stand-in are never sent); a
    dataset's prompts are counted by the model's tokenizer, and `run` checks them."""
    if space.workload.dataset is not None or "max-model-len" not in space.args:
        return
    from autotune.inputs import check_context
    from autotune.plan import Plan
    from autotune.testing.fake_tokenizer import WordTokenizer

    check_context(space, None, Plan(space.workload, WordTokenizer()), str(path), "workload")
