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

Warm starts (`sampler.warm_start`, autotune/profiles/warm.py): `--warm-from OTHER.json` takes the
best point of a grid recorded on other hardware as that hardware's profile, maps it into this space
through the same function a real run uses, and replays each search twice, cold and with that
candidate queued right after vLLM's defaults; both directions when the grids differ (A warm
from B, B warm from A):

    .venv/bin/python -m bench.samplers --samplers tpe --warm-from bench/data/OTHER.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from autotune.core.errors import FailureReason
from autotune.core.stats import Estimate
from autotune.measure.result import PruneCheck, TrialResult
from autotune.profiles.catalog import Entry
from autotune.profiles.profile import Profile, ProfileMeta
from autotune.profiles.warm import WarmStart, warm_starts
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, load_space
from autotune.study.opening import StudyConfig
from autotune.study.samplers import SAMPLERS
from autotune.study.tuner import tune

DATA = Path(__file__).resolve().parent / "data" / "grid-cpu-avx512.json"
SPACE = Path(__file__).resolve().parent / "spaces" / "grid-cpu.yaml"


def key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(params.items()) if v is not None})


class Table:
    def __init__(self, path: Path) -> None:
        d = json.loads(path.read_text())
        self.path = path
        self.meta = {k: v for k, v in d.items() if k != "points"}
        self.points: dict[str, dict[str, Any]] = {}
        self.params: dict[str, dict[str, Any]] = {}
        for p in d["points"]:
            if p["status"] == "ok":
                self.points[key(p["params"])] = p["output_throughput"]
                self.params[key(p["params"])] = p["params"]
        best = max(self.points, key=lambda k: self.points[k]["value"])
        self.best = float(self.points[best]["value"])
        self.best_params = self.params[best]

    def mean(self, params: dict[str, Any]) -> float:
        return float(self.points[key(params)]["value"])

    def draw(self, params: dict[str, Any], rng: np.random.Generator) -> float:
        e = self.points[key(params)]
        lo, hi = e.get("low"), e.get("high")
        sd = (hi - lo) / 2 / 1.96 if lo is not None and hi is not None else 0.0
        return max(1.0, float(rng.normal(e["value"], sd)))


def as_profile(table: Table, space: SearchSpace) -> Entry:
    """The grid's best point as the profile its hardware would keep (the space's fixed
    settings and the point's options; vLLM's defaults when the best point is theirs), under
    a hardware key named by the grid's file."""
    m = table.meta
    best = table.points[key(table.best_params)]
    settings = {**{k: v for k, v in space.args.items() if k not in space.tuned()},
                **{k: v for k, v in table.best_params.items() if v is not None}}
    trial = None if key(table.best_params) == key({}) else 1
    meta = ProfileMeta(autotune_version="bench", created=m["recorded"], target="cpu",
                       model="builtin:tiny-qwen3", hardware={"cpu": m["cpu"],
                                                            "cpu_flags": m["cpu_flags"]},
                       vllm_version=m["vllm"], space=m["space"], space_fingerprint="",
                       workload={}, study="grid", trial=trial,
                       objective={"metric": m["objective"], "direction": "maximize"},
                       metrics={m["objective"]: Estimate.model_validate(best)})
    return Entry(Path(table.path.stem) / "grid.yaml", Profile(settings=settings, meta=meta))


class Reached(Exception):
    """The search's pick is within 2% of the grid's best: later starts change nothing."""


