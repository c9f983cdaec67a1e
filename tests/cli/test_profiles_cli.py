"""`autotune profiles` and `autotune serve` on names, arms, numbers and vLLM's options: the
names `profiles list` shows open from any directory, `show` has the confirmation's arms,
`diff --json` gives numbers, and options after `--` are checked as `validate` checks a file's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import autotune.engine.vllm_args
import autotune.profiles.catalog
from autotune.cli.main import main
from autotune.core.errors import ConfigError
from autotune.engine.vllm_args import problems
from autotune.profiles.catalog import SHIPPED_DIR, argv_options, shipped_root
from tests.profiles.test_catalog import keep

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = "cpu-amd-avx512bf16-2c/builtin-tiny-qwen3"


def test_the_shipped_catalog_opens_by_the_name_list_shows_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # outside the checkout: no profiles/ here
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert f"\n{SHIPPED}  " in out  # its name, not a path into the checkout
    assert main(["profiles", "list", "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out) if r["shipped"]}
    assert SHIPPED in names
    for name in names:
        assert main(["profiles", "show", name]) == 0
        assert "serve: python -m vllm.entrypoints.openai.api_server --config " in (
            capsys.readouterr().out)
        assert main(["serve", name, "--print", "--no-verify-options"]) == 0
        assert capsys.readouterr().out.strip().endswith(f"{name}.yaml")


def test_one_of_the_users_own_by_that_name_comes_first_and_the_shipped_shows_by_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    shipped, mine = tmp_path / "shipped", tmp_path / "mine"
    theirs = keep(shipped, "a10g", "qwen", {"max-num-seqs": 8})
    own = keep(mine, "a10g", "qwen", {"max-num-seqs": 64})
    monkeypatch.setattr(autotune.profiles.catalog, "shipped_root", lambda: shipped)
    assert main(["profiles", "show", "a10g/qwen", "--profiles-dir", str(mine)]) == 0
    assert f"--config {own}" in capsys.readouterr().out
    assert main(["profiles", "list", "--profiles-dir", str(mine), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["shipped"]) for r in rows] == [(str(own), False),
                                                         (str(theirs), True)]


def test_an_installed_package_finds_the_catalog_pyproject_puts_in_it(tmp_path: Path) -> None:
    # the wheel carries the checkout's profiles/ as autotune/shipped_profiles (tomllib is
    # not in Python 3.10: the line is read as written)
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[tool.hatch.build.targets.wheel.force-include]")[1]
    assert f'"profiles" = "autotune/{SHIPPED_DIR}"' in section.split("\n[")[0]
    package = tmp_path / "site-packages" / "autotune"
    (package / SHIPPED_DIR / "cpu-x").mkdir(parents=True)
    assert shipped_root(package) == package / SHIPPED_DIR


def test_show_has_the_arms_of_the_confirmation_with_their_ratios_to_the_defaults(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", str(ROOT / "profiles" / f"{SHIPPED}.yaml")]) == 0
    out = capsys.readouterr().out
    arms = out[out.index("confirmation arms (6 interleaved rounds"):]
    assert "  vLLM defaults (baseline, this profile)\n    output_throughput 2292 [1967, 2618]" \
        in arms
    assert ("  trial 2 (finalist)\n    output_throughput 2030 [1589, 2471] (6 starts)\n"
            "    vs vLLM defaults: output_throughput x0.875 [0.673, 1.14], "
            "peak_memory_bytes x0.356 [0.352, 0.359]") in arms


def test_diff_json_gives_figures_as_numbers(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    a = keep(tmp_path, "cpu-intel-avx2-2c", "qwen", {"max-num-seqs": 8})
    b = keep(tmp_path, "cpu-intel-avx2-2c", "other", {})
    assert main(["profiles", "diff", str(a), str(b), "--json"]) == 0
    rows = {r["what"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    fig = rows["measured output_throughput"]
    assert fig["a"] == {"value": 123.4, "low": 120.0, "high": 126.5, "n": 4, "basis": "starts"}
    assert rows["measured p95_ttft_ms"]["a"]["low"] is None
    assert rows["max-num-seqs"]["a"] == 8 and rows["max-num-seqs"]["b"] is None
    assert rows["max-num-seqs"]["differs"] and not fig["differs"]


def vllm_like() -> argparse.ArgumentParser:
    """A few of vLLM's serve options, as its parser declares them."""
    p = argparse.ArgumentParser()
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--port", type=int)
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction)
    p.add_argument("--allowed-origins", nargs="+")
    return p


@pytest.mark.parametrize(("argv", "bad"), [
    (["--max-num-seqs", "banana"], {"max-num-seqs"}),
    (["--max-num-seqs=8", "--port", "8001", "--enforce-eager"], set()),
    (["--no-enforce-eager", "--allowed-origins", "a", "b"], set()),
    (["--max-num-seq", "8"], {"max-num-seq"}),
    # a word too many is taken as a second value: the option it follows is named
    (["--port", "8001", "stray"], {"port"}),
    (["stray", "--port", "8001"], {"stray"}),
    (["-tp", "2", "--port", "-1"], set()),  # a short option is left to vLLM
])
def test_options_after_the_double_dash_are_asked_as_vllms_parser_takes_them(
        argv: list[str], bad: set[str]) -> None:
    assert set(problems(vllm_like(), argv_options(argv))) == bad


def test_serve_checks_the_options_after_the_double_dash_as_validate_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    p = keep(tmp_path, "a10g", "qwen", {"max-num-seqs": 64})
    asked: list[object] = []

    def parser_says(sets: list[tuple[dict[str, list[object]], str, str]], *a: object
                    ) -> list[ConfigError | None]:
        """vLLM's parser, as option_errors asks it: each set's first bad option."""
        asked.extend(sets)
        out: list[ConfigError | None] = []
        for options, src, prefix in sets:
            found = problems(vllm_like(), {k: v for k, v in options.items() if k != "model"})
            bad = [k for k in options if k in found]
            out.append(ConfigError(src, f"{prefix}{bad[0]}", found[bad[0]]) if bad else None)
        return out

    monkeypatch.setattr(autotune.engine.vllm_args, "option_errors", parser_says)
    assert main(["serve", str(p), "--print", "--", "--max-num-seqs", "banana"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("autotune: error: vLLM options after --: --max-num-seqs: invalid "
                          "value 'banana'")
    assert asked[1] == ({"max-num-seqs": ["banana"]}, "vLLM options after --", "--")
    assert main(["serve", str(p), "--print", "--", "--max-num-seqs", "8"]) == 0
    assert capsys.readouterr().out.strip().endswith("--max-num-seqs 8")
