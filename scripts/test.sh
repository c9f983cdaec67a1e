#!/usr/bin/env bash
# Set up (venv, install, engine) and run every check: lint, types, and all tests, including
# those against the real vLLM CPU engine (marked `engine`; the built-in tiny model is generated
# on first use). Extra arguments go to pytest, e.g. scripts/test.sh -m "not engine".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check autotune tests bench
.venv/bin/mypy autotune bench
# two workers: the real-engine tests on one, one at a time (tests/conftest.py), the rest on the
# other, on the cores a starting server leaves idle
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
