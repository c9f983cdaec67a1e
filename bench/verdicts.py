"""How often the verdict rule is wrong, and what it costs, replayed on real measurements.

Replays the rule the run ships, by the very functions the run calls: each server start
measured by the workload's stopping rule (`autotune.measure.stopping`) on per-request samples
recorded from many fresh starts of one setting on the real CPU engine (`bench/record_noise.py`,
committed under bench/data/), and the confirmation driven look by look by
`autotune.decide.looks.drive` and judged by `autotune.decide.verdict.judge` (decisions frozen
at the look they settle, challengers stopped when they can no longer settle, the winner chosen
among several, one goal or two, vLLM's defaults or a current profile as the reference). For
each recording it prints:

- false wins: every challenger has the reference's settings (A/A, A/A/A, A/A/A/A); how often
  does any of them win, per budget, one goal or two, with and without a current profile?
  Stated: at most 2.5%.
- power: the gain an A/A verdict states as found with 80% probability, and how often a
  challenger that truly has it wins; the same for +10%, +20% and 2x, with the mean starts.
- stopping challengers that can no longer be settled: starts with and without it, and the
  share of the same confirmations (the same starts drawn) whose verdict it changes.

Each round of a simulated confirmation gives its arms distinct recorded starts drawn at random
(afresh for every round, so a budget may exceed what was recorded), and each start is read from
a random round onwards. Starts recorded far apart in time carry the machine's drift between
them, which real interleaving cancels, so the figures err on the side of noise. The recordings
hold throughput only: the second goal (memory) is drawn with 1.5% start-to-start noise.

    .venv/bin/python -m bench.verdicts [--data FILE ...] [--sims N]
    .venv/bin/python -m bench.verdicts --live 3     # plus an A/A confirmation on the engine
"""


from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotune.decide.findings import Comparison, Verdict
from autotune.decide.looks import drive
from autotune.decide.pairs import ArmFigures, Goal, Role
from autotune.decide.sequential import ALPHA, Rule
from autotune.decide.verdict import judge
from autotune.measure.stopping import Measure
from bench.starts import DATA, MEASURE, METRIC, Draw, Recording, Synthetic

DETECT = 0.10  # the shipped CPU space's `confirm.detect`


GOALS: list[Goal] = [(METRIC, "maximize"), ("peak_memory_bytes", "minimize")]
MEMORY_SD = 0.015  # a server tree's PSS moves by a per cent or two from start to start
MAX_LOSS = 0.10  # the shipped CPU space's
REPLACE_GAIN = 0.05  # confirm.replace_gain's default


@dataclass(frozen=True)
class Case:
    """One kind of confirmation: who is measured and what the first challenger truly gains
    (every other arm has the reference's settings)."""

    challengers: int = 1
    goals: int = 1
    incumbent: bool = False
    effect: float = 1.0  # the first challenger's throughput, as a factor
    memory: float = 1.0  # its memory, as a factor
    max_loss: float = MAX_LOSS
    memory_sd: float = MEMORY_SD

    def roles(self) -> list[tuple[str, Role]]:
        out: list[tuple[str, Role]] = [("vLLM defaults", "baseline")]
        if self.incumbent:
            out.append(("current profile", "incumbent"))
        return out + [(f"trial {i + 1}", "finalist") for i in range(self.challengers)]

    @property
    def reference(self) -> str:
        return "current profile" if self.incumbent else "vLLM defaults"


@dataclass(frozen=True)
class Outcome:
    winner: str | None
    won: bool  # a challenger beat the reference
    rounds: int
    starts: int  # servers started, all arms
    verdict: Verdict


def confirmation(draw: Draw | Synthetic, case: Case, rule: Rule, seed: int) -> Outcome:
    """One simulated confirmation, run by the run's own driver and judge (looks.drive,
    verdict.judge). Round r of confirmation `seed` draws the same starts whether or not some
    arms are left out, so a rule with and without stopping can be compared on the same
    measurements."""
    roles = case.roles()
    first = len(roles) - case.challengers
    values: list[list[float | None]] = [[] for _ in roles]
    memory: list[list[float | None]] = [[] for _ in roles]

    def measure_round(r: int, active: Sequence[int]) -> None:
        rng = np.random.default_rng((seed, r))
        figures = draw.round(len(roles), rng)
        mems = np.exp(rng.normal(0.0, case.memory_sd, size=len(roles)))
        for i in active:
            gain = (case.effect, case.memory) if i == first else (1.0, 1.0)
            values[i].append(figures[i] * gain[0])
            memory[i].append(4e9 * float(mems[i]) * gain[1])

    def figures() -> list[ArmFigures]:
        return [ArmFigures(name, role, tuple(values[i]),
                           goal_values=((tuple(values[i]), tuple(memory[i]))
                                        if case.goals == 2 else ()),
                           changes=0 if role == "baseline" else 1)
                for i, (name, role) in enumerate(roles)]

    def judge_now(figs: Sequence[ArmFigures], frozen: Mapping[str, Comparison]) -> Verdict:
        return judge(figs, GOALS[:case.goals], 0.0, case.max_loss if case.goals == 2 else 0.0,
                     REPLACE_GAIN if case.incumbent else 0.0, rule, frozen)

    verdict = drive(rule, roles, judge_now, measure_round, figures)
    assert verdict is not None
    return Outcome(verdict.winner, verdict.winner not in (case.reference, None),
                   max(len(v) for v in values), sum(len(v) for v in values), verdict)


