"""Resolve `--model` to what vLLM loads, failing early (one line) when it cannot exist."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError
from autotune.model.builtin import BUILTIN_PREFIX, ensure_builtin_model, is_builtin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user gave it; names the profile
    path: str  # what vLLM's --model gets
    args: dict[str, Any] = field(default_factory=dict)  # options the model needs


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def resolve_model(model: str) -> ResolvedModel:
    if is_builtin(model):
        path = ensure_builtin_model(model[len(BUILTIN_PREFIX):])
        # Random weights: nothing to download, and the shape is all the engine needs.
        return ResolvedModel(model, str(path), {"load-format": "dummy"})
    if _looks_local(model):
        p = Path(model).expanduser()
        if not (p / "config.json").is_file():
            raise UserError(f"--model: {model!r} is not a model directory (no config.json)")
        return ResolvedModel(model, str(p.resolve()))
    _check_hub(model)
    return ResolvedModel(model, model)


# What vLLM loads weights from (safetensors, PyTorch bins, GGUF, their shard indexes).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf",
                   "*.safetensors.index.json", "*.bin.index.json")


def check_weights(model: ResolvedModel, load_format: object) -> None:
    """A local model directory must hold weights unless every candidate loads dummy ones:
    without them every start-up fails alike, whatever the settings."""
    if load_format == "dummy" or model.args.get("load-format") == "dummy":
        return
    p = Path(model.path)
    if not p.is_dir():
        return  # a hub id: vLLM downloads the weights
    if not any(next(p.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise UserError(f"--model: {model.name!r} has no weights ({', '.join(WEIGHT_PATTERNS[:5])})"
                        "; add them, or set `load-format: dummy` in the space to measure "
                        "random weights")


# The hub check's wait: an answer, or the hub's absence, in seconds. Without it a missing hub
# is found by the tokenizer's download, which retries each file for about 50 s.
HUB_TIMEOUT_S = 5.0
OFFLINE_HINT = ("give a local model directory, or set HF_HUB_OFFLINE=1 with the model in the "
                "Hugging Face cache")


def _offline() -> bool:
    """huggingface_hub's own offline switch (read now: it reads it once, at import)."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _check_hub(repo: str) -> None:
    """A hub id must be cached or exist on the hub. A hub that gives no answer (offline, DNS,
    refused, timed out) with nothing cached stops the run at once: nothing could load the
    model. A hub that answers otherwise (5xx, 429, ...) is only a warning."""
    try:
        import huggingface_hub as hf
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            HFValidationError,
            RepositoryNotFoundError,
        )
    except ImportError:
        return
    try:
        cached = hf.try_to_load_from_cache(repo, "config.json")
    except HFValidationError as exc:
        raise UserError(f"--model: {repo!r} is neither a model directory nor a hub id") from exc
    if isinstance(cached, str):
        return
    if _offline():
        raise UserError(f"--model: {repo!r} is not in the local cache and HF_HUB_OFFLINE is "
                        "set; give a local model directory, or download the model into the "
                        "cache first")
    try:
        hf.model_info(repo, timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise UserError(f"--model: {repo!r}: {type(exc).__name__} on the model hub") from exc
    except HfHubHTTPError as exc:  # the hub answered, but not with the model's details
        if getattr(exc.response, "status_code", 0) == 404:
            raise UserError(f"--model: {repo!r} not found on the model hub") from exc
        log.warning("could not check %r on the model hub (%s); trying anyway", repo,
                    type(exc).__name__)
    except Exception as exc:  # no answer at all: offline, DNS, refused, timed out
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--model: {repo!r} is not in the local cache and the model hub "
                        f"({constants.ENDPOINT}) cannot be reached ({why}); "
                        f"{OFFLINE_HINT}") from exc
