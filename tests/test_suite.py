"""The test command's own machinery: what scripts/test.sh counts on from pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODULE = '''\
import os

import pytest

pytestmark = pytest.mark.serial


@pytest.mark.parametrize("i", range(4))
def test_where(i):
    with open(os.environ["WHERE"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_a_serial_module_stays_on_one_worker_under_loadgroup(tmp_path: Path) -> None:
    """A module marked `serial` shares one real server across its tests: with arguments,
    scripts/test.sh runs the tests under `-n 6 --dist loadgroup`, and the module must run on
    one worker or its server starts once per worker (pytest 9.2 with pytest-xdist 3.8 spread
    them: pytest-xdist issue #1386)."""
    (tmp_path / "test_shared.py").write_text(MODULE)
    where = tmp_path / "where.txt"
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "-n", "2", "--dist", "loadgroup", "--rootdir", str(tmp_path), "-c", "/dev/null",
         str(tmp_path / "test_shared.py"), "-o", "markers=serial"],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "WHERE": str(where)})
    assert run.returncode == 0, run.stdout + run.stderr
    workers = where.read_text().split()
    assert len(workers) == 4 and len(set(workers)) == 1, workers
