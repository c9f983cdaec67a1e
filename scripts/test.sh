#!/usr/bin/env bash
# Set up (venv, install, engine) and run every check: lint, types, and all tests, including
# those against the real vLLM CPU engine (marked `engine`; the built-in tiny model is generated
# on first use). Extra arguments go to pytest, e.g. scripts/test.sh -m "not engine".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check autotune tests bench
.venv/bin/mypy autotune bench
exec .venv/bin/python -m pytest "$@"
