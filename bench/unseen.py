"""Out of sample: on a model shape and a load no test uses, is a small search's profile as good
as the best point of an exhaustive measurement, judged by vLLM's own benchmark client?

1. Generates a Qwen3-architecture model of another shape than the built-in one (8 layers,
   hidden 512, 8 heads, 4 KV heads, MLP 1536, a 2048-token vocabulary).
2. Runs `autotune run --gpu cpu --trials N` (default 6) over `bench/spaces/unseen-cpu.yaml`
   (12 points; 256-token prompts, 32 output tokens, 8 in flight: a load no test uses), as a
   user would, and reads the profile it writes and the verdict it prints.
3. Measures every point of the same space with `vllm bench serve` (in-process, random
   dataset, the same lengths and concurrency): one fresh server per point, a warm-up, then
   `--rounds` rounds, points in a shuffled order; each point's output throughput is the mean
   of its rounds with a 95% t interval.
4. Prints the table and the check: the profile's point (vLLM's defaults when the run kept
   them) must be within the best point's interval (its mean at least the best's lower end).
   Where the run found nothing better than vLLM's defaults beyond noise, its verdict line
   says so; the table shows whether that was right.

    .venv/bin/python -m bench.unseen [--trials 6] [--rounds 3]

About 35 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from autotune.builtin_model import cache_root, corpus_text, write_qwen3_model
from autotune.engine import ServerSpec, VllmServer, free_port
from autotune.profile import read_profile
from autotune.samplers import grid_of
from autotune.space import load_space
from autotune.stats import Estimate, mean_interval

from ._common import FAKE, KEY, REAL, vllm_client

SPACE = Path(__file__).resolve().parent / "spaces" / "unseen-cpu.yaml"
SHAPE = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
         "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64}


def make_model() -> Path:
    out = cache_root() / "bench" / "unseen-qwen3-v1"
    if not (out / "config.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None))
        write_qwen3_model(tmp, corpus_text(seed=5).splitlines(), vocab_size=2048, shape=SHAPE)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    return out


def points(space_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The space's fixed args, env and workload, and every point of its tuned options."""
    doc = yaml.safe_load(space_path.read_text())
    space = load_space(space_path)
    tuned = space.tuned()
    fixed = {k: v for k, v in doc["args"].items() if k not in tuned}
    values = grid_of(space)
    grid = [dict(zip(values, combo, strict=True))
            for combo in itertools.product(*values.values())]
    return {"args": fixed, "env": {k: str(v) for k, v in (doc.get("env") or {}).items()},
            "workload": doc["workload"]}, grid


def label(point: dict[str, Any]) -> str:
    set_ = {k: v for k, v in point.items() if v is not None}
    return ", ".join(f"{k}={v}" for k, v in set_.items()) or "vLLM's defaults"


def run_autotune(model: Path, trials: int, work: Path, launcher: tuple[str, ...]
                 ) -> tuple[dict[str, Any], list[str]]:
    """The profile's settings and the run's printed lines."""
    exe = Path(sys.executable).with_name("autotune")
    space = SPACE
    if launcher != REAL:
        # the stand-in checks the script, not the figures: measure each trial briefly
        doc = yaml.safe_load(SPACE.read_text())
        doc["workload"]["measure"] = {"min_rounds": 2, "min_s": 0.2, "max_s": 1}
        space = work / SPACE.name
        space.write_text(yaml.safe_dump(doc))
    cmd = [str(exe), "run", "--gpu", "cpu", "--model", str(model), "--space", str(space),
           "--trials", str(trials), "--storage", f"sqlite:///{work / 'study.db'}",
           "--profiles-dir", str(work / "profiles"), "--runs-dir", str(work / "runs")]
    if launcher != REAL:
        cmd += ["--launcher", " ".join(launcher), "--no-verify-options"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in lines:
        print("  |", line, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"autotune run exited {proc.returncode}")
    (path,) = (work / "profiles").rglob("*.yaml")
    return read_profile(path).settings, lines


def measure(model: Path, base: dict[str, Any], point: dict[str, Any], rounds: int,
            work: Path, launcher: tuple[str, ...]) -> Estimate:
    wl = base["workload"]
    args = {**base["args"], **{k: v for k, v in point.items() if v is not None}}
    spec = ServerSpec(model=str(model), args=args, env=base["env"], port=free_port(),
                      api_key=KEY, launcher=launcher)
    log = work / f"server-{'-'.join(str(v) for v in point.values())}.log"
    with VllmServer(spec, log, startup_timeout_s=600) as s:
        vllm_client(s.base_url, str(model), wl["warmup_requests"], wl["concurrency"],
                    wl["input_tokens"], wl["output_tokens"])
        values = [float(vllm_client(s.base_url, str(model), wl["num_requests"],
                                    wl["concurrency"], wl["input_tokens"],
                                    wl["output_tokens"])["output_throughput"])
                  for _ in range(rounds)]
    return mean_interval(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--server", choices=("real", "stand-in"), default="real",
                    help="the stand-in engine checks the script itself in seconds")
    ns = ap.parse_args()
    launcher = REAL if ns.server == "real" else FAKE
    work = ns.work or Path(tempfile.mkdtemp(prefix="autotune-unseen-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_model()
    base, grid = points(SPACE)
    settings, lines = run_autotune(model, ns.trials, work, launcher)
    chosen = {k: settings.get(k) for k in grid[0]}
    verdict = [ln for ln in lines if "beyond noise" in ln or "verdict" in ln.lower()]

    print(f"\nexhaustive: {len(grid)} points, {ns.rounds} rounds of vLLM's own client each, "
          "one fresh server per point, in a shuffled order", flush=True)
    random.Random(0).shuffle(grid)
    table: list[tuple[dict[str, Any], Estimate]] = []
    for point in grid:
        e = measure(model, base, point, ns.rounds, work, launcher)
        table.append((point, e))
        print(f"  {label(point):<48} {e.value:8.1f} tok/s [{e.low:.1f}, {e.high:.1f}]",
              flush=True)
    table.sort(key=lambda pe: -pe[1].value)
    best_point, best = table[0]
    mine = next(e for p, e in table if p == chosen)
    print(f"\nbest of the exhaustive measurement: {label(best_point)}: {best.value:.1f} tok/s "
          f"[{best.low:.1f}, {best.high:.1f}]")
    print(f"the run's profile ({ns.trials} trials): {label(chosen)}: {mine.value:.1f} tok/s "
          f"[{mine.low:.1f}, {mine.high:.1f}], {mine.value / best.value:.2f}x the best")
    for ln in verdict:
        print(f"the run said: {ln.strip()}")
    ok = best.low is not None and mine.value >= best.low
    print("PASS: the profile is within the best point's interval" if ok else
          "FAIL: the profile is below the best point's interval")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
