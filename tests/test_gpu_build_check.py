"""scripts/check_gpu_build.py's module check (scripts/gpu_build/imports.py), on wheels laid out
by hand: an import autotune tries from two places (one per vLLM release) passes when a wheel has
either, and names both when it has neither. (The check itself runs by hand against the real
wheels: docs/gpu-build.md.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The check's module check (scripts/gpu_build/imports.py), with the report it fills."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from scripts.gpu_build import common, imports

    mod = ModuleType("check")
    mod.vllm_imports = imports.vllm_imports  # type: ignore[attr-defined]
    mod.check_imports = imports.check_imports  # type: ignore[attr-defined]
    mod.Report = common.Report  # type: ignore[attr-defined]
    return mod


def wheel(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp


def test_the_parser_import_is_one_import_with_three_places(script: ModuleType) -> None:
    """autotune.engine.vllm_args.PARSER_MODULES is read as one import, newest first, and its
    strings are not taken for `-m` launches (each of which every release would have to
    have)."""
    found = [(mods, name) for mods, name, _ in script.vllm_imports() if "cli_args" in str(mods)]
    assert found == [(("vllm.entrypoints.common.cli_args",
                       "vllm.entrypoints.launchers.cli_args",
                       "vllm.entrypoints.openai.cli_args"), "make_arg_parser")]


@pytest.mark.parametrize("place", ["common", "launchers", "openai", None])
def test_a_wheel_with_either_place_passes_and_one_with_neither_names_both(
        script: ModuleType, tmp_path: Path, place: str | None,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = {"vllm/__init__.py": "", "vllm/entrypoints/openai/api_server.py": "",
             "vllm/utils/argparse_utils.py": "class FlexibleArgumentParser: ...\n",
             "vllm/config/scheduler.py": "class SchedulerConfig: ...\n"}
    if place:
        files[f"vllm/entrypoints/{place}/cli_args.py"] = "def make_arg_parser(p): ...\n"
    else:
        files["vllm/entrypoints/serve/args.py"] = "def make_arg_parser(p): ...\n"
    report = script.Report("x")
    script.check_imports(wheel(tmp_path, files), report, verbose=True)
    if place:
        assert report.drift == [], report.drift
        assert f"vllm/entrypoints/{place}/cli_args.py" in capsys.readouterr().out
    else:
        (drift,) = report.drift
        assert ("vllm.entrypoints.common.cli_args or vllm.entrypoints.launchers.cli_args or "
                "vllm.entrypoints.openai.cli_args") in drift
        assert "make_arg_parser is now in vllm.entrypoints.serve.args" in drift


@pytest.mark.usefixtures("script")  # the repository on sys.path
def test_the_children_see_one_platform_plugin_that_names_the_wheels_cpu_platform(
        tmp_path: Path) -> None:
    """vLLM 0.24 to 0.27 take a platform from the `vllm.platform_plugins` entry points (they
    ignore VLLM_TARGET_DEVICE): a child Python on the check's PYTHONPATH finds exactly one,
    ours, and it names the wheel's own CPU platform class."""
    from scripts.gpu_build.wheel import child_env

    env = child_env(tmp_path)
    code = ("import importlib.metadata as m\n"
            "eps = list(m.entry_points(group='vllm.platform_plugins'))\n"
            "print([e.name for e in eps], eps[0].load()() if eps else None)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "['autotune_check_cpu'] vllm.platforms.cpu.CpuPlatform"
    assert env["VLLM_TARGET_DEVICE"] == "cpu"  # 0.28 and later: their own switch
