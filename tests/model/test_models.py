"""Resolving `--model`: a hub id that cannot be loaded stops the run at once, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.core.errors import UserError
from autotune.model.resolve import resolve_model


def test_an_unreachable_hub_stops_the_run_in_seconds_with_one_line_and_a_hint(
        tmp_path: Path) -> None:
    """No hub and nothing cached: before, the tokenizer's download retried every file for
    about 53 s and printed 48 lines of warnings before its one line."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # a port nobody listens on: refused at once, whatever this machine's network
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
         "Qwen/Qwen3-0.6B", "--trials", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "'Qwen/Qwen3-0.6B' is not in the local cache and the model hub " \
           "(http://127.0.0.1:9) cannot be reached" in proc.stderr
    assert "give a local model directory, or set HF_HUB_OFFLINE=1" in proc.stderr
    # no retry loop: it printed "Retrying" for every file (how long the one line takes is the
    # machine's: 23 s was seen beside a full CI run; a hang fails at the timeout)
    assert "Retrying" not in proc.stdout + proc.stderr
    assert not (tmp_path / "autotune-runs").exists()


def test_offline_mode_with_the_model_not_cached_says_so(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")  # huggingface_hub takes 1/true/yes/on
    with pytest.raises(UserError, match=r"not in the local cache and HF_HUB_OFFLINE is set; "
                                        r"give a local model directory"):
        resolve_model("autotune-tests/never-cached-model")
