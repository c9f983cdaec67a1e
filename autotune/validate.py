"""`autotune validate`: check a file as a search space, workload or profile; start nothing."""

from __future__ import annotations

from pathlib import Path

from autotune.config import read_text, read_yaml
from autotune.profile import META_BEGIN, read_profile
from autotune.space import load_space
from autotune.workload import load_workload


def validate_file(path: Path, verify_options: bool = True) -> str:
    """Return what the file is; raise ConfigError (file and field) when it is not valid.

    A search space's vLLM options are also checked against the installed vLLM's parser, as
    `autotune run` does before it starts anything."""
    data = read_yaml(path)
    if META_BEGIN in read_text(path):
        read_profile(path)
        return "profile"
    if isinstance(data, dict) and "name" in data:
        space = load_space(path)
        from autotune.inputs import check_fractions, option_values

        check_fractions(space, str(path))
        if space.sampler.name == "grid":
            from autotune.samplers import grid_of

            grid_of(space, str(path))
        if verify_options:
            from autotune.vllm_args import check_options

            check_options(option_values(space, {}), str(path))
        return "search space"
    load_workload(path)
    return "workload"
