"""Server starts for the verdict benches: replayed from recordings of the real engine, or drawn
with a known noise."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autotune.measure.metrics import RequestSample, summarize
from autotune.measure.stopping import Measure, next_step

DATA = Path(__file__).resolve().parent / "data" / "noise-cpu-avx512.json.gz"
METRIC = "output_throughput"
# the shipped CPU space's stopping rule for a start, and the gain the sequential rule must see
MEASURE = Measure(min_rounds=3, min_s=6, max_s=12, target_ci=0.03)


class Recording:
    """The recorded starts; per round, the objective and the round's duration."""

    def __init__(self, path: Path) -> None:
        with gzip.open(path, "rt") as f:
            self.doc: dict[str, Any] = json.load(f)
        self.rounds: list[list[tuple[float, float]]] = []
        for start in self.doc["starts"]:
            per = []
            for rows in start["rounds"]:
                samples = [RequestSample(start=r[0], end=r[1], ok=r[6], ttft=r[2],
                                         itl=(() if r[2] is None else (r[3] - r[2],)),
                                         prompt_tokens=r[4], output_tokens=r[5])
                           for r in rows]
                m = summarize(samples).flat()
                per.append((m[METRIC], m["duration_s"]))
            self.rounds.append(per)

    @property
    def startup_s(self) -> list[float]:
        return [s["startup_s"] for s in self.doc["starts"]]


def start_figure(rounds: Sequence[tuple[float, float]], m: Measure, offset: int
                 ) -> tuple[float, float, int]:
    """One server start measured by the stopping rule, from round `offset` onwards:
    (the start's figure, seconds measured, rounds)."""
    values: list[float] = []
    durations: list[float] = []
    for k in range(len(rounds)):
        v, d = rounds[(offset + k) % len(rounds)]
        values.append(v)
        durations.append(d)
        if next_step(values, durations, m) == "done":
            break
    return sum(values) / len(values), sum(durations), len(values)


class Draw:
    """Start figures drawn from a recording: the measurement of one fresh server start."""

    def __init__(self, rec: Recording, m: Measure) -> None:
        self.rec, self.m = rec, m
        self.figures: dict[tuple[int, int], tuple[float, float, int]] = {}

    def figure(self, i: int, offset: int) -> tuple[float, float, int]:
        key = (i, offset)
        if key not in self.figures:
            self.figures[key] = start_figure(self.rec.rounds[i], self.m, offset)
        return self.figures[key]

    def round(self, arms: int, rng: np.random.Generator) -> list[float]:
        """One round: each arm a distinct recorded start, drawn afresh, each read from a
        random round onwards."""
        return [self.figure(int(i), int(rng.integers(len(self.rec.rounds[i]))))[0]
                for i in rng.choice(len(self.rec.rounds), size=arms, replace=False)]


class Synthetic:
    """Start figures with a known start-to-start noise (log-normal, `cv`), for hardware
    without a recording (the GPUs' published spread)."""

    def __init__(self, cv: float) -> None:
        self.cv = cv

    def round(self, arms: int, rng: np.random.Generator) -> list[float]:
        return [float(x) for x in 1000.0 * np.exp(rng.normal(0.0, self.cv, size=arms))]
