#!/usr/bin/env bash
# The tests that need no engine, on the lowest versions pyproject.toml allows (uv's
# lowest-direct resolution), in their own venv (.venv-lowest) and model cache (.cache-lowest):
# a declared range cannot drift below what the code uses. Extra arguments go to pytest.
#   scripts/lowest.sh -n 2
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || scripts/setup.sh >/dev/null
[ -x .venv-lowest/bin/python ] || .venv/bin/uv venv -q -p .venv/bin/python .venv-lowest
# torch (the GP sampler, the built-in model's weights) is the build the engine brought, from
# where pip found it (uv reads no pip configuration)
torch="torch==$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
links="${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}"
.venv/bin/uv pip install -q --python .venv-lowest/bin/python --resolution lowest-direct \
    ${links:+--find-links "$links"} -e ".[dev]" "$torch"
export AUTOTUNE_CACHE_DIR="$PWD/.cache-lowest"
mkdir -p "$AUTOTUNE_CACHE_DIR"
exec .venv-lowest/bin/python -m pytest -m "not engine" -p no:cacheprovider \
    --basetemp="$AUTOTUNE_CACHE_DIR/tmp" "$@"
