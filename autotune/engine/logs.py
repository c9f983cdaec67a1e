"""What a server's log says: why a start failed, what KV cache it reserved. Every regex
autotune matches in vLLM's logs lives here."""

from __future__ import annotations

import os
import re
from pathlib import Path

from autotune.core.errors import FailureReason

# What the server log says when a start fails, most specific first.
_FAILURE_PATTERNS: tuple[tuple[FailureReason, re.Pattern[str]], ...] = (
    (FailureReason.INVALID_ARGS, re.compile(
        r"unrecognized arguments|error: argument|invalid choice|ValidationError|"
        r"Value error,|is not a valid|must be (?:less|greater|at least|at most)", re.I)),
    (FailureReason.OOM_AT_STARTUP, re.compile(
        r"out of memory|OutOfMemoryError|is less than desired CPU memory utilization|"
        r"No available memory for the cache blocks|Cannot allocate memory|"
        r"larger than the available KV cache memory|insufficient memory|"
        r"Free memory on device .* is less than desired GPU memory utilization", re.I)),
)


# The engine died during start-up; the API server process may linger, silent, until its
# deadline (seen with vLLM 0.32): read it from the log at once.
_ENGINE_DEAD = re.compile(r"Engine core initialization failed|EngineCore failed to start|"
                          r"Engine process failed to start")

# Messages that mean a start-up is lost even if the process has not exited yet.
_FATAL_OOM = re.compile(
    r"is less than desired (?:CPU|GPU) memory utilization|torch\.OutOfMemoryError|"
    r"CUDA out of memory|No available memory for the cache blocks")


# Start-up failures that no setting can change: every candidate would fail alike.
_SETUP_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cannot find any model weights|No model weights found|"
                r"does not appear to have (?:a )?files? named (\S*(?:safetensors|\.bin)\S*)"),
     "the model has no weights"),
    (re.compile(r"(?:Can't load tokenizer|tokenizer(?:\.json)? (?:was )?not found|"
                r"does not appear to have a file named (\S*tokenizer\S*))", re.I),
     "the model's tokenizer cannot be loaded"),
    (re.compile(r"does not appear to have a file named (\S*config\.json)"),
     "the model has no config.json"),
    (re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'"),
     "the engine's Python lacks a module"),
    (re.compile(r"ImportError: (.{0,120})|undefined symbol: (\S+)"),
     "the engine install is broken"),
)


def setup_failure_cause(log_text: str) -> str | None:
    """Why a start-up failed, when the cause is the model or the install, not the settings."""
    for pattern, cause in _SETUP_CAUSES:
        m = pattern.search(log_text)
        if m:
            detail = next((g for g in m.groups() if g), None)
            return f"{cause} ({detail.strip()})" if detail else cause
    return None


def classify_startup_failure(log_text: str) -> FailureReason:
    for reason, pattern in _FAILURE_PATTERNS:
        if pattern.search(log_text):
            return reason
    return FailureReason.STARTUP_CRASH


_KV_TOKENS = re.compile(r"(?:GPU|CPU) KV cache size: ([\d,]+) tokens")


def kv_cache_tokens(log_text: str) -> int | None:
    m = _KV_TOKENS.search(log_text)
    return int(m.group(1).replace(",", "")) if m else None


# The memory vLLM reserved for the KV cache: "Available KV cache memory: 12.34 GiB" (GPU),
# "Auto set (2.52/11.21) GiB for KV cache on node 0" or "Explicitly set (1.0/13.09) GiB ..."
# (CPU, VLLM_CPU_KVCACHE_SPACE unset or set; one line per NUMA node).
_KV_GPU = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_KV_CPU = re.compile(r"(?:Auto|Explicitly) set \(([\d.]+)/[\d.]+\) GiB for KV cache on node (\d+)")


def kv_cache_bytes(log_text: str) -> int | None:
    gpu = _KV_GPU.findall(log_text)
    if gpu:
        return int(float(gpu[-1]) * 2**30)
    nodes = {node: float(gib) for gib, node in _KV_CPU.findall(log_text)}
    return int(sum(nodes.values()) * 2**30) if nodes else None


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
_PORT_TAKEN = re.compile(r"address already in use|Errno 98\b", re.I)
