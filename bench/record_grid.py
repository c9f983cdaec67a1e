"""Measure every point of a small space on the real CPU engine, for bench.samplers to replay.

Runs `autotune run` with the grid sampler over `bench/spaces/grid-cpu.yaml` (24 points: one
server start each, vLLM's defaults first; the defaults' point of the grid is answered from
their trial), then writes each point's settings and figures, each with its 95% interval over
its rounds, as JSON:

    .venv/bin/python -m bench.record_grid --out bench/data/grid-cpu-avx512.json

About 35 minutes on 2 cores. The file is committed, so the sampler benchmark replays real
measurements in seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import optuna

from autotune.app.run import RunConfig, run
from autotune.engine.argv import vllm_version
from autotune.engine.probes import cpu_flags, cpu_name
from autotune.measure.records import atomic_write
from autotune.space.search import load_space
from autotune.study.samplers import grid_size
from autotune.study.trials import is_baseline, metrics_of

SPACE = Path(__file__).resolve().parent / "spaces" / "grid-cpu.yaml"
FIGURES = ("output_throughput", "p95_ttft_ms", "median_tpot_ms", "peak_memory_bytes")


def _minutes(study: optuna.Study) -> int:
    """Wall time the trials took (a re-run that only extracts the table takes none)."""
    spans = [(t.datetime_complete - t.datetime_start).total_seconds()
             for t in study.trials if t.datetime_start and t.datetime_complete]
    return round(sum(spans) / 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--space", type=Path, default=SPACE)
    ap.add_argument("--work", type=Path, help="where the study and logs go (default: temp)")
    ns = ap.parse_args()
    space = load_space(ns.space)
    n = grid_size(space)
    work = ns.work or Path(tempfile.mkdtemp(prefix="autotune-grid-"))
    work.mkdir(parents=True, exist_ok=True)
    outcome = run(RunConfig(
        target="cpu", model="builtin:tiny-qwen3", space_path=ns.space, trials=n + 1,
        storage=f"sqlite:///{work / 'grid.db'}", study="grid", profiles_dir=work / "profiles",
        runs_dir=work / "runs"),
        on_trial=lambda r: print(f"trial {r.number}: {r.result.status} "
                                 f"{r.value:.1f}", flush=True))
    points = []
    for t in outcome.study.trials:
        if t.user_attrs.get("repeat_of") is not None or t.user_attrs.get("status") is None:
            continue
        m = metrics_of(t)
        points.append({
            "params": {} if is_baseline(t) else {k: v for k, v in t.params.items()},
            "status": t.user_attrs["status"], "reason": t.user_attrs.get("reason"),
            **{f: m[f].model_dump(mode="json") for f in FIGURES if f in m}})
    atomic_write(ns.out, json.dumps({
        "space": space.name, "objective": "output_throughput", "grid_points": n,
        "cpu": cpu_name(), "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f",
                                                             "avx512_bf16", "amx_bf16"}),
        "machine": platform.machine(), "vllm": vllm_version(),
        "recorded": time.strftime("%Y-%m-%d"), "minutes": _minutes(outcome.study),
        "points": points}, indent=1).encode())
    print(f"{len(points)} points in {ns.out}")


if __name__ == "__main__":
    main()
