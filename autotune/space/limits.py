"""Limits a space or workload can declare that cannot be right, refused before any start.

vLLM's parser takes any integer for its sizes and any float where it wants a fraction; its
engine refuses the rest only once a server starts (`max-num-seqs: 0`, `max-model-len: 0`,
both refused by its configs' own `ge=1`). A latency bound of 0 ms or below, or a constraint
whose `min` is above its `max`, is met by no candidate, so the search would measure every one
for nothing. Each is one line naming the file and the field, as `run` and `validate` both say.
"""

from __future__ import annotations

import math
import re
from typing import Any

from autotune.core.errors import ConfigError
from autotune.measure.workload import Workload
from autotune.space.params import CategoricalParam, FloatParam, IntParam
from autotune.space.search import SearchSpace

# vLLM sizes that its own configs declare ge=1 (SchedulerConfig, ParallelConfig, CacheConfig)
POSITIVE = ("max-num-seqs", "max-num-batched-tokens", "tensor-parallel-size",
            "pipeline-parallel-size", "data-parallel-size", "block-size", "max-model-len")
AUTO = -1  # max-model-len -1 (or `auto`): vLLM fits the context to the memory it has
# No model's context comes near it (the longest are about 10 million tokens), and one
# sequence's KV cache at this length would need terabytes: a typo, not a setting.
MAX_CONTEXT = 2**30
_COUNT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def count(v: Any) -> int | None:
    """An option's value as vLLM's parser reads a count: an integer, `1k` (1000), `1K`
    (1024), `auto` (-1); None when it is not one (the parser itself says why)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if not isinstance(v, str):
        return None
    text = v.strip()
    if text.lower() == "auto":
        return AUTO
    m = _COUNT.fullmatch(text)
    if m:
        number, suffix = m.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        return int(number) * 2 ** (10 * "KMGT".index(suffix) + 10) if number.isdigit() else None
    try:
        return int(text)
    except ValueError:
        return None


def model_len(v: Any) -> int | None:
    """A max-model-len in tokens; None for `auto`/-1 (the model's context, or less) and for
    what is not a count."""
    n = count(v)
    return None if n is None or n == AUTO else n


def spec_values(spec: Any) -> list[Any]:
    """Every value an option's spec can give it: a range by its ends, a choice set without
    its `null`, a fixed value (each word of a list)."""
    if isinstance(spec, (IntParam, FloatParam)):
        return [spec.low, spec.high]
    if isinstance(spec, CategoricalParam):
        return [c for c in spec.choices if c is not None]
    if isinstance(spec, list):
        return list(spec)
    return [] if spec is None else [spec]


def check_args(space: SearchSpace, source: str) -> None:
    """vLLM sizes below 1 and a max-model-len beyond any model's context."""
    for name in POSITIVE:
        for v in spec_values(space.args.get(name)):
            n = count(v)
            if n is None or (name == "max-model-len" and n == AUTO):
                continue
            if n < 1:
                auto = " (or -1, auto: the model's context)" if name == "max-model-len" else ""
                raise ConfigError(source, f"args.{name}", f"{v} must be at least 1{auto}: "
                                  "vLLM refuses it at start-up")
            if name == "max-model-len" and n > MAX_CONTEXT:
                raise ConfigError(source, f"args.{name}", f"{v} tokens is beyond any model's "
                                  f"context (at most {MAX_CONTEXT:,} here)")


def _time_metric(name: str) -> bool:
    return name.endswith(("_ms", "_s"))


def _bound_problem(name: str, bound: float) -> str | None:
    if math.isnan(bound):
        return "nan is not a bound"
    if bound < 0:
        return f"{bound:g} is below 0: no request can meet it"
    if bound == 0 and _time_metric(name):
        return "0 is met by no request: none takes no time"
    return None


def check_workload(w: Workload, source: str, prefix: str = "") -> None:
    """SLO bounds no request can meet: per-request bounds (`slo`) and a capacity search's
    per-round bounds (`capacity.slo`). `prefix` is `workload.` inside a space file."""
    bounds: list[tuple[str, str, float]] = [(f"slo.{n}", n, b) for n, b in w.slo.items()]
    if w.capacity is not None:
        bounds += [(f"capacity.slo.{name}", name, b) for name, b in w.capacity.slo.items()]
    for field, name, bound in bounds:
        if (why := _bound_problem(name, bound)) is not None:
            raise ConfigError(source, f"{prefix}{field}", why)


def context_ceiling(config: dict[str, Any], context: int) -> int:
    """The longest max-model-len vLLM can accept for a model whose config gives `context`
    positions: RoPE scaling may stretch it by its factor (vLLM applies it for most types, so
    the largest is taken), and a `model_max_length` above it is honoured."""
    cfg = config.get("text_config", config)
    factor = 1.0
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        for rp in (rope.values() if isinstance(rope, dict) and "factor" not in rope
                   else [rope]):
            f = rp.get("factor") if isinstance(rp, dict) else None
            if isinstance(f, (int, float)) and not isinstance(f, bool) and f > factor:
                factor = float(f)
    longest = cfg.get("model_max_length")
    extra = longest if isinstance(longest, int) and not isinstance(longest, bool) else 0
    return max(int(context * factor), extra)


def check_context_limit(space: SearchSpace, model_args: dict[str, Any], ceiling: int,
                        source: str, allowed_long: bool) -> None:
    """A max-model-len above what the model allows (`ceiling`): vLLM refuses it at start-up
    unless VLLM_ALLOW_LONG_MAX_MODEL_LEN is set (`allowed_long`)."""
    if allowed_long:
        return
    for v in spec_values(space.args.get("max-model-len", model_args.get("max-model-len"))):
        n = model_len(v)
        if n is not None and n > ceiling:
            raise ConfigError(source, "args.max-model-len", f"{v} is above the model's "
                              f"context ({ceiling:,} tokens, from its config.json): vLLM "
                              "refuses it at start-up unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 "
                              "is in env:")
