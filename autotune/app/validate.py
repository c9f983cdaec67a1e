"""`autotune validate`: check files as search spaces, workloads or profiles; start nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.core.config import read_text, read_yaml
from autotune.core.errors import UserError
from autotune.engine.vllm_args import Note
from autotune.measure.workload import load_workload
from autotune.profiles.profile import META_BEGIN, Profile, read_profile
from autotune.space.limits import check_workload
from autotune.space.search import SearchSpace, load_space

SPACE, WORKLOAD, PROFILE = "search space", "workload", "profile"


@dataclass(frozen=True)
class Checked:
    """One file's verdict: its kind (None when it cannot be read as any) and its error."""

    path: Path
    kind: str | None
    error: UserError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "ok": self.ok,
                "error": None if self.error is None else str(self.error)}


@dataclass(frozen=True)
class _Read:
    """A file read as its kind, with what is still to ask the installed vLLM."""

    kind: str
    options: dict[str, list[Any]] | None = None  # for vLLM's argument parser
    prefix: str = ""  # what precedes an option's name in the file: `args.` in a space
    space: SearchSpace | None = None  # for vLLM's scheduler config


def check_files(paths: Sequence[Path], verify_options: bool = True,
                note: Note | None = None) -> list[Checked]:
    """Every file checked, an error in one never hiding another's. The vLLM options of the
    spaces and profiles are put to the installed vLLM's parser, the spaces' scheduler
    combinations to its scheduler config (one child process for all of it) and their VLLM_
    variables to its list, as `autotune run` and `autotune serve` do before they start
    anything. `note` gets a line where a check takes long or could not be made."""
    found: dict[int, Checked] = {}
    read: dict[int, _Read] = {}
    for i, path in enumerate(paths):
        try:
            read[i] = _read(path)
        except UserError as exc:
            found[i] = Checked(path, _kind(path), exc)
    if verify_options:
        for i, error in _env_errors(paths, read, note).items():
            found[i] = Checked(paths[i], read.pop(i).kind, error)
        for i, error in _engine_errors(paths, read, note).items():
            found[i] = Checked(paths[i], read[i].kind, error)
    return [found.get(i) or Checked(path, read[i].kind) for i, path in enumerate(paths)]


def validate_files(paths: Sequence[Path], verify_options: bool = True) -> list[str]:
    """What each file is; raise the first file's error (file and field) if one is not valid."""
    checked = check_files(paths, verify_options)
    for c in checked:
        if c.error is not None:
            raise c.error
    return [str(c.kind) for c in checked]


def profile_options(profile: Profile) -> dict[str, list[Any]]:
    """A profile's settings as vLLM options and the values they take (one each)."""
    return {k: [v] for k, v in profile.settings.items()}


def _kind(path: Path) -> str | None:
    try:
        text, data = read_text(path), read_yaml(path)
    except UserError:
        return None
    if META_BEGIN in text:
        return PROFILE
    return SPACE if isinstance(data, dict) and "name" in data else WORKLOAD


def _read(path: Path) -> _Read:
    """The file as its kind; raise UserError for what needs no engine to refuse."""
    kind = _kind(path)
    if kind is None:
        read_yaml(path)  # raises the reason
    if kind == PROFILE:
        return _Read(PROFILE, profile_options(read_profile(path)))
    if kind == SPACE:
        from autotune.app.inputs import check_space, option_values

        space = load_space(path)
        check_space(space, str(path))
        _check_context(space, path)
        return _Read(SPACE, {k: list(v) for k, v in option_values(space, {}).items()},
                     "args.", space)
    check_workload(load_workload(path), str(path))
    return _Read(WORKLOAD)


def _env_errors(paths: Sequence[Path], read: dict[int, _Read], note: Note | None
                ) -> dict[int, UserError]:
    """The spaces' VLLM_ variables that the installed vLLM does not read, by file (its list
    is read once); where the list cannot be read, `note` says so and nothing is refused."""
    from autotune.app.inputs import check_env_names
    from autotune.engine.vllm_env import env_names

    spaces = {i: s for i in sorted(read) if (s := read[i].space) is not None and s.env}
    known = env_names() if spaces else None
    errors: dict[int, UserError] = {}
    for i, space in spaces.items():
        try:
            why = check_env_names(space, str(paths[i]), known)
        except UserError as exc:
            errors[i] = exc
            continue
        if why is not None and note is not None:
            note(why)
    return errors


def _engine_errors(paths: Sequence[Path], read: dict[int, _Read], note: Note | None
                   ) -> dict[int, UserError]:
    """What the installed vLLM refuses, by file: options first, then (for the spaces whose
    options pass) combinations its scheduler config refuses every one of. One child asks
    both, so a cold check imports vLLM once."""
    from autotune.engine.vllm_args import engine_answers
    from autotune.space.combos import combinations, judge

    asked = [i for i in sorted(read) if read[i].options is not None]
    sets = [(read[i].options or {}, str(paths[i]), read[i].prefix) for i in asked]
    # without a model: only what the space's own max-model-len decides (a base of nothing)
    spaces = [(i, s, c) for i in asked if (s := read[i].space) is not None
              and (c := combinations(s, {}, None)) is not None]
    answers = engine_answers(sets, [combo for _, _, c in spaces for combo in c.combos],
                             note=note)
    errors: dict[int, UserError] = {i: e for i, e in zip(asked, answers.options, strict=True)
                                    if e is not None}
    problems = answers.combinations
    for i, space, c in spaces:
        mine, problems = problems[:len(c.combos)], problems[len(c.combos):]
        if i in errors:
            continue  # its options' error comes first
        try:
            judge(space, c, mine, str(paths[i]))
        except UserError as exc:
            errors[i] = exc
    return errors


def _check_context(space: SearchSpace, path: Path) -> None:
    """What `run` refuses before a start, without a model: requests longer than the space's
    own max-model-len allows. A synthetic workload's lengths are declared, so the longest
    request needs no model's tokenizer (the texts planned with a stand-in are never sent); a
    dataset's prompts are counted by the model's tokenizer, and `run` checks them."""
    if space.workload.dataset is not None or "max-model-len" not in space.args:
        return
    from autotune.app.inputs import check_context
    from autotune.measure.plan import Plan
    from autotune.testing.fake_tokenizer import WordTokenizer

    check_context(space, None, Plan(space.workload, WordTokenizer()), str(path), "workload")
