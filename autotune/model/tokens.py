"""The model's tokenizer, and prompts of exactly the declared number of tokens for it.

A synthetic prompt of `input_tokens: 512` must be 512 tokens for the model under test, not 512
words: other tokenizers split the same words into 2-3 tokens each. Prompts are built the way
vLLM's random dataset builds them: text, encoded, cut to the length, decoded, and re-encoded
until the count holds.

The fast `tokenizers` library reads `tokenizer.json` (quick to import); `transformers` is only
imported for models without one and to render chat templates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autotune.core.errors import UserError
from autotune.model.builtin import WORDS

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What planning needs of a tokenizer. Ids are opaque; counts are what the server sees."""

    def encode(self, text: str) -> list[int]:
        """Content tokens, without the special tokens the server adds."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def prompt_tokens(self, text: str) -> int:
        """How many tokens the server counts for this completions prompt."""
        ...

    def chat_prompt_tokens(self, messages: Sequence[Mapping[str, str]],
                           template_kwargs: Mapping[str, Any]) -> int | None:
        """How many tokens the server counts for this chat request (None: cannot tell)."""
        ...


def local_file(model: str, name: str) -> Path | None:
    """A file of the model's, from its directory or the local hub cache (None: not here)."""
    p = Path(model).expanduser()
    if p.is_dir():
        f = p / name
        return f if f.is_file() else None
    try:
        import huggingface_hub as hf

        cached = hf.try_to_load_from_cache(model, name)
    except Exception:  # not a hub id, or no hub library: nothing cached
        return None
    return Path(cached) if isinstance(cached, str) else None


class ModelTokenizer:
    """A model's own tokenizer, read from its directory or the local hub cache."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._fast: Any = None
        self._hf: Any = None
        path = local_file(model, "tokenizer.json")
        if path is not None:
            from tokenizers import Tokenizer as FastTokenizer

            self._fast = FastTokenizer.from_file(str(path))
        else:
            self._hf = self._load_hf()

    def _load_hf(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model)

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(list(ids), skip_special_tokens=False))
        return str(self._hf.decode(list(ids), skip_special_tokens=False))

    def prompt_tokens(self, text: str) -> int:
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=True).ids)
        return len(self._hf.encode(text, add_special_tokens=True))

    def chat_prompt_tokens(self, messages: Sequence[Mapping[str, str]],
                           template_kwargs: Mapping[str, Any]) -> int | None:
        if self._hf is None:
            self._hf = self._load_hf()
        if not getattr(self._hf, "chat_template", None):
            return None
        # vLLM renders the template to text and tokenizes it without adding special tokens
        text = self._hf.apply_chat_template(list(messages), add_generation_prompt=True,
                                            tokenize=False, **dict(template_kwargs))
        return len(self.encode(str(text)))


def load_tokenizer(model: str, flag: str = "--model") -> Tokenizer:
    """The model's tokenizer, or one line saying why it cannot be read (before any start)."""
    try:
        return ModelTokenizer(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{flag}: cannot read the tokenizer of {model!r}: {first}") from exc


def context_length(model: str) -> int | None:
    """The longest sequence the model's config allows (vLLM's default max-model-len), or None
    when the config cannot be read here."""
    path = local_file(model, "config.json")
    if path is None:
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        v = cfg.get(key)
        if isinstance(v, int) and v > 0:
            return v
    return None


def words(rng: np.random.Generator, n: int) -> str:
    idx = rng.integers(0, len(WORDS), size=max(0, n))
    return " ".join(WORDS[i] for i in idx)


def exact_text(tok: Tokenizer, rng: np.random.Generator, n_tokens: int, prefix: str = "") -> str:
    """Text of exactly `n_tokens` content tokens for `tok` that starts with `prefix` (itself
    exact for its own length), made of a fixed word list."""
    prefix_len = len(tok.encode(prefix)) if prefix else 0
    for _ in range(20):
        text = (prefix + " " if prefix else "") + words(rng, max(1, n_tokens - prefix_len))
        for _ in range(8):
            ids = tok.encode(text)
            if len(ids) == n_tokens:
                return text
            if len(ids) > n_tokens:
                text = tok.decode(ids[:n_tokens])
                if prefix and not text.startswith(prefix):
                    break
            else:
                text = text + " " + words(rng, n_tokens - len(ids))
    raise RuntimeError(f"could not build a prompt of exactly {n_tokens} tokens")
