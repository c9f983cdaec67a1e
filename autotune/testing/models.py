"""A second generated model for tests: the built-in shape with a tokenizer trained on other
text, so the built-in word list splits into several tokens a word ("N words" is not "N
tokens" for it)."""

from __future__ import annotations

import random
import string
from pathlib import Path

from autotune.model.builtin import write_qwen3_model


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


def make_fixed_weights_model(out: Path, seed: int = 0) -> Path:
    """The built-in model's shape and tokenizer with fixed random weights saved as
    safetensors (not `load-format: dummy`), so two settings see the same weights: what a check
    that compares the outputs of two settings needs."""
    if (out / "model.safetensors").exists():
        return out
    import shutil

    import torch
    from transformers import AutoConfig, Qwen3ForCausalLM

    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    src = ensure_builtin_model(TINY_QWEN3)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(AutoConfig.from_pretrained(str(src)))  # type: ignore[no-untyped-call]
    model.save_pretrained(str(out), safe_serialization=True)
    # save_pretrained rewrites config.json: keep the built-in one (architectures, dtype)
    shutil.copy2(src / "config.json", out / "config.json")
    return out
