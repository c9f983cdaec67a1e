"""The suite's own layout: real-engine tests run on one pytest-xdist worker, one at a time
(scripts/test.sh runs `-n 2 --dist loadgroup`). Servers started side by side measure each
other, and a pytest that pytest-xdist cannot group (seen: pytest 9.2) spreads them silently."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_real_engine_tests_share_one_worker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    engine: real engine\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems, pytest_itemcollected\n")
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(
            "import time\nimport pytest\n\n"
            + "".join(f"@pytest.mark.engine\ndef test_engine_{i}():\n    time.sleep(0.2)\n\n"
                      f"def test_other_{i}():\n    time.sleep(0.2)\n\n" for i in range(4)))
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = re.findall(r"^\[(gw\d)\] .*PASSED \S+::(test_\w+)", r.stdout, re.M)
    assert len(ran) == 16, r.stdout
    engine_workers = {gw for gw, test in ran if test.startswith("test_engine")}
    assert len(engine_workers) == 1, r.stdout
    # and the others were not all held back behind them
    assert {gw for gw, test in ran if test.startswith("test_other")} - engine_workers, r.stdout
