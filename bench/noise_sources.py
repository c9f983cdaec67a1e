"""Where the start-to-start spread comes from: the recorded starts taken apart.

For each recording of `bench.record_noise` (per-request samples of many fresh starts of one
setting on the real CPU engine) it prints:

- the spread of one start's rounds (within a start) and of the starts' means (between starts),
  and how much of a start mean's spread the rounds alone would explain;
- the warm-up's sufficiency: the first measured round against the start's other rounds (a
  warm-up too short leaves the first round slow);
- how the spread of a paired ratio (two starts side by side, as a confirmation round pairs
  them) falls with the rounds measured per start;
- per-start estimators other than the mean of the rounds (median, trimmed mean);
- for a recording made with `--pin-client alternate`: the starts whose load generator ran on
  the cores the engine's OpenMP threads leave free, beside those where it ran anywhere.

    .venv/bin/python -m bench.noise_sources [FILE ...]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import statistics as st
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def round_tputs(start: dict[str, Any]) -> list[float]:
    """Output tokens per second of each round of one start (its requests' span)."""
    out = []
    for r in start["rounds"]:
        span = max(x[1] for x in r) - min(x[0] for x in r)
        out.append(sum(x[5] for x in r if x[6]) / span)
    return out


def cv(xs: Sequence[float]) -> float:
    return st.stdev(xs) / st.mean(xs)


def pair_sd(means: Sequence[float]) -> float:
    """The spread of log(start i+1 / start i) over consecutive starts: what one confirmation
    round's paired ratio of two identical settings varies by."""
    return st.stdev([math.log(b / a) for a, b in itertools.pairwise(means)])


def trimmed(xs: Sequence[float]) -> float:
    s = sorted(xs)
    k = max(1, len(s) // 5)
    return st.mean(s[k:-k])


ESTIMATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean of rounds (autotune's)": st.mean, "median of rounds": st.median,
    "trimmed mean (20%)": trimmed}


def report(path: Path) -> None:
    with gzip.open(path, "rt") as f:
        doc = json.load(f)
    starts = doc["starts"]
    rounds = [round_tputs(s) for s in starts]
    means = [st.mean(r) for r in rounds]
    n = min(len(r) for r in rounds)
    within = st.median([cv(r) for r in rounds])
    print(f"{path.name}: {doc['machine'].get('cpu')} {doc['machine'].get('flags')}, "
          f"{len(starts)} starts of {n}+ rounds, recorded {doc.get('recorded')}")
    print(f"  within a start: rounds vary {within:.1%} (median cv); between starts: the "
          f"starts' means vary {cv(means):.1%}; the rounds alone would explain "
          f"{within / math.sqrt(n):.1%} of it")
    first = [r[0] / st.mean(r[1:]) for r in rounds]
    print(f"  warm-up: first round / the start's other rounds: median x{st.median(first):.3f} "
          f"[{min(first):.2f}, {max(first):.2f}]")
    per_k = ", ".join(f"{k}: {pair_sd([st.mean(r[:k]) for r in rounds]):.3f}"
                      for k in (3, 5, 8, 10) if k <= n)
    print(f"  paired log-ratio sd of consecutive starts, by rounds per start: {per_k}")
    for name, fn in ESTIMATORS.items():
        e = [fn(r) for r in rounds]
        print(f"  {name}: starts vary {cv(e):.1%}, paired log-ratio sd {pair_sd(e):.3f}")
    pinned = [s.get("client_cores", "any") != "any" for s in starts]
    if any(pinned) and not all(pinned):
        for label, want in (("client anywhere", False), ("client on spare cores", True)):
            sel = [i for i, p in enumerate(pinned) if p == want]
            m = [means[i] for i in sel]
            w = st.median([cv(rounds[i]) for i in sel])
            print(f"  {label}: {len(sel)} starts, mean {st.mean(m):.0f} tok/s, starts vary "
                  f"{cv(m):.1%}, rounds vary {w:.1%} (median cv)")
        logs = [math.log(means[i + 1] / means[i]) for i in range(0, len(starts) - 1, 2)
                if not pinned[i] and pinned[i + 1]]
        print(f"  pinned / anywhere, start after start: x{math.exp(st.mean(logs)):.3f}, "
              f"sd of the log ratio {st.stdev(logs):.3f} ({len(logs)} pairs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="*",
                    default=sorted(DATA.glob("noise-*.json.gz")) + sorted(
                        DATA.glob("pinning-*.json.gz")))
    for path in ap.parse_args().files:
        report(path)


if __name__ == "__main__":
    main()
