"""An A/A run on the real engine: does `autotune run` say "nothing beat vLLM's defaults", with
the gain it could have seen, when no candidate can be faster than vLLM's defaults?

Runs `autotune run --gpu cpu --model builtin:tiny-qwen3 --space bench/spaces/aa-cpu.yaml` as a
user would, in a fresh folder: the space tunes only vLLM's sampling seed, which does not change
the speed of a server, so every difference the search and the confirmation see is noise. Then
reads the run's JSON summary and prints the verdict, the rounds the confirmation took, each
challenger's ratio to vLLM's defaults with its interval, and the smallest gain the measurement
would have found. `judge` decides: PASS when the run kept vLLM's defaults and said what it could
have seen; FAIL (exit 1) when it named a winner, or gave no detectable gain.

    .venv/bin/python -m bench.aa_run [--trials 3]     # about 12-20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPACE = Path(__file__).resolve().parent / "spaces" / "aa-cpu.yaml"
NOTHING = "nothing beat vLLM's defaults"


@dataclass(frozen=True)
class Judgement:
    passed: bool
    lines: list[str]


def judge(summary: dict[str, Any]) -> Judgement:
    """PASS when the run kept vLLM's defaults and stated its detectable gain."""
    conf = summary.get("confirmation") or {}
    lines = [f"verdict: {summary.get('verdict')}"]
    if conf:
        lines.append(f"confirmation: {conf.get('rounds')} of at most {conf.get('max_rounds')} "
                     f"interleaved rounds, a fresh server per arm per round")
    comparisons = conf.get("comparisons") or []
    for c in comparisons:
        r = c["ratio"]
        bounds = ", ".join("?" if b is None else f"{b:.3g}" for b in (r["low"], r["high"]))
        lines.append(f"  {c['challenger']} / {c['reference']}: x{r['value']:.3g} "
                     f"[{bounds}] (95%, {r['n']} rounds); "
                     f"{'beats' if c['beats'] else 'does not beat'} it")
    detectable = conf.get("detectable")
    if any(c["beats"] for c in comparisons) or NOTHING not in str(summary.get("verdict")):
        lines.append("FAIL: no 'nothing beat vLLM's defaults' where every candidate differs "
                     "by noise alone")
        return Judgement(False, lines)
    if detectable is None:
        lines.append("FAIL: the verdict does not say what gain it could have seen")
        return Judgement(False, lines)
    lines.append(f"PASS: vLLM's defaults kept; a gain of {detectable - 1:+.0%} or more would "
                 "have been found (80% power)")
    return Judgement(True, lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--launcher", default=None, help="a stand-in's launcher (tests)")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
               "builtin:tiny-qwen3", "--space", str(SPACE), "--trials", str(ns.trials),
               "--json", "summary.json"]
        if ns.launcher:
            cmd += ["--launcher", ns.launcher, "--no-verify-options"]
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "AUTOTUNE_STORAGE"}  # a fresh study
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False,
                              env=env)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
            sys.exit(f"autotune run exited {proc.returncode}")
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    print(f"A/A run: {ns.trials} trials of {SPACE.name} (only the sampling seed tuned), "
          f"{took / 60:.1f} min")
    verdict = judge(summary)
    print("\n".join(verdict.lines))
    sys.exit(0 if verdict.passed else 1)


if __name__ == "__main__":
    main()