def replay(table: Table, space: SearchSpace, sampler: str, seed: int, noisy: bool,
           budget: int, work: Path, warm: tuple[WarmStart, ...] = ()) -> int:
    """Server starts until the search's pick is within 2% of the grid's best."""
    space = space.model_copy(update={"sampler": space.sampler.model_copy(
        update={"name": sampler, "seed": seed})})
    rng = np.random.default_rng(seed)
    tuned = list(space.tuned())
    target = 0.98 * table.best
    starts = 0
    best_measured, pick = -1.0, 0.0  # the best measured so far, and its recorded mean

    def runner(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
        nonlocal starts, best_measured, pick
        values = {k: params.args.get(k) for k in tuned}
        starts += 1
        if key(values) not in table.points:  # failed when the grid was recorded
            return TrialResult(status="failed", reason=FailureReason.STARTUP_CRASH,
                               detail="failed in the recorded grid", command=[], env={})
        v = table.draw(values, rng) if noisy else table.mean(values)
        if v > best_measured:
            best_measured, pick = v, table.mean(values)
        if pick >= target:
            raise Reached
        return TrialResult(status="ok", command=[], env={}, round_values=[v] * 3,
                           metrics={"output_throughput": Estimate(value=v, low=v, high=v, n=3,
                                                                  basis="rounds")})

    # a search stopped by Reached is no news (tune sets Optuna's own verbosity)
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)
    db = work / f"{table.path.stem}-{sampler}-{seed}-{noisy}-{bool(warm)}.db"
    try:
        tune(space, StudyConfig(f"sqlite:///{db}", "s", budget, warm=warm), runner, {})
    except Reached:
        return starts
    return len(table.points)


def quartiles(runs: list[int]) -> str:
    q = statistics.quantiles(runs, n=4)
    return f"{statistics.median(runs):g} [{q[0]:g}, {q[2]:g}]"


def warm_vs_cold(table: Table, other: Table, space: SearchSpace, samplers: list[str],
                 seeds: int, budget: int, work: Path) -> None:
    """`table`'s searches cold and warm-started from `other`'s best point, side by side."""
    warm = tuple(warm_starts(space, [as_profile(other, space)]))
    there = table.points.get(key(other.best_params))
    here = (f"{there['value']:.0f} ({there['value'] / table.best:.0%} of this grid's best)"
            if there else "nothing (it failed here)")
    print(f"\n{table.path.name} ({table.meta['cpu']}, best {table.best:.0f}) warm from "
          f"{other.path.name} ({other.meta['cpu']}): the other's best point measures {here}")
    for w in warm:
        print(w.line())
    print(f"{'sampler':<10}{'recorded: cold':>18}{'warm':>16}{'noisy: cold':>18}{'warm':>16}")
    for sampler in samplers:
        cells = [quartiles([replay(table, space, sampler, seed, noisy, budget, work, w)
                            for seed in range(seeds)])
                 for noisy in (False, True) for w in ((), warm)]
        print(f"{sampler:<10}{cells[0]:>18}{cells[1]:>16}{cells[2]:>18}{cells[3]:>16}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--space", type=Path, default=SPACE)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--samplers", default=",".join(s for s in SAMPLERS if s != "grid"))
    ap.add_argument("--budget", type=int, default=40, help="trials per search (repeats "
                    "answered from the study count, as in a real run)")
    ap.add_argument("--warm-from", type=Path, help="a grid of the same space recorded on "
                    "other hardware: compare cold searches with ones warm-started from its "
                    "best point, both ways")
    ns = ap.parse_args()
    table = Table(ns.data)
    space = load_space(ns.space)
    space = space.model_copy(update={"pruning": space.pruning.model_copy(
        update={"enabled": False})})
    if ns.warm_from is not None:
        other = Table(ns.warm_from)
        print(f"{ns.seeds} seeds per sampler; figures: server starts until the pick is within "
              "2% of the grid's best (median [quartiles]), cold and warm-started")
        with tempfile.TemporaryDirectory() as tmp:
            pairs = [(table, other)] + ([(other, table)] if other.path.resolve() !=
                                        table.path.resolve() else [])
            for a, b in pairs:
                warm_vs_cold(a, b, space, ns.samplers.split(","), ns.seeds, ns.budget,
                             Path(tmp))
        return
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
                medians[(sampler, noisy)] = statistics.median(runs)
                cells.append(quartiles(runs))
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
