"""How often the verdict rule is wrong, and what it costs, replayed on real measurements.

Replays the project's own decision rule (the workload's stopping rule,
`autotune.measure.stopping`, for each server start; the paired interval of
`autotune.decide.verdict` across starts, at the level the sequential rule of
`autotune.decide.sequential` gives each look) on per-request samples recorded from
many fresh starts of one setting on the real CPU engine (`bench/record_noise.py`, committed
under bench/data/). For each recording it prints, side by side, today's sequential rule (a
budget of rounds, a look after each from the third on, stopping once every challenger is
settled) and the fixed-round rule (every arm measured R rounds, one look at the end):

- false wins: challengers with the same settings as the reference (A/A, A/A/A, A/A/A/A); how
  often does any of them win? Target <= 5% for every budget and 1-3 challengers.
- the power and the expected server starts (all arms) for a challenger 2x, +20% and +10% better
  than the reference (the recorded figures times the gain: a real gain put into real noise),
  and for an A/A; and, at equal power for +10%, the sequential rule's starts on average over
  those four cases against the fixed rule's.

Each round of a simulated confirmation gives its arms distinct recorded starts drawn at random
(afresh for every round, so R may exceed what was recorded), and each start is read from a
random round onwards. Starts recorded far apart in time carry the machine's drift between
them, which real interleaving cancels, so the figures err on the side of noise.

    .venv/bin/python -m bench.verdicts [--data FILE ...]
    .venv/bin/python -m bench.verdicts --live 3     # plus an A/A confirmation on the engine
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from autotune.decide.sequential import Rule
from autotune.decide.verdict import ArmFigures, decide
from autotune.measure.metrics import RequestSample, summarize
from autotune.measure.stopping import Measure, next_step

DATA = Path(__file__).resolve().parent / "data" / "noise-cpu-avx512.json.gz"
METRIC = "output_throughput"
# the shipped CPU space's stopping rule for a start, and the gain the sequential rule must see
MEASURE = Measure(min_rounds=3, min_s=6, max_s=12, target_ci=0.03)
DETECT = 0.10


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

    def __init__(self, rec: Recording, m: Measure, seed: int) -> None:
        self.rec, self.m = rec, m
        self.rng = np.random.default_rng(seed)
        self.secs: list[float] = []
        self.nrounds: list[int] = []

    @cache  # noqa: B019 - one Draw per simulated cell
    def figure(self, i: int, offset: int) -> tuple[float, float, int]:
        return start_figure(self.rec.rounds[i], self.m, offset)

    def round(self, arms: int) -> list[float]:
        """One round: each arm a distinct recorded start, drawn afresh."""
        out = []
        for i in self.rng.choice(len(self.rec.rounds), size=arms, replace=False):
            v, s, k = self.figure(int(i), int(self.rng.integers(len(self.rec.rounds[i]))))
            self.secs.append(s)
            self.nrounds.append(k)
            out.append(v)
        return out


def confirmation(draw: Draw, arms: int, effect: float, rule: Rule | None, rounds: int
                 ) -> tuple[bool, int]:
    """One simulated confirmation: (did a challenger win, rounds measured). `rule` None: the
    fixed rule, `rounds` rounds and one look; else the sequential rule up to its budget."""
    values: list[list[float | None]] = [[] for _ in range(arms)]
    budget = rounds if rule is None else rule.max_rounds
    verdict = None
    for n in range(1, budget + 1):
        for a, v in enumerate(draw.round(arms)):
            values[a].append(v * (effect if a > 0 else 1.0))
        if rule is None and n < budget:
            continue
        if rule is not None and not rule.looks_at(n):
            continue
        figs = [ArmFigures("baseline", "baseline", tuple(values[0]))] + [
            ArmFigures(f"c{a}", "finalist", tuple(values[a])) for a in range(1, arms)]
        verdict = decide(figs, "maximize", rule=rule)
        if rule is None or verdict.settled:
            break
    assert verdict is not None
    return verdict.winner != "baseline", verdict.rounds


def simulate(rec: Recording, m: Measure, rounds: int, arms: int, effect: float,
             n: int, seed: int, rule: Rule | None = None) -> tuple[float, float, float]:
    """(share of confirmations a challenger won, mean rounds per confirmation, mean seconds
    measured per start)."""
    draw = Draw(rec, m, seed)
    wins, total = 0, 0
    for _ in range(n):
        won, r = confirmation(draw, arms, effect, rule, rounds)
        wins += won
        total += r
    return wins / n, total / n, float(np.mean(draw.secs))


def cases(rec: Recording, m: Measure, rule: Rule | None, rounds: int, n: int
          ) -> dict[str, tuple[float, float]]:
    """(wins, expected starts of both arms) for A/A, 2x, +20% and +10%."""
    out = {}
    for name, effect, seed in (("A/A", 1.0, 1), ("2x", 2.0, 2), ("+20%", 1.2, 3),
                               ("+10%", 1.1, 4)):
        won, r, _ = simulate(rec, m, rounds, 2, effect, n, seed, rule)
        out[name] = (won, 2 * r)
    return out


def live(rounds: int) -> None:
    """An A/A confirmation on the real engine: vLLM's defaults against the same settings
    with only the (speed-neutral) sampling seed changed, `rounds` interleaved rounds."""
    import tempfile

    from autotune.app.trial import TrialSetup, run_trial
    from autotune.decide.confirm import Arm, confirm
    from autotune.engine.argv import default_launcher
    from autotune.measure.plan import Plan
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
    from autotune.model.tokens import ModelTokenizer
    from autotune.space.params import TrialParams
    from autotune.space.search import load_space
    from autotune.testing.fake_probe import FakeProbe

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


def report(path: Path, sims: int, budgets: Sequence[int], fixed: Sequence[int],
           match: Sequence[int]) -> bool:
    """Print one recording's figures; True when every A/A stays within 5%."""
    rec = Recording(path)
    machine = rec.doc["machine"]
    per_start = [float(np.mean([v for v, _ in r])) for r in rec.rounds]
    spread = float(np.std(per_start, ddof=1) / np.mean(per_start))
    within = float(np.mean([np.std([v for v, _ in r], ddof=1) / np.mean([v for v, _ in r])
                            for r in rec.rounds]))
    print(f"data: {path.name}: {len(rec.rounds)} starts x {len(rec.rounds[0])} rounds of "
          f"{len(rec.doc['starts'][0]['rounds'][0])} requests, recorded "
          f"{rec.doc['recorded']} on {machine['cpu']} ({', '.join(machine['flags'])}), "
          f"{machine['vllm']}")
    print(f"noise: {METRIC} per round varies {within:.1%} within a start (sd/mean); the "
          f"means of whole starts vary {spread:.1%} from start to start")
    print(f"start-up: {np.mean(rec.startup_s):.0f} s a start "
          f"({min(rec.startup_s):.0f}-{max(rec.startup_s):.0f}); stopping rule of a start: "
          f"the shipped CPU space's ({MEASURE.min_rounds}+ rounds, {MEASURE.min_s:g}-"
          f"{MEASURE.max_s:g} s, +-{MEASURE.target_ci:.0%})\n")
    ok = True
    print(f"false wins ({n_sims(sims)} confirmations a cell; target <= 5%): a challenger with "
          "the reference's settings wins")
    header = f"{'rule':24} {'1 challenger':>13} {'2':>7} {'3':>7}"
    print(header + "\n" + "-" * len(header))
    rows: list[tuple[str, Rule | None, int]] = [
        *((f"sequential, budget {b}", Rule(max_rounds=b, detect=DETECT), b) for b in budgets),
        *((f"fixed, {r} rounds", None, r) for r in fixed)]
    for name, rule, r in rows:
        rates = [simulate(rec, MEASURE, r, k + 1, 1.0, sims, 10 + k, rule)[0] for k in (1, 2, 3)]
        ok = ok and all(x <= 0.05 for x in rates)
        print(f"{name:24} {rates[0]:>13.1%} {rates[1]:>7.1%} {rates[2]:>7.1%}")
    print(f"\npower and expected server starts (both arms), one challenger; sequential: a look "
          f"after every round from the 3rd, detect +{DETECT:.0%}, power 80% at it")
    header = (f"{'rule':24} " + " ".join(f"{c:>14}" for c in ("A/A", "2x", "+20%", "+10%"))
              + f" {'mean starts':>11}")
    print(header + "\n" + "-" * len(header))
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name, rule, r in rows:
        got = cases(rec, MEASURE, rule, r, sims)
        table[name] = got
        mean = float(np.mean([s for _, s in got.values()]))
        print(f"{name:24} " + " ".join(f"{w:>6.1%} {s:>6.1f}" for w, s in got.values())
              + f" {mean:>11.1f}")
    print("  (each cell: wins, mean starts; an A/A win is a false win)")
    print("\nat equal power for +10%: the sequential budget that finds it as often as the fixed "
          "rule (within 2 points), and the starts each takes on average over the four cases")
    for r in match:
        fixed_cases = table.get(f"fixed, {r} rounds") or cases(rec, MEASURE, None, r, sims)
        power = fixed_cases["+10%"][0]
        fixed_mean = float(np.mean([s for _, s in fixed_cases.values()]))
        for k in (1.2, 1.5, 1.8, 2.1, 2.4):
            budget = round(k * r)
            seq = cases(rec, MEASURE, Rule(max_rounds=budget, detect=DETECT), budget, sims)
            if seq["+10%"][0] >= power - 0.02:
                break
        mean = float(np.mean([s for _, s in seq.values()]))
        short = "" if seq["+10%"][0] >= power - 0.02 else " (no budget up to 2.4x matched)"
        print(f"  fixed, {r} rounds: +10% found {power:.0%}, {fixed_mean:.1f} starts in every "
              f"case; sequential, budget {budget}{short}: found {seq['+10%'][0]:.0%}, starts "
              + ", ".join(f"{c} {s:.1f}" for c, (_, s) in seq.items())
              + f": {mean:.1f} on average, x{mean / fixed_mean:.2f} of the fixed rule's")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", default=sorted(DATA.parent.glob(
        "noise-*.json.gz")))
    ap.add_argument("--sims", type=int, default=1000, help="confirmations per figure")
    ap.add_argument("--budgets", type=int, nargs="+", default=[6, 12, 24, 36],
                    help="the sequential rule's budgets of rounds")
    ap.add_argument("--fixed", type=int, nargs="+", default=[3, 10, 20],
                    help="the fixed rule's rounds")
    ap.add_argument("--match", type=int, nargs="+", default=[20, 40],
                    help="the fixed rule's rounds to compare at equal power for +10%%")
    ap.add_argument("--live", type=int, default=0, metavar="R",
                    help="also run an A/A confirmation of R rounds on the real engine")
    ns = ap.parse_args()
    ok = True
    for path in ns.data:
        ok = report(path, ns.sims, ns.budgets, ns.fixed, ns.match) and ok
        print()
    print("A/A within 5% everywhere: " + ("yes" if ok else "NO"))
    if ns.live:
        live(ns.live)
    raise SystemExit(0 if ok else 1)


def n_sims(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n / 1000:.0f}k"


if __name__ == "__main__":
    main()
