"""The user's prices: what one server of each hardware costs an hour, from their own file (no
network). Keys are hardware keys (`cpu-amd-avx512bf16-2c`, `h100-80gb-x1`) or targets (`cpu`,
`a10g`, `h100`); a hardware key's own price wins over its target's.

    # dollars (or any currency) per server per hour
    a10g: 1.01
    h100: 4.50
    cpu-amd-avx512bf16-2c: 0.08
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path

from autotune.core.config import read_yaml
from autotune.core.errors import ConfigError


def read_prices(path: Path, known: Iterable[str]) -> dict[str, float]:
    """{key: price per hour}; ConfigError naming the file and the key for anything else: a
    price that is not a non-negative number, or a key no profile's hardware or target has."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), None, "expected a mapping of hardware key or target to a "
                                           "price per hour")
    names = sorted(set(known))
    out: dict[str, float] = {}
    for key, value in data.items():
        k = str(key)
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(str(path), k, f"names no hardware key or target of a profile or "
                                            f"of autotune{hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or value < 0:
            raise ConfigError(str(path), k, f"a price per hour must be a number, not below "
                                            f"zero (got {value!r})")
        out[k] = float(value)
    return out


__all__ = ["read_prices"]
