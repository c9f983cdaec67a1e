#!/usr/bin/env bash
# Set up (venv, install, engine) and run every check: lint, types, and all tests, including
# those against the real vLLM CPU engine (marked `engine`; the built-in tiny model is generated
# on first use). Extra arguments go to pytest, e.g. scripts/test.sh -m "not engine".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# the report is opened in a real headless browser: Debian's chromium (root: installed here)
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: the report test needs Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
# many workers on one study: a real PostgreSQL server (Debian's package), started here
eval "$(scripts/postgres.sh)"
.venv/bin/ruff check autotune tests bench
.venv/bin/mypy autotune bench
exec .venv/bin/python -m pytest "$@"