def simulate(rec: Recording | Synthetic, m: Measure, case: Case, rule: Rule, n: int,
             seed: int) -> list[Outcome]:
    """`n` simulated confirmations of one case."""
    draw = Draw(rec, m) if isinstance(rec, Recording) else rec
    return [confirmation(draw, case, rule, seed * 1_000_003 + i) for i in range(n)]


def share(outcomes: Sequence[Outcome]) -> float:
    return sum(o.won for o in outcomes) / len(outcomes)


def mean_starts(outcomes: Sequence[Outcome]) -> float:
    return float(np.mean([o.starts for o in outcomes]))


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


def report(path: Path, sims: int, budgets: Sequence[int]) -> bool:
    """Print one recording's figures; True when no A/A cell is beyond the stated rate by
    more than its Monte Carlo error."""
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
          f"means of whole starts vary {spread:.1%} from start to start; memory (synthetic) "
          f"{MEMORY_SD:.1%}")
    print(f"stopping rule of a start: the shipped CPU space's ({MEASURE.min_rounds}+ rounds, "
          f"{MEASURE.min_s:g}-{MEASURE.max_s:g} s, +-{MEASURE.target_ci:.0%}); the "
          f"confirmation: looks from round 3, detect +{DETECT:.0%}, stop below "
          f"{Rule(max_rounds=3).stop_below:.0%}\n")
    ok = aa_table(rec, sims, budgets)
    power_table(rec, sims, budgets)
    stop_table(rec, sims)
    return ok


def aa_table(rec: Recording, sims: int, budgets: Sequence[int]) -> bool:
    print(f"false wins ({n_sims(sims)} confirmations a cell; stated: at most "
          f"{ALPHA:.1%}): every challenger has the reference's settings")
    header = f"{'budget':>6} {'goals':>5} {'reference':>16} {'1 challenger':>13} {'2':>7} {'3':>7}"
    print(header + "\n" + "-" * len(header))
    ok = True
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)
    for b in budgets:
        rule = Rule(max_rounds=b, min_rounds=min(3, b), detect=DETECT)
        for goals in (1, 2):
            for inc in (False, True):
                rates = [share(simulate(rec, MEASURE, Case(k, goals, inc), rule, sims,
                                        100 * b + 10 * k + goals + 5 * inc))
                         for k in (1, 2, 3)]
                ok = ok and all(r <= ALPHA + slack for r in rates)
                ref = "current profile" if inc else "vLLM defaults"
                print(f"{b:>6} {goals:>5} {ref:>16} {rates[0]:>13.1%} {rates[1]:>7.1%} "
                      f"{rates[2]:>7.1%}")
    return ok


def power_table(rec: Recording, sims: int, budgets: Sequence[int]) -> None:
    print("\npower, one challenger, one goal: the gain an A/A verdict states as found with "
          "80% probability (its median), and how often a challenger with that gain, +10%, "
          "+20% and 2x wins; mean starts")
    header = (f"{'budget':>6} {'stated':>8} {'at stated':>10} " +
              " ".join(f"{c:>12}" for c in ("+10%", "+20%", "2x")))
    print(header + "\n" + "-" * len(header))
    for b in budgets:
        rule = Rule(max_rounds=b, min_rounds=min(3, b), detect=DETECT)
        aa = simulate(rec, MEASURE, Case(), dataclasses.replace(rule, stop_below=0.0),
                      sims, 7 * b)
        stated = float(np.median([o.verdict.detectable for o in aa
                                  if o.verdict.detectable is not None]))
        cells = [simulate(rec, MEASURE, Case(effect=e), rule, sims, 7 * b + j)
                 for j, e in enumerate((stated, 1.1, 1.2, 2.0), start=1)]
        print(f"{b:>6} {f'+{stated - 1:.0%}':>8} " + " ".join(
            f"{share(c):>5.0%} {mean_starts(c):>4.1f}".rjust(w)
            for c, w in zip(cells, (10, 12, 12, 12), strict=True)))


