#!/usr/bin/env bash
# Set up (venv, install, engine) and run every check: lint, types, and all tests, including
# those against the real vLLM CPU engine (marked `engine`; the built-in tiny model is generated
# on first use). Extra arguments go to one pytest run instead, e.g. scripts/test.sh -m "not engine".
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
# the packages' one-way import rule (pyproject.toml's [tool.importlinter] contracts)
.venv/bin/lint-imports
if [ $# -gt 0 ]; then
    .venv/bin/mypy autotune bench
    exec .venv/bin/python -m pytest "$@"
fi
# mypy checks the types while the first part runs; its verdict is read before the second
types_log="$(mktemp)"
trap 'rm -f "$types_log"' EXIT
.venv/bin/mypy autotune bench >"$types_log" 2>&1 &
types=$!
# Most tests wait on stand-in servers, or check what a real server does rather than how fast:
# three at a time. Those marked `alone` compare figures measured on real servers; another test's
# load beside them would move those figures, so they run last, one at a time.
# Beside the first part, the tests that need no engine run once more on the lowest versions
# pyproject.toml allows (scripts/lowest.sh: its own venv, uv's lowest-direct resolution), so a
# declared range cannot drift below what the code uses.
# Every part runs whatever another found; the script fails if anything failed.
lowest_log="$(mktemp)"
trap 'rm -f "$types_log" "$lowest_log"' EXIT
scripts/lowest.sh -q -n 2 >"$lowest_log" 2>&1 &
lowest=$!
status=0
.venv/bin/python -m pytest -n 3 --dist worksteal -m "not alone" || status=$?
wait "$types" || status=1
cat "$types_log"
echo "== the tests that need no engine, on the lowest allowed versions (scripts/lowest.sh)"
wait "$lowest" || status=1
tail -n 25 "$lowest_log"
.venv/bin/python -m pytest -m alone || status=$?
exit "$status"
