"""Options are checked against the installed vLLM's own parser (no server started)."""

from __future__ import annotations

import argparse

import pytest

from autotune.errors import ConfigError
from autotune.vllm_args import _parser, check_options, problems


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return _parser()


def test_good_options(parser: argparse.ArgumentParser) -> None:
    assert problems(parser, {
        "max-num-seqs": [1, 256], "enforce-eager": [True, False],
        "dtype": ["bfloat16", "float32"], "gpu-memory-utilization": [0.3, 0.9],
        "max-num-batched-tokens": [512, 4096], "load-format": ["dummy"],
    }) == {}


@pytest.mark.parametrize(("options", "problem"), [
    ({"max-num-seqz": [4]}, "unknown vLLM option (did you mean 'max-num-seqs'?)"),
    ({"dtype": ["bf17"]}, "invalid value 'bf17' (choose from"),
    ({"max-num-seqs": ["many"]}, "invalid value 'many'"),
    ({"enforce-eager": [1]}, "is a switch"),
    ({"max-num-seqs": [True]}, "takes a value"),
])
def test_bad_options(parser: argparse.ArgumentParser, options: dict[str, list[object]],
                     problem: str) -> None:
    found = problems(parser, options)
    (name,) = options
    assert problem in found[name]


def test_check_options_raises_one_line_naming_file_and_field() -> None:
    with pytest.raises(ConfigError) as e:
        check_options({"max-num-seqs": [4], "max-num-seqz": [4]}, "space.yaml")
    assert str(e.value) == ("space.yaml: args.max-num-seqz: unknown vLLM option "
                            "(did you mean 'max-num-seqs'?)")
