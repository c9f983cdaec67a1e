"""Many workers on one study in PostgreSQL: the speed-up of N workers over one on the same
budget, the coordination's cost, and the storage under many workers (8 unless `--many`).

Each worker is a process running autotune's own search loop (`tuner.tune`: the shared budget,
the hand-back of a trial beyond it, the heartbeat) on one study, with a stand-in trial that
takes a fixed time (`--trial-s`), so that what is left is coordination. Workers wait at a
barrier after importing; the wall time runs from the barrier to the last worker's end.
N=1, 2, 4 are measured in interleaved rounds (1 2 4 1 2 4 ...); the speed-up is the median
one-worker time over the median N-worker time, with the range of the rounds.

    .venv/bin/python -m bench.workers              # PostgreSQL from scripts/postgres.sh
    .venv/bin/python -m bench.workers --rounds 5 --budget 24 --trial-s 1

Targets: speed-up near N (overhead per trial small against a real trial's minutes); with many
workers, the budget exactly, no candidate twice, no result lost, no trial left RUNNING.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.core.stats import Estimate
from autotune.measure.result import PruneCheck, TrialResult
from autotune.space.params import TrialParams
from autotune.space.search import SearchSpace, parse_space
from autotune.study.budget import handed_back
from autotune.study.opening import StudyConfig
from autotune.study.trials import counted_trials, params_of
from autotune.study.tuner import tune

TRIAL_S = 0.5


def space() -> SearchSpace:
    # 64 distinct candidates: enough for 8 workers without running out
    return parse_space({"name": "bench-workers", "args": {
        "max-num-seqs": {"type": "categorical", "choices": [1, 2, 4, 8, 16, 32, 64, 128]},
        "block-size": {"type": "categorical", "choices": [8, 16, 32, 64, 96, 128, 160, 192]}},
        "objective": {"metric": "output_throughput"}, "sampler": {"seed": 0}})


def trial(params: TrialParams, number: int, prune: PruneCheck) -> TrialResult:
    time.sleep(TRIAL_S)
    # vLLM's defaults (the baseline) pass neither option
    v = float(params.args.get("max-num-seqs", 256)) + float(
        params.args.get("block-size", 16)) / 1000
    return TrialResult(status="ok", command=["stand-in"], env={"pid": str(os.getpid())},
                       metrics={"output_throughput": Estimate(value=v, low=v, high=v, n=1)},
                       round_values=[v])


def worker(url: str, name: str, budget: int, trial_s: float, barrier: Any, out: Any) -> None:
    global TRIAL_S
    TRIAL_S = trial_s
    sp = space()
    barrier.wait()
    t0 = time.time()
    tune(sp, StudyConfig(url, name, budget, shared=True), trial, {})
    out.put((t0, time.time()))


def one_run(url: str, n: int, budget: int, trial_s: float) -> tuple[float, optuna.Study]:
    ctx = multiprocessing.get_context("spawn")
    name = f"bench-{n}-{uuid.uuid4().hex[:8]}"
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, name, budget, trial_s, barrier, out))
             for _ in range(n)]
    for p in procs:
        p.start()
    spans: list[tuple[float, float]] = []
    while len(spans) < n:
        try:
            spans.append(out.get(timeout=1))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a worker failed (exit {dead[0]})") from None
    for p in procs:
        p.join()
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return wall, optuna.load_study(study_name=name, storage=url)


def check(study: optuna.Study, budget: int) -> dict[str, int]:
    sp = space()
    done = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if t.user_attrs.get("repeat_of") is None]
    keys = [repr(sorted(params_of(sp, t).args.items())) for t in done]
    return {"counted": counted_trials(study), "measured": len(done),
            "duplicates": len(keys) - len(set(keys)),
            "lost": sum(1 for t in done if not t.user_attrs.get("metrics")),
            "running": len(study.get_trials(states=(TrialState.RUNNING,))),
            "handed_back": handed_back(study),
            "workers": len({t.user_attrs["env"]["pid"] for t in done}), "budget": budget}


def postgres_url() -> str:
    if not os.environ.get("AUTOTUNE_TEST_POSTGRES"):
        script = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
        text = subprocess.run([str(script)], capture_output=True, text=True,
                              check=True).stdout
        for line in text.splitlines():
            key, value = line.removeprefix("export ").split("=", 1)
            os.environ[key] = value
    return os.environ["AUTOTUNE_TEST_POSTGRES"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--trial-s", type=float, default=TRIAL_S)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--storage", help="a storage URL (default: scripts/postgres.sh's)")
    ap.add_argument("--many", type=int, default=8,
                    help="then this many workers on 4 trials each: the budget kept exactly")
    a = ap.parse_args()
    url = a.storage or postgres_url()
    ns = [int(x) for x in a.workers.split(",")]
    walls: dict[int, list[float]] = {n: [] for n in ns}
    for r in range(a.rounds):
        for n in ns:
            wall, study = one_run(url, n, a.budget, a.trial_s)
            c = check(study, a.budget)
            if c["counted"] != a.budget or c["duplicates"] or c["lost"] or c["running"]:
                raise SystemExit(f"N={n} round {r + 1}: {c}")
            walls[n].append(wall)
            print(f"round {r + 1}: {n} worker(s): {wall:.2f} s  {c}", flush=True)
    base = statistics.median(walls[ns[0]]) * ns[0]
    print(f"\n{a.budget} trials of {a.trial_s} s each, PostgreSQL, {a.rounds} interleaved "
          "rounds (median, [min, max] of the rounds)")
    print("workers  wall s                 speed-up over 1         overhead per trial s")
    for n in ns:
        w = walls[n]
        med = statistics.median(w)
        ideal = a.budget * a.trial_s / n
        print(f"{n:<8} {med:6.2f} [{min(w):.2f}, {max(w):.2f}]   "
              f"x{base / med:.2f} [{base / max(w):.2f}, {base / min(w):.2f}] (ideal x{n})   "
              f"{(med - ideal) * n / a.budget:.3f}")
    budget_many = max(a.budget, 4 * a.many)
    wall, study = one_run(url, a.many, budget_many, a.trial_s)
    c = check(study, budget_many)
    ok = (c["counted"] == budget_many and not c["duplicates"] and not c["lost"]
          and not c["running"])
    print(f"\n{a.many} workers, {budget_many} trials: {wall:.2f} s; {c}: "
          f"{'budget exact, no duplicate, no lost result' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
