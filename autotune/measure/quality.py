"""Quality guard for settings that change numerics (dtype, quantization, KV-cache dtype):
a candidate's greedy outputs on a fixed prompt set must agree with the reference's.

    quality:
      prompts: 8             # fixed prompts, the same for every candidate (seeded)
      prompt_tokens: 32
      max_tokens: 16         # greedy (temperature 0), exactly this many (ignore_eos)
      min_agreement: 0.9     # mean share of each output equal to the reference's
      options: [dtype, quantization, kv-cache-dtype]   # what changes numerics

The reference is vLLM's defaults (the study's first trial), whose greedy outputs are recorded
after its load. A candidate that sets any of `options` otherwise is asked the same prompts on
its running server after its load; its agreement on a prompt is the share of the reference's
tokens it reproduced before the first difference (1.0: identical). Below `min_agreement` on
average the candidate fails as `low_agreement`, so it is never chosen, whatever its speed. A
candidate that changes none of `options` is not asked: its numerics are the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from autotune.core.stats import Estimate
from autotune.model.tokens import Tokenizer, exact_text

AGREEMENT = "quality_agreement"  # the metric a checked candidate records


class Quality(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: PositiveInt = 8
    prompt_tokens: PositiveInt = 32
    max_tokens: PositiveInt = 16
    min_agreement: float = Field(0.9, gt=0, le=1)
    options: list[str] = Field(default_factory=lambda: ["dtype", "quantization",
                                                        "kv-cache-dtype"])


def changes_numerics(spec: Quality, args: dict[str, object],
                     reference: dict[str, object]) -> bool:
    return any(args.get(o) != reference.get(o) for o in spec.options)


def widens(option: str, value: object) -> bool:
    """A setting that rounds no value vLLM's default keeps: computing a bf16 or fp16
    checkpoint in float32 widens every value (its outputs may still differ, never by lost
    precision)."""
    return option == "dtype" and value == "float32"


def numerics_note(spec: Quality | None, args: dict[str, object],
                  reference: dict[str, object], agreement: Estimate | None) -> str:
    """What a verdict says of a winner whose settings change numerics ("": they do not):
    which settings, and what the quality guard found, or that nothing checked them. Without
    a guard, the options are the guard's defaults (dtype, quantization, kv-cache-dtype)."""
    options = (spec or Quality()).options
    changed = [o for o in options if args.get(o) != reference.get(o) and not widens(o, args.get(o))]
    if not changed:
        return ""
    what = ", ".join(f"{o} {args[o]}" if args.get(o) is not None else f"{o} unset"
                     for o in changed)
    head = f"its settings change numerics ({what})"
    if spec is None:
        return f"{head}, and the space has no quality guard: check its outputs before deploying"
    if agreement is None:
        return (f"{head}; its greedy outputs were not compared with vLLM's defaults' in this "
                "run: check them before deploying")
    return (f"{head}: its greedy outputs agree {agreement.value:.0%} with vLLM's defaults' on "
            f"{agreement.n} fixed prompts (min {spec.min_agreement:.0%})")


def prompts_for(spec: Quality, tok: Tokenizer, seed: int) -> list[str]:
    """The fixed prompt set: exact-length prompts for the model's tokenizer, seeded."""
    rng = np.random.default_rng([seed, 0x9A11])
    return [exact_text(tok, rng, spec.prompt_tokens) for _ in range(spec.prompts)]


def prefix_agreement(reference: Sequence[int], candidate: Sequence[int]) -> float:
    """The share of the reference's tokens reproduced before the first difference."""
    if not reference:
        return 1.0 if not candidate else 0.0
    n = 0
    for a, b in zip(reference, candidate, strict=False):
        if a != b:
            break
        n += 1
    return n / len(reference)


def agreement(reference: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]
              ) -> Estimate:
    """Mean prefix agreement over the prompts (n: the prompts). Each prompt's figure is exact
    (greedy decoding), so no interval is stated."""
    values = [prefix_agreement(r, o) for r, o in zip(reference, outputs, strict=True)]
    return Estimate(value=sum(values) / len(values) if values else 0.0, n=len(values))


__all__ = ["AGREEMENT", "Quality", "agreement", "changes_numerics", "numerics_note",
           "prefix_agreement", "prompts_for", "widens"]
