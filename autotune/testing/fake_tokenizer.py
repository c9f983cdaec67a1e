"""The stand-in server's tokenizer: one token per whitespace-separated word."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class WordTokenizer:
    """Satisfies `autotune.model.tokens.Tokenizer` and counts as `autotune.testing.fake_vllm` does:
    a prompt's words, or for chat the words of every message's content."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        out = []
        for w in text.split():
            if w not in self._ids:
                self._ids[w] = len(self._words)
                self._words.append(w)
            out.append(self._ids[w])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._words[i] for i in ids)

    def prompt_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_prompt_tokens(self, messages: Sequence[Mapping[str, str]],
                           template_kwargs: Mapping[str, Any]) -> int | None:
        return sum(len(str(m.get("content", "")).split()) for m in messages)
