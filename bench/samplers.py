"""How many server starts each sampler needs to find a setting within 2% of the best, replayed
against a grid measured exhaustively on the real CPU engine (bench.record_grid).

Each replay runs autotune's own search (`tuner.tune`: vLLM's defaults first, a repeat draw
answered from the study, the space's sampler) over the grid's space, with a stand-in trial that
returns the recorded figures of the point drawn. Two ways to read the table:

- `recorded`: every measurement of a point returns its recorded mean (no noise);
- `noisy`: each returns a draw from the point's recorded 95% interval (normal, sd = half-width
  / 1.96), as a fresh measurement would; whether the search "found" the best is judged on the
  recorded mean of the point it would pick (its best measured), not on the lucky draw.

For each sampler and seed it counts the server starts (distinct points measured) until the
pick is within 2% of the grid's best recorded mean; a search that never gets there within the
budget counts as the whole grid. Prints the median and quartiles over seeds:

    .venv/bin/python -m bench.samplers --seeds 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from autotune.objective import PruneCheck, TrialResult
from autotune.samplers import SAMPLERS
from autotune.space import SearchSpace, TrialParams, load_space
from autotune.stats import Estimate
from autotune.tuner import StudyConfig, tune

DATA = Path(__file__).resolve().parent / "data" / "grid-cpu-avx512.json"
SPACE = Path(__file__).resolve().parent / "spaces" / "grid-cpu.yaml"


def key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(params.items()) if v is not None})


class Table:
    def __init__(self, path: Path) -> None:
        d = json.loads(path.read_text())
        self.meta = {k: v for k, v in d.items() if k != "points"}
        self.points: dict[str, dict[str, Any]] = {}
        for p in d["points"]:
            if p["status"] == "ok":
                self.points[key(p["params"])] = p["output_throughput"]
        self.best = max(e["value"] for e in self.points.values())

    def mean(self, params: dict[str, Any]) -> float:
        return float(self.points[key(params)]["value"])

    def draw(self, params: dict[str, Any], rng: np.random.Generator) -> float:
        e = self.points[key(params)]
        lo, hi = e.get("low"), e.get("high")
        sd = (hi - lo) / 2 / 1.96 if lo is not None and hi is not None else 0.0
        return max(1.0, float(rng.normal(e["value"], sd)))


def replay(table: Table, space: SearchSpace, sampler: str, seed: int, noisy: bool,
           budget: int, work: Path) -> int:
    """Server starts until the search's pick is within 2% of the grid's best."""
    space = space.model_copy(update={"sampler": space.sampler.model_copy(
        update={"name": sampler, "seed": seed})})
    rng = np.random.default_rng(seed)
    tuned = list(space.tuned())
    order: list[tuple[float, float]] = []  # (measured, recorded mean) per start

    def runner(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        values = {k: params.args.get(k) for k in tuned}
        v = table.draw(values, rng) if noisy else table.mean(values)
        order.append((v, table.mean(values)))
        return TrialResult(status="ok", command=[], env={}, round_values=[v] * 3,
                           metrics={"output_throughput": Estimate(value=v, low=v, high=v, n=3,
                                                                  basis="rounds")})

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tune(space, StudyConfig(f"sqlite:///{work / f'{sampler}-{seed}-{noisy}.db'}", "s", budget),
         runner, {})
    target = 0.98 * table.best
    best_measured = -1.0
    pick = 0.0
    for i, (measured, mean) in enumerate(order, 1):
        if measured > best_measured:
            best_measured, pick = measured, mean
        if pick >= target:
            return i
    return len(table.points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--space", type=Path, default=SPACE)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--samplers", default=",".join(s for s in SAMPLERS if s != "grid"))
    ap.add_argument("--budget", type=int, default=40, help="trials per search (repeats "
                    "answered from the study count, as in a real run)")
    ns = ap.parse_args()
    table = Table(ns.data)
    space = load_space(ns.space)
    space = space.model_copy(update={"pruning": space.pruning.model_copy(
        update={"enabled": False})})
    m = table.meta
    print(f"grid: {len(table.points)} points measured on {m['cpu']} ({', '.join(m['cpu_flags'])})"
          f", vLLM {m['vllm']}, {m['recorded']}; objective {m['objective']}, best recorded "
          f"mean {table.best:.0f}; target: within 2% ({0.98 * table.best:.0f})")
    print(f"{ns.seeds} seeds per sampler; figures: server starts until the pick is within 2% "
          "of the best (median [quartiles]); a search that never gets there counts "
          f"{len(table.points)}")
    print(f"{'sampler':<10}{'recorded means':>24}{'noisy (drawn from intervals)':>32}")
    medians: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in ns.samplers.split(","):
            cells = []
            for noisy in (False, True):
                runs = [replay(table, space, sampler, seed, noisy, ns.budget, Path(tmp))
                        for seed in range(ns.seeds)]
                q = statistics.quantiles(runs, n=4)
                medians[(sampler, noisy)] = statistics.median(runs)
                cells.append(f"{statistics.median(runs):g} [{q[0]:g}, {q[2]:g}]")
            print(f"{sampler:<10}{cells[0]:>24}{cells[1]:>32}", flush=True)
    n = len(table.points)
    for noisy in (False, True):
        tpe, rnd = medians.get(("tpe", noisy)), medians.get(("random", noisy))
        if tpe is not None and rnd is not None:
            print(f"{'noisy' if noisy else 'recorded'}: tpe (the default) needs {tpe:g} starts "
                  f"= {tpe / n:.0%} of the grid (goal <= 20%) and {tpe / rnd:.2f}x random's "
                  f"{rnd:g} (goal <= 0.5x)")


if __name__ == "__main__":
    main()
