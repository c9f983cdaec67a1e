"""The README and docs/ show only what works: every YAML example is a file `autotune validate`
accepts, every autotune command shown is one autotune's own parser accepts, every link to a
file of the repository leads to one, and the README stays a few screens long."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from autotune.app.validate import validate_files
from autotune.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SUBCOMMANDS = ("run", "retune", "report", "profiles", "serve", "check", "pareto", "validate",
               "plan")


def blocks(lang: str) -> list[tuple[str, str]]:
    """(page:n, text) of every fenced block in that language, n counting from 1 per page."""
    out = []
    for page in PAGES:
        found = [m.group(2) for m in FENCE.finditer(page.read_text()) if m.group(1) == lang]
        out += [(f"{page.relative_to(ROOT)}:{i}", text) for i, text in enumerate(found, 1)]
    return out


YAML = blocks("yaml")
COMMANDS = [(f"{where}: {line.strip()}", line) for where, text in blocks("sh")
            for line in text.splitlines() if re.search(r"(^|/|\s)autotune\s+\w", line)]


def test_the_pages_have_examples_to_check() -> None:
    # a change of fence style must not leave this test checking nothing
    assert len(YAML) >= 5 and len(COMMANDS) >= 8


@pytest.mark.parametrize("where,text", YAML, ids=[w for w, _ in YAML])
def test_every_yaml_example_validates(where: str, text: str, tmp_path: Path) -> None:
    f = tmp_path / "example.yaml"
    f.write_text(text)
    (kind,) = validate_files([f], verify_options=False)
    assert kind in ("search space", "workload", "profile"), where


@pytest.mark.engine
def test_the_yaml_examples_pass_vllms_own_parser(tmp_path: Path) -> None:
    files = []
    for i, (_where, text) in enumerate(YAML):
        files.append(tmp_path / f"example-{i}.yaml")
        files[-1].write_text(text)
    assert len(validate_files(files, verify_options=True)) == len(YAML)


def autotune_words(line: str) -> list[str]:
    """The words of the autotune command in a shell line, up to the next shell operator."""
    words = shlex.split(line, comments=True)
    start = next(i for i, w in enumerate(words) if w == "autotune" or w.endswith("/autotune"))
    out = []
    for w in words[start + 1:]:
        if w in {"&&", "||", ";", "|", ">", ">>", "2>&1"}:
            break
        out.append(w)
    return out


@pytest.mark.parametrize("where,line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_command_shown_parses(where: str, line: str) -> None:
    words = autotune_words(line)
    assert words and words[0] in SUBCOMMANDS, where
    ns = build_parser().parse_args(words[:words.index("--")] if "--" in words else words)
    assert ns.command == words[0]


def test_every_link_to_a_file_leads_to_one() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken


def test_the_readme_fits_on_a_few_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_example_profiles_validate() -> None:
    found = sorted((ROOT / "examples" / "profiles").rglob("*.yaml"))
    assert found and validate_files(found, verify_options=False) == ["profile"] * len(found)