def stop_table(rec: Recording, sims: int, below: float | None = None) -> None:
    below = Rule(max_rounds=3).stop_below if below is None else below
    print(f"\nstopping challengers that can no longer be settled (both chances under "
          f"{below:.0%}): mean starts without and with it, budget 6 and 12, and the share of "
          "the same confirmations (the same starts drawn) whose verdict it changes")
    header = f"{'case':34} {'budget':>6} {'starts without':>15} {'with':>6} {'changed':>8}"
    print(header + "\n" + "-" * len(header))
    cases = [("A/A, 1 challenger", Case()), ("+10%, 1 challenger", Case(effect=1.1)),
             ("+20%, 1 challenger", Case(effect=1.2)), ("2x, 1 challenger", Case(effect=2.0)),
             ("A/A, 2 challengers, 2 goals", Case(2, 2)),
             ("x0.35 memory, 2 challengers, 2 goals", Case(2, 2, memory=0.35)),
             ("A/A, 1 challenger, current profile", Case(incumbent=True))]
    for b in (6, 12):
        rule = Rule(max_rounds=b, min_rounds=3, detect=DETECT, stop_below=below)
        for i, (name, case) in enumerate(cases):
            off = simulate(rec, MEASURE, case, dataclasses.replace(rule, stop_below=0.0),
                           sims, 31 * b + i)
            on = simulate(rec, MEASURE, case, rule, sims, 31 * b + i)
            changed = float(np.mean([x.winner != y.winner for x, y in zip(off, on,
                                                                           strict=True)]))
            print(f"{name:34} {b:>6} {mean_starts(off):>15.1f} {mean_starts(on):>6.1f} "
                  f"{changed:>8.1%}")


GPU_NOISE = (0.02, 0.03, 0.05)  # published start-to-start spread of vLLM's throughput on GPUs
GPU_MEMORY_SD = 0.005  # vLLM reserves its share of GPU memory up front: it barely moves
GPU_DETECT = 0.05


def gpu_table(sims: int, budgets: Sequence[int]) -> None:
    """The shipped GPU spaces' confirmation (2 finalists, two goals, detect +5%, max_loss
    5%) at synthetic start-to-start noise: what it finds, and what it costs."""
    print(f"GPU spaces' confirmation at synthetic start-to-start noise ({n_sims(sims)} "
          f"confirmations a cell; 2 finalists and vLLM's defaults, throughput and memory "
          f"({GPU_MEMORY_SD:.1%} noise), detect +{GPU_DETECT:.0%}, max_loss 5%): false wins, "
          "the gain an A/A states as found with 80%, how often +5% and +10% win, and the mean "
          "server starts of each")
    header = (f"{'noise':>5} {'budget':>6} {'A/A wins':>9} {'stated':>7} {'A/A starts':>11} "
              f"{'+5% found':>10} {'starts':>7} {'+10% found':>11} {'starts':>7}")
    print(header + "\n" + "-" * len(header))
    for cv in GPU_NOISE:
        source = Synthetic(cv)
        for b in budgets:
            rule = Rule(max_rounds=b, min_rounds=3, detect=GPU_DETECT)
            cells = [simulate(source, MEASURE, Case(2, 2, effect=e, max_loss=0.05,
                                                    memory_sd=GPU_MEMORY_SD), rule, sims,
                              int(1000 * cv) * 100 + b + j)
                     for j, e in enumerate((1.0, 1.05, 1.10))]
            found = [o.verdict.detectable for o in cells[0]
                     if o.verdict.detectable is not None]
            stated = f"+{float(np.median(found)) - 1:.1%}" if found else "-"
            print(f"{cv:>5.0%} {b:>6} {share(cells[0]):>9.1%} {stated:>7} "
                  f"{mean_starts(cells[0]):>11.1f} {share(cells[1]):>10.0%} "
                  f"{mean_starts(cells[1]):>7.1f} {share(cells[2]):>11.0%} "
                  f"{mean_starts(cells[2]):>7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", default=sorted(DATA.parent.glob(
        "noise-*.json.gz")))
    ap.add_argument("--sims", type=int, default=2000, help="confirmations per figure")
    ap.add_argument("--budgets", type=int, nargs="+", default=[3, 6, 12, 24, 36],
                    help="the sequential rule's budgets of rounds")
    ap.add_argument("--gpu", type=int, nargs="*", metavar="BUDGET",
                    help="only the GPU spaces' table at synthetic noise, for these budgets "
                         "(default 6 10 12 16 20)")
    ap.add_argument("--stop", type=float, nargs="+", metavar="BELOW",
                    help="only the stopping table, the rule stopping a challenger whose "
                         "chances are both under each of these (the shipped: 0.10)")
    ap.add_argument("--live", type=int, default=0, metavar="R",
                    help="also run an A/A confirmation of R rounds on the real engine")
    ns = ap.parse_args()
    if ns.gpu is not None:
        gpu_table(ns.sims, ns.gpu or [6, 10, 12, 16, 20])
        return
    if ns.stop:
        for path in ns.data:
            print(f"data: {path.name}")
            for below in ns.stop:
                stop_table(Recording(path), ns.sims, below)
        return
    ok = True
    for path in ns.data:
        ok = report(path, ns.sims, ns.budgets) and ok
        print()
    print(f"A/A within the stated {ALPHA:.1%} (and its Monte Carlo error) everywhere: "
          + ("yes" if ok else "NO"))
    if ns.live:
        live(ns.live)
    raise SystemExit(0 if ok else 1)


def n_sims(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n / 1000:.0f}k"


if __name__ == "__main__":
    main()
