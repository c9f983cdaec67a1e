"""Rules between parameters, declared in the space file and checked on every candidate.

    rules:
      - max-num-batched-tokens >= max-num-seqs
      - max-num-batched-tokens >= 2 * max-num-seqs
      - env:VLLM_CPU_KVCACHE_SPACE <= 8

A side is a parameter (a vLLM option by its name, a server variable as `env:NAME`), a number,
or a number times a parameter. A candidate that breaks a rule is recorded as infeasible
without a server start, so the sampler learns to avoid it and no start-up is spent. A rule
whose parameter is left unset (vLLM's own default, unknown here) is not checked.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from autotune.space.params import ENV_PREFIX, TrialParams

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt}
_RULE = re.compile(r"^\s*(.+?)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"(?:env:)?[A-Za-z0-9_][A-Za-z0-9_.-]*"
_TERM = re.compile(rf"^(?:(?P<k1>{_NUMBER})\s*\*\s*(?P<n1>{_NAME})|(?P<n2>{_NAME})\s*\*\s*"
                   rf"(?P<k2>{_NUMBER})|(?P<num>{_NUMBER})|(?P<name>{_NAME}))$")


@dataclass(frozen=True)
class Term:
    factor: float
    name: str | None  # None: a constant

    def value(self, values: dict[str, Any]) -> float | None:
        if self.name is None:
            return self.factor
        v = values.get(self.name)
        if v is None or isinstance(v, bool):
            return None
        try:
            return self.factor * float(v)
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Rule:
    text: str
    left: Term
    op: str
    right: Term

    def broken_by(self, values: dict[str, Any]) -> bool:
        a, b = self.left.value(values), self.right.value(values)
        return a is not None and b is not None and not OPS[self.op](a, b)


def _term(text: str, names: Iterable[str]) -> Term:
    m = _TERM.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a parameter, a number or NUMBER * parameter")
    name = m["n1"] or m["n2"] or m["name"]
    factor = float(m["k1"] or m["k2"] or m["num"] or 1)
    if name is not None:
        name = name if name.startswith(ENV_PREFIX) else name.removeprefix("--").replace("_", "-")
        if name not in set(names):
            raise ValueError(f"{name!r} is not a parameter of this space")
    return Term(factor, name)


def parse_rule(text: str, names: Iterable[str]) -> Rule:
    m = _RULE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not 'A op B' with op one of {', '.join(OPS)}")
    known = list(names)
    left, right = _term(m[1], known), _term(m[3], known)
    if left.name is None and right.name is None:
        raise ValueError(f"{text!r} names no parameter")
    return Rule(text.strip(), left, m[2], right)


def values_of(params: TrialParams) -> dict[str, Any]:
    """A candidate's settings by rule name: options as is, variables as env:NAME."""
    return {**params.args, **{ENV_PREFIX + k: v for k, v in params.env.items()}}


__all__ = ["Rule", "parse_rule"]
