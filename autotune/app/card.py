"""A profile's baseline card, measured on one fresh server of its own settings (what the card
holds and how it is judged: profiles/card.py).

On the server `--config PROFILE` starts, one after the other:

1. one request at a time: `ROUNDS` rounds of `SINGLE_REQUESTS` requests of the profile's
   workload, its P99 end-to-end latency per round (the card's figure: their mean, with its
   interval over rounds);
2. capacity at the SLO: `ROUNDS` capacity searches (measure/capacity.py: doubling the load
   from half the one-at-a-time rate while the SLO holds, then halving the bracket), each level
   `LEVEL_S` seconds of arrivals at its rate (a queue forms only under a sustained load); the
   card holds the level that held and the one that broke, each a mean over the searches with
   its interval;
3. memory growth: the workload's own load held for the soak (profiles/soak.py's windows), the
   least-squares slope of the server's memory after the first window, in MiB per hour.

The peak memory is the server's own over all of it (its GPU processes on a GPU, its process
tree's PSS on the CPU engine), one reading of the peak.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autotune.core.stats import Estimate, mean_interval
from autotune.engine.argv import ServerSpec
from autotune.engine.memory import MemorySampler, memory_metrics
from autotune.engine.probes import Probe
from autotune.engine.server import VllmServer, free_port
from autotune.measure.capacity import Capacity, CapacitySearch
from autotune.measure.client import LevelRun, Next, run_workload
from autotune.measure.metrics import summarize
from autotune.measure.plan import Plan
from autotune.measure.server_api import Target
from autotune.measure.workload import Workload, capacity_level
from autotune.model.tokens import Tokenizer, load_tokenizer
from autotune.profiles.card import Card, CardCapacity, CardSpec, card_lines
from autotune.profiles.catalog import local_model
from autotune.profiles.profile import Profile
from autotune.profiles.soak import hold, slope

ROUNDS = 3
SINGLE_REQUESTS = 16
LEVEL_S = 10.0  # seconds of arrivals at one rate level of a capacity search
WAVES = 4  # waves of sessions at one concurrency level
MIN_REQUESTS = 8
MAX_LEVELS = 12

Note = Callable[[str], None]


@dataclass(frozen=True)
class CardRun:
    """Where and how a card is measured."""

    spec: CardSpec
    launcher: tuple[str, ...]
    probe: Probe
    log_path: Path
    gpu_indices: Sequence[int] = ()
    startup_timeout_s: float = 600.0
    on_note: Note | None = None


def card_slo(spec: CardSpec, workload: Workload) -> dict[str, float]:
    """The capacity's SLO: the space's `card.slo` when declared, else the workload's
    latency bounds (`slo: {e2el_ms: 1500}` is p95_e2el_ms <= 1500), else the default."""
    if "slo" in spec.model_fields_set:
        return dict(spec.slo)
    own = {f"p95_{k}": float(v) for k, v in workload.slo.items()}
    return own or dict(spec.slo)


def _rounds(n: int) -> Callable[[LevelRun], Next]:
    seen: list[LevelRun] = []

    def after(run: LevelRun) -> Next:
        seen.append(run)
        return "stop" if len(seen) >= n else "continue"
    return after


def level_requests(over: str, level: float) -> int:
    """Requests one level of a capacity search sends: `LEVEL_S` seconds of arrivals at a rate
    (a queue has time to form only under a sustained load), or `WAVES` waves of sessions in
    flight; never fewer than `MIN_REQUESTS`."""
    n = level * LEVEL_S if over == "rate" else level * WAVES
    return max(MIN_REQUESTS, math.ceil(n))


def _search(target: Target, server: VllmServer, w: Workload, tok: Tokenizer, cap: Capacity
            ) -> CapacitySearch:
    search = CapacitySearch(cap)
    level: float | None = search.first()
    while level is not None:
        lw = w.model_copy(update={"capacity": None, "levels": [capacity_level(cap.over, level)],
                                  "num_requests": level_requests(cap.over, level),
                                  "warmup_requests": 0, "duration_s": None})
        (run,) = run_workload(target, Plan(lw, tok), None, server.alive)
        search.record(level, summarize(run.samples).flat())
        level = search.next()
    return search


def measure_card(path: Path, profile: Profile, run: CardRun) -> Card:
    """The card of the profile at `path`: one fresh server, the three parts in turn."""
    note = run.on_note or (lambda line: None)
    workload = Workload.model_validate(profile.meta.workload)
    here = local_model(profile)
    model = here or str(profile.settings["model"])
    tok = load_tokenizer(model)
    spec = ServerSpec(model=None, args={"config": str(path), **({"model": here} if here else {})},
                      env=dict(profile.meta.env), port=free_port(), launcher=run.launcher)
    slo = card_slo(run.spec, workload)
    mem = MemorySampler(run.probe, None, run.gpu_indices)
    server = VllmServer(spec, run.log_path, startup_timeout_s=run.startup_timeout_s,
                        on_start=mem.watch)
    with mem, server:
        target = Target(server.base_url)
        note(f"one request at a time: {ROUNDS} rounds of {SINGLE_REQUESTS}")
        single = workload.model_copy(update={"levels": [], "capacity": None, "concurrency": 1,
                                             "num_requests": SINGLE_REQUESTS,
                                             "warmup_requests": 2, "duration_s": None})
        runs = run_workload(target, Plan(single, tok), None, server.alive, _rounds(ROUNDS))
        e2e = [summarize(r.samples).e2el_ms for r in runs]
        p99 = mean_interval([s.p99 for s in e2e], basis="rounds")
        serial_rate = 1000.0 / max(statistics.fmean([s.mean for s in e2e]), 1e-3)
        if run.spec.over == "rate":
            low = float(f"{max(serial_rate / 2, 0.01):.3g}")
            cap = Capacity(over="rate", low=low, high=low * 1024, slo=slo, resolution=0.25,
                           max_levels=MAX_LEVELS)
        else:
            cap = Capacity(over="concurrency", low=1, high=1024, slo=slo, resolution=0.25,
                           max_levels=MAX_LEVELS)
        searches = []
        for i in range(ROUNDS):
            note(f"capacity at {_slo_text(slo)}: search {i + 1} of {ROUNDS}")
            searches.append(_search(target, server, workload, tok, cap))
        note(f"memory growth: holding the workload's load for {run.spec.soak_s:.0f} s")
        windows = hold(server, Plan(workload, tok), run.spec.soak_s, run.probe,
                       run.gpu_indices, window_s=max(run.spec.soak_s / 10, 1.0))
        mem.sample_quietly(full=True)
    peak = memory_metrics(mem.peaks, bool(run.gpu_indices))["peak_memory_bytes"]
    held = [s.held or 0.0 for s in searches]
    broke = [s.broke for s in searches]
    capacity = CardCapacity(
        over=cap.over, slo=slo, held=mean_interval(held, basis="rounds"),
        broke=(mean_interval([b for b in broke if b is not None], basis="rounds")
               if all(b is not None for b in broke) else None))
    later = windows[1:]
    growth = slope([w.t_s / 3600 for w in later], [w.memory_bytes / 2**20 for w in later])
    figures: dict[str, Estimate | None] = {
        "p99_e2e_ms": p99,
        "peak_memory_gib": Estimate.single(peak / 2**30) if peak > 0 else None,
        "capacity": capacity.held, "growth_mib_per_h": growth}
    levels = sum(len(s.probes) for s in searches)
    each = (f"{LEVEL_S:g} s of arrivals" if cap.over == "rate" else f"{WAVES} waves")
    how = (f"one fresh server: P99 end-to-end over {ROUNDS} rounds of {SINGLE_REQUESTS} "
           f"requests one at a time; capacity at {_slo_text(slo)} in {ROUNDS} searches "
           f"({levels} levels in all, {each} a level); memory growth "
           f"over a {windows[-1].t_s if windows else 0:.0f} s soak in {len(windows)} windows; "
           "intervals 95% over rounds, searches and windows")
    return Card(measured=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                how=how, memory_kind="gpu_process" if run.gpu_indices else "host_pss",
                capacity=capacity, soak_s=run.spec.soak_s,
                lines=card_lines(figures, run.spec))


def _slo_text(slo: dict[str, float]) -> str:
    return ", ".join(f"{k} <= {v:g}" for k, v in slo.items())


__all__ = ["CardRun", "card_slo", "measure_card"]
