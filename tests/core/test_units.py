"""Figures as people read them: memory in GiB in `autotune profiles show` and `diff`, bounds
near 1 with the digits that say which side of 1 they are on."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.cli.main import main
from autotune.core.stats import Estimate
from autotune.core.units import axis_title, describe, est, figure, ratio, unit
from autotune.profiles.profile import Profile, write_profile
from tests.profiles.test_profile import meta

MEMORY = {"value": 6.421e9, "low": 6.35e9, "high": 6.49e9, "n": 4, "basis": "starts"}


def test_memory_reads_in_gib_and_bounds_near_1_keep_their_digits() -> None:
    mem = Estimate.model_validate(MEMORY)
    assert figure("peak_memory_bytes", mem) == "5.98 GiB [5.914, 6.044]"
    assert describe("peak_memory_bytes", mem) == "5.98 GiB [5.914, 6.044] (4 starts)"
    assert figure("p95_ttft_ms", Estimate(value=50.0)) == "50"
    assert ratio(Estimate(value=1.36, low=1.0002, high=1.72)) == "x1.36 [1.0002, 1.72]"
    assert ratio(Estimate(value=0.8, low=0.61, high=0.9997)) == "x0.8 [0.61, 0.9997]"
    assert est(Estimate(value=1.0, low=1.0, high=1.0)) == "1 [1, 1]"
    assert (unit("output_throughput"), unit("request_throughput"), unit("kv_cache_bytes")) == (
        "tok/s", "req/s", "GiB")
    assert axis_title("peak_memory_bytes") == "peak memory (GiB)"


def keep(root: Path, name: str, memory: dict[str, object]) -> Path:
    path = root / "a10g" / f"{name}.yaml"
    figures = {"output_throughput": {"value": 123.4}, "peak_memory_bytes": memory}
    write_profile(Profile(settings={"model": "/m"}, meta=meta(metrics=figures)), path)
    return path


def test_profiles_show_and_diff_print_memory_in_gib(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = keep(tmp_path, "a", MEMORY)
    b = keep(tmp_path, "b", {"value": 7.5e9})
    assert main(["profiles", "show", str(a)]) == 0
    out = capsys.readouterr().out
    assert "  peak_memory_bytes: 5.98 GiB [5.914, 6.044] (4 starts)" in out
    assert "e+09" not in out
    assert main(["profiles", "diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "measured peak_memory_bytes" in x]
    assert line.split()[-4:] == ["[5.914,", "6.044]", "6.985", "GiB"], line
    assert "e+09" not in out
