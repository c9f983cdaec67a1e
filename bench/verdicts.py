"""How often the verdict rule is wrong, replayed on real measurements.

Replays the project's own decision rule (the workload's stopping rule, `autotune.measure`, for
each server start; the paired, Bonferroni-adjusted interval of `autotune.verdict` across
starts) on per-request samples recorded from many fresh starts of one setting on the real CPU
engine (`bench/record_noise.py`, committed under bench/data/). Prints, for confirmation rounds
R and stopping rules:

- false wins: two arms with the same settings (A/A); how often does the challenger win?
  Target <= 5%. With two challengers (A/A/A), how often does either win?
- detection: the challenger's figures are the recorded ones times 1.10, a real 10% gain put
  into real noise; how often does it win? Target >= 90%. (And times 0.90: it must not win.)
  How many rounds that takes depends on the machine's noise: the table says which R meets it.
- the measuring time per server start the stopping rule takes, and the recorded start-up.

Each round of a simulated confirmation gives its arms distinct recorded starts drawn at random
(afresh for every round, so R may exceed what was recorded), and each start is read from a
random round onwards. Starts recorded far apart in time carry the machine's drift between
them, which real interleaving cancels, so the figures err on the side of noise.

    .venv/bin/python -m bench.verdicts [--data bench/data/noise-cpu-avx512.json.gz]
    .venv/bin/python -m bench.verdicts --live 3     # plus an A/A confirmation on the engine
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from autotune.measure import Measure, next_step
from autotune.metrics import RequestSample, summarize
from autotune.verdict import ArmFigures, decide

DATA = Path(__file__).resolve().parent / "data" / "noise-cpu-avx512.json.gz"
METRIC = "output_throughput"


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


def simulate(rec: Recording, m: Measure, rounds: int, arms: int, effect: float,
             n: int, seed: int) -> tuple[float, float, float]:
    """(share of confirmations a challenger won, mean seconds and rounds per start)."""
    rng = np.random.default_rng(seed)
    starts = len(rec.rounds)

    @cache
    def figure(i: int, offset: int) -> tuple[float, float, int]:
        return start_figure(rec.rounds[i], m, offset)

    wins = 0
    secs: list[float] = []
    nrounds: list[int] = []
    for _ in range(n):
        values: list[list[float | None]] = [[] for _ in range(arms)]
        for _r in range(rounds):
            # each round's arms: distinct recorded starts, drawn afresh for every round
            for a, i in enumerate(rng.choice(starts, size=arms, replace=False)):
                v, s, k = figure(int(i), int(rng.integers(len(rec.rounds[i]))))
                secs.append(s)
                nrounds.append(k)
                values[a].append(v * (effect if a > 0 else 1.0))
        figs = [ArmFigures("baseline", "baseline", tuple(values[0]))] + [
            ArmFigures(f"c{a}", "finalist", tuple(values[a])) for a in range(1, arms)]
        wins += decide(figs, "maximize").winner != "baseline"
    return wins / n, float(np.mean(secs)), float(np.mean(nrounds))


def detectable(rec: Recording, m: Measure, rounds: int, n: int, power: float = 0.9) -> float:
    """The smallest gain (a ratio) that wins in at least `power` of confirmations."""
    lo, hi = 1.0, 3.0
    if simulate(rec, m, rounds, 2, hi, n, seed=5)[0] < power:
        return math.inf
    for _ in range(7):
        mid = (lo + hi) / 2
        if simulate(rec, m, rounds, 2, mid, n, seed=5)[0] >= power:
            hi = mid
        else:
            lo = mid
    return hi


def live(rounds: int) -> None:
    """An A/A confirmation on the real engine: vLLM's defaults against the same settings
    with only the (speed-neutral) sampling seed changed, `rounds` interleaved rounds."""
    import tempfile

    from autotune.builtin_model import TINY_QWEN3, ensure_builtin_model
    from autotune.confirm import Arm, confirm
    from autotune.engine import default_launcher
    from autotune.objective import TrialSetup, run_trial
    from autotune.plan import Plan
    from autotune.space import TrialParams, load_space
    from autotune.testing.fake_probe import FakeProbe
    from autotune.tokens import ModelTokenizer

    space = load_space(Path(__file__).resolve().parent.parent / "search_spaces" / "cpu.yaml")
    model = str(ensure_builtin_model(TINY_QWEN3))
    setup = TrialSetup(model=model, launcher=default_launcher(),
                       plan=Plan(space.workload, ModelTokenizer(model)), engine=space.engine,
                       probe=FakeProbe(), base_args={"load-format": "dummy"},
                       api_key="bench-key")
    fixed = {k: v for k, v in space.args.items() if k not in space.tuned()}
    arms = [Arm("A", "baseline", TrialParams(args=dict(fixed))),
            Arm("A'", "finalist", TrialParams(args={**fixed, "seed": 1}))]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        conf = confirm(arms, rounds, space.objective,
                       lambda p, where: run_trial(p, setup, Path(tmp) / where))
    print(f"\nlive A/A on the real engine ({rounds} interleaved rounds, "
          f"{time.monotonic() - t0:.0f} s):")
    for a in conf.arms:
        print(f"  {a.name}: {METRIC} per round {[round(v or 0) for v in a.objective]}; "
              f"vs A {a.vs_baseline[METRIC].describe(3)}")
    print(f"  verdict: {conf.verdict.summary}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sims", type=int, default=2000, help="confirmations per figure")
    ap.add_argument("--rounds", type=int, nargs="+", default=[3, 5, 10, 20, 30])
    ap.add_argument("--live", type=int, default=0, metavar="R",
                    help="also run an A/A confirmation of R rounds on the real engine")
    ns = ap.parse_args()
    rec = Recording(ns.data)
    machine = rec.doc["machine"]
    per_start = [float(np.mean([v for v, _ in r])) for r in rec.rounds]
    spread = float(np.std(per_start, ddof=1) / np.mean(per_start))
    within = float(np.mean([np.std([v for v, _ in r], ddof=1) / np.mean([v for v, _ in r])
                            for r in rec.rounds]))
    print(f"data: {ns.data.name}: {len(rec.rounds)} starts x {len(rec.rounds[0])} rounds of "
          f"{len(rec.doc['starts'][0]['rounds'][0])} requests, recorded "
          f"{rec.doc['recorded']} on {machine['cpu']} ({', '.join(machine['flags'])}), "
          f"{machine['vllm']}")
    print(f"noise: {METRIC} per round varies {within:.1%} within a start (sd/mean); the "
          f"means of whole starts vary {spread:.1%} from start to start")
    print(f"start-up: {np.mean(rec.startup_s):.0f} s a start "
          f"({min(rec.startup_s):.0f}-{max(rec.startup_s):.0f})\n")
    rules = {
        "cpu.yaml: 3+ rounds, 6-12 s, +-3%": Measure(min_rounds=3, min_s=6, max_s=12,
                                                     target_ci=0.03),
        "3+ rounds, 6-40 s, +-2%": Measure(min_rounds=3, min_s=6, max_s=40, target_ci=0.02),
    }
    header = (f"{'stopping rule':36} {'R':>3} {'s/start':>7} {'rounds':>6} {'A/A':>6} "
              f"{'A/A/A':>6} {'+10%':>6} {'-10%':>6} {'90% finds':>9}")
    print(f"{n_sims(ns.sims)} simulated confirmations per cell; a challenger wins when the "
          "95% interval of its paired ratio (Bonferroni) lies above 1")
    print(header)
    print("-" * len(header))
    for name, m in rules.items():
        for r in ns.rounds:
            aa, secs, k = simulate(rec, m, r, 2, 1.0, ns.sims, seed=1)
            aaa, _, _ = simulate(rec, m, r, 3, 1.0, ns.sims, seed=2)
            up, _, _ = simulate(rec, m, r, 2, 1.10, ns.sims, seed=3)
            down, _, _ = simulate(rec, m, r, 2, 0.90, ns.sims, seed=4)
            finds = detectable(rec, m, r, max(200, ns.sims // 5))
            print(f"{name:36} {r:>3} {secs:>7.1f} {k:>6.1f} {aa:>6.1%} {aaa:>6.1%} "
                  f"{up:>6.1%} {down:>6.1%} {'+' + format(finds - 1, '.0%'):>9}")
    print("\ntargets: A/A <= 5%, +10% >= 90%. Columns: R confirmation rounds (server starts "
          "per arm); s/start "
          "measuring time per start (start-up not included); A/A and A/A/A false wins; +10% "
          "and -10% the share of wins by a challenger 10% better or worse; 90% finds: the "
          "smallest gain that wins in 90% of confirmations.")
    if ns.live:
        live(ns.live)


def n_sims(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n / 1000:.0f}k"


if __name__ == "__main__":
    main()
