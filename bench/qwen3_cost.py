"""What one trial costs with the built-in Qwen3-0.6B shape on the real CPU engine.

Runs `--starts` trials of vLLM's defaults (plus the shipped CPU space's fixed settings) on
`builtin:qwen3-0.6b`: Qwen3-0.6B's exact architecture (28 layers, hidden 1024, 16 heads, 8 KV
heads, the 151,936-entry embedding and LM head) with vLLM's dummy weights and a generated
tokenizer. Each trial is autotune's own (`objective.run_trial`: a fresh server, the warm-up,
rounds until the stopping rule ends them), with a small load: 128-token prompts, 32 output
tokens, 4 in flight. Prints per start: start-up time, measuring time, output throughput and
TPOT with their intervals over the rounds, and peak memory (a trial whose server counts other
token numbers than planned fails, as in a run); then the start-up's and the whole trial's
spread over the starts.

    .venv/bin/python -m bench.qwen3_cost [--starts 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from autotune.app.trial import TrialSetup, run_trial
from autotune.engine.argv import default_launcher
from autotune.measure.plan import Plan
from autotune.measure.workload import Workload
from autotune.model.builtin import QWEN3_0_6B, ensure_builtin_model
from autotune.model.tokens import ModelTokenizer
from autotune.space.params import TrialParams
from autotune.space.search import load_space
from autotune.testing.fake_probe import FakeProbe

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "cpu.yaml"
LOAD = {"endpoint": "completions", "input_tokens": 128, "output_tokens": 32, "concurrency": 4,
        "num_requests": 8, "warmup_requests": 4, "ignore_eos": True, "seed": 0,
        "measure": {"min_rounds": 3, "min_s": 5, "max_s": 30, "target_ci": 0.05}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=2)
    ns = ap.parse_args()
    space = load_space(SPACE)
    model = str(ensure_builtin_model(QWEN3_0_6B))
    workload = Workload.model_validate(LOAD)
    setup = TrialSetup(model=model, launcher=default_launcher(),
                       plan=Plan(workload, ModelTokenizer(model)), engine=space.engine,
                       probe=FakeProbe(), base_args={"load-format": "dummy"},
                       api_key="bench-key")
    fixed = {k: v for k, v in space.args.items() if k not in space.tuned()}
    print(f"builtin:{QWEN3_0_6B} on the CPU engine, vLLM's defaults + {fixed}; load "
          f"{LOAD['input_tokens']} in / {LOAD['output_tokens']} out, "
          f"{LOAD['concurrency']} in flight, {LOAD['num_requests']} requests a round")
    startups: list[float] = []
    totals: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ns.starts):
            t0 = time.monotonic()
            r = run_trial(TrialParams(args=dict(fixed)), setup, Path(tmp) / f"trial-{i}")
            total = time.monotonic() - t0
            if r.status != "ok":
                print(f"start {i}: FAILED {r.reason}: {r.detail}")
                raise SystemExit(1)
            m = r.metrics
            startups.append(r.value("startup_s") or 0.0)
            totals.append(total)
            print(f"start {i}: start-up {startups[-1]:.0f} s, trial {total:.0f} s in all "
                  f"({len(r.round_values)} rounds, {r.measure_s:.0f} s measured); "
                  f"output_throughput {m['output_throughput'].describe(3)} tok/s, "
                  f"mean_tpot_ms {m['mean_tpot_ms'].describe(3)}, peak memory "
                  f"{(r.value('peak_memory_bytes') or 0) / 2**30:.2f} GiB", flush=True)
    print(f"start-up: median {statistics.median(startups):.0f} s "
          f"[{min(startups):.0f}, {max(startups):.0f}]; a trial: median "
          f"{statistics.median(totals):.0f} s [{min(totals):.0f}, {max(totals):.0f}] "
          f"({len(totals)} starts)")


if __name__ == "__main__":
    main()
