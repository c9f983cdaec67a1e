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
.venv/bin/ruff check autotune tests bench scripts
# the packages' one-way import rule (pyproject.toml's [tool.importlinter] contracts)
.venv/bin/lint-imports
# Each part runs in a session of its own (setsid): however the script ends (a failure, Ctrl-C,
# SIGTERM), every part still running is stopped with all it started; one already waited for is
# left alone.
running=()
scratch=()
stop_parts() {
    local pid
    for pid in "${running[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    rm -rf "${scratch[@]}"
}
trap stop_parts EXIT
trap 'exit 130' INT TERM
start() {  # runs "$@" as a part; its pid in $part
    setsid "$@" &
    part=$!
    running+=("$part")
}
finish() {  # waits for the part $1, which is then no longer running, whatever it returned
    local rc=0 pid left=()
    wait "$1" || rc=$?
    for pid in "${running[@]}"; do [ "$pid" = "$1" ] || left+=("$pid"); done
    running=("${left[@]}")
    return "$rc"
}
# mypy checks the types while the tests run; its verdict is printed at the end
types_log="$(mktemp)"
scratch+=("$types_log")
start .venv/bin/mypy autotune bench >"$types_log" 2>&1
types=$part
status=0
if [ $# -gt 0 ]; then
    # most tests wait on stand-in servers: six at a time (a later -n in "$@" wins); the
    # modules marked `serial` each stay on one worker (conftest.py groups them)
    start .venv/bin/python -m pytest -n 6 --dist loadgroup "$@"
    finish "$part" || status=$?
    finish "$types" || status=1
    cat "$types_log"
    exit "$status"
fi
# Three parts at once, every one run whatever another found; the script fails if any failed.
# - Everything not marked `serial`, three at a time (pytest-xdist): most wait on stand-in
#   servers whose speeds differ by gaps a busy machine cannot close, and the real-engine ones
#   check what a server does (fails, dies, leaves behind, answers, counts), not how fast.
# - Those marked `serial`, in one process beside it: each module shares one real server (or one
#   real run) across its tests, which spread over workers would start once per worker.
# - The tests that need no engine once more, on the lowest versions pyproject.toml allows
#   (scripts/lowest.sh: its own venv, uv's lowest-direct resolution), so a declared range
#   cannot drift below what the code uses.
serial_log="$(mktemp)"
serial_tmp="$(mktemp -d)"
lowest_log="$(mktemp)"
scratch+=("$serial_log" "$serial_tmp" "$lowest_log")
start .venv/bin/python -m pytest -m serial -p no:cacheprovider --basetemp="$serial_tmp" \
    >"$serial_log" 2>&1
serial=$part
start scripts/lowest.sh -q -n 2 >"$lowest_log" 2>&1
lowest=$part
start .venv/bin/python -m pytest -n 3 --dist worksteal -m "not serial"
finish "$part" || status=$?
finish "$types" || status=1
cat "$types_log"
echo "== the tests that share one real server or run (marked serial), in one process"
finish "$serial" || status=1
cat "$serial_log"
echo "== the tests that need no engine, on the lowest allowed versions (scripts/lowest.sh)"
if finish "$lowest"; then
    tail -n 25 "$lowest_log"
else
    status=1
    cat "$lowest_log"
fi
exit "$status"
