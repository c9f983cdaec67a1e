"""Generate the built-in Qwen3-architecture models locally (no model hub needed)."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
TINY_QWEN3 = "tiny-qwen3"
QWEN3_0_6B = "qwen3-0.6b"
# Bump when the recipe changes, so a stale cached copy is never reused.
_RECIPE_VERSION = 1

# A fixed corpus: the tokenizer is trained on it and the workload builds prompts from it, so
# prompt lengths in tokens are stable across machines.
WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is that for it as with was on be by this are from or an at which not have
    server model token cache batch request latency memory throughput queue engine worker kernel
    prompt output input sequence prefill decode attention layer head block page tensor weight
    scheduler sampling stream chunk metric profile search trial study budget objective score
    fast slow small large first last next each every many few more less time rate load user
    system machine device node core thread process signal port health ready start stop wait
    value number count total mean median percentile peak limit range choice default fixed
    tune measure compare record report write read file path name field type error result
    river mountain forest ocean cloud stone garden window table letter music story paper
    north south east west morning evening summer winter bright quiet simple gentle steady
    """.split()
)


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_PREFIX)


def cache_root() -> Path:
    env = os.environ.get("AUTOTUNE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autotune"


def builtin_model_dir(name: str) -> Path:
    return cache_root() / "models" / f"{name}-v{_RECIPE_VERSION}"


def corpus_text(n_sentences: int = 4000, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        n = rng.randint(6, 18)
        lines.append(" ".join(rng.choice(WORDS) for _ in range(n)) + ".")
    return "\n".join(lines)


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ensure_builtin_model(name: str) -> Path:
    """Return the directory of built-in model `name`, generating it once if needed.

    Generation is atomic (temporary directory, then rename), so concurrent workers and
    interrupted runs never see a half-written model.
    """
    if name not in SHAPES:
        from autotune.core.errors import UserError

        known = ", ".join(BUILTIN_PREFIX + k for k in SHAPES)
        raise UserError(f"--model: unknown built-in model {name!r} (known: {known})")
    target = builtin_model_dir(name)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        write_qwen3_model(tmp, corpus_text().splitlines(), shape=SHAPES[name])
        try:
            os.rename(tmp, target)
        except OSError:
            # Another worker won the race; its copy is identical.
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated built-in model %s at %s", name, target)
    return target


# The built-in model's shape (`shape` below overrides any of it)
TINY_SHAPE: dict[str, Any] = {"hidden_size": 256, "intermediate_size": 512,
                              "num_hidden_layers": 4, "num_attention_heads": 4,
                              "num_key_value_heads": 2, "head_dim": 64,
                              "max_position_embeddings": 4096}
# Qwen3-0.6B's own config.json (Qwen/Qwen3-0.6B on the hub): what sets its serving cost
# (weights, KV cache per token, attention shape, the 151,936-entry embedding and LM head). The
# weights are vLLM's dummy ones and the tokenizer is generated: speed and memory carry over to
# the real checkpoint, output text does not.
QWEN3_0_6B_SHAPE: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "max_window_layers": 28, "attention_bias": False,
    "hidden_act": "silu", "use_sliding_window": False, "sliding_window": None,
}
SHAPES: dict[str, dict[str, Any]] = {TINY_QWEN3: TINY_SHAPE, QWEN3_0_6B: QWEN3_0_6B_SHAPE}


def write_qwen3_model(out: Path, corpus: list[str], vocab_size: int = 1024,
                      shape: dict[str, Any] | None = None) -> None:
    """A Qwen3-architecture model (4 layers unless `shape` says otherwise) whose byte-level BPE
    tokenizer is trained on `corpus`: the built-in model's recipe, and (with other text or
    another shape) models unlike it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))

    dims: dict[str, Any] = {**TINY_SHAPE, **(shape or {})}
    # the model's vocabulary may be larger than the tokenizer's: every id it emits is inside it
    dims["vocab_size"] = max(dims.get("vocab_size", 0), vocab_size, tok.get_vocab_size())
    config = Qwen3Config(
        **dims,
        tie_word_embeddings=True,
        bos_token_id=int(fast.convert_tokens_to_ids("<|endoftext|>")),  # type: ignore[arg-type]
        eos_token_id=int(fast.convert_tokens_to_ids("<|im_end|>")),  # type: ignore[arg-type]
    )
    config.architectures = ["Qwen3ForCausalLM"]
    config.save_pretrained(str(out))
    # vLLM resolves a model without `architectures` as a pooling model: make sure it is there.
    cfg = json.loads((out / "config.json").read_text())
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg.setdefault("torch_dtype", "bfloat16")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
