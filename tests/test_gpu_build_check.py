"""scripts/check_gpu_build.py's module check (scripts/gpu_build/imports.py), on wheels laid out
by hand: an import autotune tries from two places (one per vLLM release) passes when a wheel has
either, and names both when it has neither. (The check itself runs by hand against the real
wheels: docs/gpu-build.md.)"""

from __future__ import annotations

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


def test_the_parser_import_is_one_import_with_two_places(script: ModuleType) -> None:
    found = [(mods, name) for mods, name, _ in script.vllm_imports()
             if name == "make_arg_parser"]
    assert found == [(("vllm.entrypoints.common.cli_args",
                       "vllm.entrypoints.launchers.cli_args"), "make_arg_parser")]


@pytest.mark.parametrize("place", ["common", "launchers", None])
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
        assert "vllm.entrypoints.common.cli_args or vllm.entrypoints.launchers.cli_args" in drift
        assert "make_arg_parser is now in vllm.entrypoints.serve.args" in drift
