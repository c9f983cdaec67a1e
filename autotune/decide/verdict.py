"""Pure: the confirmation round's decision, from figures measured side by side.

Each arm (vLLM's defaults, the current profile, the search's finalists) is measured in
interleaved rounds, a fresh server each time, so round i of every arm saw the same state of
the machine. The reference is the current profile if there is one and it served most rounds,
else vLLM's defaults. A challenger beats the reference only *beyond noise*, on one goal or
several (pairs.py): on a goal, the interval of its paired ratio, at the level the sequential
rule (sequential.py) gives this look, divided among every challenger and goal, lies wholly on
the better side of 1 (+- `min_gain`); every other goal is shown to lose at most `max_loss`.
Failures count alike on both sides, round by round (pairs.py). When several arms beat the
reference one is chosen on these figures (choose.py). The interval stated is the one decided
on: it covers the choice among finalists and the looks taken. Each comparison states what it
could have seen and, while open, the rounds it would still need and its chances from here
(outlook.py); one that cannot be settled in the rounds left is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autotune.core.stats import mean_interval, paired_ratio, served
from autotune.decide import wording
from autotune.decide.choose import choose
from autotune.decide.findings import Comparison, Seat, Verdict
from autotune.decide.outlook import outlook
from autotune.decide.pairs import ArmFigures, Direction, Goal, Role, compare, series
from autotune.decide.sequential import ALPHA, Rule, two_sided

__all__ = ["ArmFigures", "Comparison", "Direction", "Role", "Verdict", "decide", "judge"]


def seat(arms: Sequence[ArmFigures]) -> Seat:
    """The reference: the current profile unless it failed most rounds (then it is declared
    broken), else vLLM's defaults if they served most rounds."""
    by_role = {a.role: a for a in arms if a.role != "finalist"}
    inc, base = by_role.get("incumbent"), by_role.get("baseline")
    broken = None
    if inc is not None and not inc.mostly_served:
        broken = (f"the current profile failed {inc.failed} of {inc.measured} rounds "
                  f"({inc.failure or 'failed'}): declared broken")
    ref = next((a for a in (inc, base) if a is not None and a.mostly_served), None)
    note = ""
    if ref is not None and ref.failed:
        note = (f" ({ref.name} failed {ref.failed} of {ref.measured} rounds "
                f"({ref.failure or 'failed'}): each counts against it)")
    return Seat(ref, broken, note)


def final(frozen: Mapping[str, Comparison] | None, name: str, reference: str
          ) -> Comparison | None:
    """A challenger settled (or stopped) at an earlier look against the same reference: its
    decision stands (a sequential test ends at the first boundary it crosses)."""
    c = (frozen or {}).get(name)
    return c if c is not None and c.reference == reference else None


def failed_where_served(ours: ArmFigures, theirs: ArmFigures) -> bool:
    """Whether `ours` failed a round that `theirs` served."""
    n = min(ours.measured, theirs.measured)
    return any(not served(a) and served(b)
               for a, b in zip(ours.values[:n], theirs.values[:n], strict=True))


