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

from autotune.memory import HOST_TOLERANCE_ENV

DATA = Path(__file__).parent / "data"
NO_VLLM = Path(__file__).parent / "no_vllm"
FAKE_LAUNCHER = (sys.executable, "-m", "autotune.testing.fake_vllm")
REAL_LAUNCHER = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")


def strays(tag: str) -> list[psutil.Process]:
    """Processes the stand-in started outside its group (`--fake-stray`), found by the
    `tag` their command line carries: "cwd=DIR" or "port=N"."""
    return [p for p in psutil.process_iter(["cmdline"])
            if "fake_vllm_stray" in " ".join(cmd := p.info["cmdline"] or [])
            and tag in " ".join(cmd)]


@functools.cache
def engine_problem() -> str | None:
    from autotune.vllm_args import engine_problem

    return engine_problem()


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
    from autotune.builtin_model import TINY_QWEN3, ensure_builtin_model

    return ensure_builtin_model(TINY_QWEN3)
