"""A second generated model for tests: the built-in shape with a tokenizer trained on other
text, so the built-in word list splits into several tokens a word ("N words" is not "N
tokens" for it)."""

from __future__ import annotations

import random
import string
from pathlib import Path

from autotune.builtin_model import write_qwen3_model


def other_corpus(n_lines: int = 3000, seed: int = 1) -> list[str]:
    """Lines of random letter strings: a tokenizer trained on them learns short pieces."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7)))
                     for _ in range(rng.randint(5, 15))) for _ in range(n_lines)]


def make_other_tokenizer_model(out: Path) -> Path:
    """Write the model into `out` (once) and return it."""
    if not (out / "config.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        write_qwen3_model(out, other_corpus(), vocab_size=400)
    return out
