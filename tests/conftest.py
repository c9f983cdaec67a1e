"""Shared fixtures: the stand-in server's launcher, the built-in model, the engine's presence.

Tests marked `engine` need the installed vLLM (its argument parser or real servers). Without it
they fail, never skip: a passing suite means the engine ran. Every other test runs with vLLM
hidden (from this process and from the Pythons it starts), so the quick loop
`scripts/test.sh -m "not engine"` passes on a host without vLLM, and fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna  # noqa: F401  (its log handler binds to the real stderr, not a test's capture)
import psutil
import pytest

from autotune.engine.memory import HOST_TOLERANCE_ENV

DATA = Path(__file__).parent / "data"
NO_VLLM = Path(__file__).parent / "no_vllm"
FAKE_LAUNCHER = (sys.executable, "-m", "autotune.testing.fake_vllm")
REAL_LAUNCHER = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
# vLLM's engine in the API server's own process: no engine-core and worker processes to
# spawn and import torch again, so a real server starts in about half the time (about 23 s
# against 48 s here). For real-engine tests where neither the process tree nor the speed of
# vLLM's own process layout is under test (one process serves faster on 2 cores: a capacity
# that breaks its SLO with the engine in its own process holds without it).
ONE_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def strays(tag: str) -> list[psutil.Process]:
    """Processes the stand-in started outside its group (`--fake-stray`), found by the
    `tag` their command line carries: "cwd=DIR" or "port=N"."""
    return [p for p in psutil.process_iter(["cmdline"])
            if "fake_vllm_stray" in " ".join(cmd := p.info["cmdline"] or [])
            and tag in " ".join(cmd)]


@functools.cache
def engine_problem() -> str | None:
    from autotune.engine.vllm_args import engine_problem

    return engine_problem()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a module marked `serial` shares one real server or run across its tests: under
    # `--dist loadgroup` (scripts/test.sh with arguments) it stays on one worker
    # (tests/test_suite.py)
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    # before any fixture, so a module's engine fixture never hides the reason
    if item.get_closest_marker("engine") is not None:
        problem = engine_problem()
        if problem is not None:
            pytest.fail(f"a real-engine test cannot run: {problem}", pytrace=False)


@pytest.fixture(autouse=True)
def _no_engine_unless_marked(request: pytest.FixtureRequest,
                             monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # real servers of other tests (a few GiB each) may still be giving their memory back
    # when a run here takes its baseline: it must not take them for its own
    monkeypatch.setenv(HOST_TOLERANCE_ENV, "8")
    if request.node.get_closest_marker("engine") is None:
        monkeypatch.setitem(sys.modules, "vllm", None)  # type: ignore[arg-type]
        path = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", f"{NO_VLLM}{os.pathsep}{path}" if path else str(NO_VLLM))
    yield


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    return ensure_builtin_model(TINY_QWEN3)


def here_profile(model_slug: str = "builtin-tiny-qwen3") -> Path:
    """Where a run on this machine's CPU writes its profile, relative to the profiles' root
    parent: `profiles/<this CPU's key>/<model>.yaml` (CI machines differ in their key)."""
    from autotune.engine.hardware import detect_hardware
    from autotune.testing.fake_probe import FakeProbe

    return Path("profiles") / detect_hardware("cpu", FakeProbe()).key / f"{model_slug}.yaml"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server (Debian's package): the one scripts/test.sh started, else
    started here by the same script. The URL carries no password: libpq reads PGPASSWORD."""
    if not os.environ.get("AUTOTUNE_TEST_POSTGRES"):
        import subprocess

        script = Path(__file__).parent.parent / "scripts" / "postgres.sh"
        out = subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, value = line.removeprefix("export ").split("=", 1)
            os.environ[key] = value
    return os.environ["AUTOTUNE_TEST_POSTGRES"]