def judge(arms: Sequence[ArmFigures], goals: Sequence[Goal], min_gain: float = 0.0,
          max_loss: float = 0.05, replace_gain: float = 0.0, rule: Rule | None = None,
          frozen: Mapping[str, Comparison] | None = None) -> Verdict:
    """Which arm the run should keep, at a look after the rounds measured so far, on one goal
    or several (the primary first). Against the current profile a challenger must win by
    `replace_gain` at least (no flapping). `frozen`: comparisons settled or stopped at
    earlier looks, which stand."""
    rounds = max((a.measured for a in arms), default=0)
    st = seat(arms)
    reference = st.reference
    if reference is None:
        return _no_reference(arms, goals[0][1], rounds, min_gain, st)
    if reference.role == "incumbent":
        min_gain = max(min_gain, replace_gain)
    rule = rule if rule is not None else Rule(max_rounds=max(2, rounds),
                                              min_rounds=max(2, rounds))
    loss = 0.0 if len(goals) == 1 else max_loss
    # every arm but the reference shares the rate, whether it is still measured or not: a
    # challenger dropped or stopped never hands its share to the others
    k = max(1, (len(arms) - 1) * len(goals))
    win, fut = rule.win_tail(rounds, k), rule.futility_tail(rounds, k)
    level = two_sided(win)
    primary = goals[0][0]
    comparisons = []
    out = []
    for a in arms:
        if a is reference:
            continue
        done = final(frozen, a.name, reference.name)
        if done is not None and done.beats and failed_where_served(a, reference):
            out.append(a.name)  # a winner measured on failed a round the reference served
            continue
        if done is not None:
            comparisons.append(done)
            continue
        p = compare(a, reference, goals, win, fut, min_gain, rule.detect, loss)
        if p.ours_failed:
            out.append(a.name)  # it failed a round the reference served: it cannot win
            continue
        settled = p.beats or p.futile
        o = outlook(p, goals, rule, rounds, k, min_gain, loss, settled)
        stop = (not settled and rounds < rule.max_rounds
                and max(o.win_chance, o.settle_chance) < rule.stop_below)
        comparisons.append(Comparison(
            challenger=a.name, reference=reference.name, ratio=p.tests[primary].ratio,
            decision_interval=p.tests[primary].decision, beats=p.beats, settled=settled,
            look=rounds, level=level, detectable=o.detectable[primary],
            more_rounds=None if settled else o.more_rounds,
            goals={m: t.ratio for m, t in p.tests.items()} if len(goals) > 1 else {},
            decision_goals=({m: t.decision for m, t in p.tests.items()}
                            if len(goals) > 1 else {}),
            better_on=p.better_on if len(goals) > 1 else [],
            worse_on=p.worse_on if len(goals) > 1 else [],
            unproven_on=p.unproven_on if len(goals) > 1 else [],
            detectable_goals=o.detectable, reference_failed=p.theirs_failed,
            both_failed=p.both_failed, on_failures=p.on_failures and not (
                bool(p.better_on) and not p.worse_on and not p.unproven_on),
            win_chance=None if settled else o.win_chance,
            settle_chance=None if settled else o.settle_chance, stopped=stop))
    comparisons = _outranked(comparisons, {a.name: a for a in arms}, goals, win, fut, loss)
    done_all = all(c.settled or c.stopped for c in comparisons)
    settled_all = done_all or rounds >= rule.max_rounds
    by_name = {a.name: a for a in arms}
    # ranked on every round measured so far, not on the figures of the look each one won at
    beaters = {c.challenger: paired_ratio(series(by_name[c.challenger], 0),
                                          series(reference, 0)).value
               for c in comparisons if c.beats}
    found = [c.detectable for c in comparisons if c.detectable is not None]
    more = [c.more_rounds for c in comparisons if c.more_rounds is not None]
    stopped = [c.challenger for c in comparisons if c.stopped]
    if not beaters:
        summary = wording.kept(st, reference, rounds, min_gain, max_loss, comparisons, rule,
                               goals)
        return Verdict(reference=reference.name, winner=reference.name, rounds=rounds,
                       level=level, min_gain=min_gain, comparisons=comparisons,
                       summary=summary, settled=settled_all,
                       detectable=max(found) if found else None,
                       more_rounds=max(more) if more else None, broken=st.broken,
                       stopped=stopped, out=out)
    pick = choose(beaters, by_name, goals, win, fut, loss)
    best = next(c for c in comparisons if c.challenger == pick.winner)
    summary = (wording.won(st, reference, best, goals, max_loss, len(arms) - 1, pick.why)
               + wording.outranked_note(comparisons))
    return Verdict(reference=reference.name, winner=pick.winner, rounds=rounds, level=level,
                   min_gain=min_gain, comparisons=comparisons, summary=summary,
                   settled=settled_all, broken=st.broken, choice=pick.why, stopped=stopped,
                   out=out)


def _outranked(comparisons: list[Comparison], arms: Mapping[str, ArmFigures],
               goals: Sequence[Goal], win: float, fut: float, loss: float
               ) -> list[Comparison]:
    """Open challengers that a winner is better than beyond noise on the primary goal are
    stopped: were they to beat the reference later, the choice among winners (choose.py)
    would still rank that winner above them, so they cannot change the outcome."""
    winners = [c.challenger for c in comparisons if c.beats]
    primary = goals[0][0]

    def above(w: str, x: str) -> bool:
        return compare(arms[w], arms[x], goals[:1], win, fut, 0.0, 0.0, 0.0).tests[
            primary].better

    out = []
    for c in comparisons:
        if not c.settled and not c.stopped and winners:
            by = next((w for w in winners if above(w, c.challenger)), None)
            if by is not None:
                c = c.model_copy(update={"stopped": True, "outranked_by": by})
        out.append(c)
    return out


def decide(arms: Sequence[ArmFigures], direction: Direction, min_gain: float = 0.0,
           replace_gain: float = 0.0, rule: Rule | None = None,
           frozen: Mapping[str, Comparison] | None = None) -> Verdict:
    """The decision on one goal (the objective)."""
    return judge(arms, [("objective", direction)], min_gain, 0.0, replace_gain, rule, frozen)


def _no_reference(arms: Sequence[ArmFigures], direction: Direction, rounds: int,
                  min_gain: float, st: Seat) -> Verdict:
    eligible = [a for a in arms if a.ok]
    prefix = f"{st.broken}; " if st.broken else ""
    if not eligible:
        return Verdict(reference="-", winner=None, rounds=rounds, level=1 - 2 * ALPHA,
                       min_gain=min_gain, comparisons=[], broken=st.broken,
                       summary=f"{prefix}no arm met every constraint in every confirmation "
                               "round")
    pick = (max if direction == "maximize" else min)(
        eligible, key=lambda a: mean_interval(a.values).value)
    return Verdict(reference="-", winner=pick.name, rounds=rounds, level=1 - 2 * ALPHA,
                   min_gain=min_gain, comparisons=[], broken=st.broken,
                   summary=f"{prefix}{pick.name} wins by default: neither the current profile "
                           "nor vLLM's defaults served most rounds, so no gain can be stated")
