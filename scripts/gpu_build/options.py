"""a. options: every option and value of the GPU spaces and profiles, and each space's scheduler
combinations, through autotune's own check against the wheel's parser."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile
    from autotune.space.search import SearchSpace

from scripts.gpu_build.common import CONTEXT, TIMEOUT_S, OptionSet, Report, rel
from scripts.gpu_build.wheel import child_env, environment


def option_sets(spaces: Sequence[tuple[Path, SearchSpace]],
                profiles: Sequence[tuple[Path, Profile]]) -> list[OptionSet]:
    """One set per file, option and value, so that every refused value is named (autotune's
    check names the first bad option of a set)."""
    from autotune.app.inputs import option_values
    from autotune.app.validate import profile_options

    sets: list[OptionSet] = []
    for path, space in spaces:
        for name, values in option_values(space, {}).items():
            sets += [({name: [v]}, rel(path), "args.") for v in values]
    for path, prof in profiles:
        for name, values in profile_options(prof).items():
            sets += [({name: [v]}, rel(path), "") for v in values]
    return sets


def ask_autotune(root: Path, sets: Sequence[OptionSet]) -> tuple[list[str | None] | None, str]:
    """Each set's problem by autotune's own check (`autotune.engine.vllm_args.option_errors`, its
    child importing the wheel's parser from where autotune looks for it); (None, why) where
    that check cannot build the parser."""
    from autotune.engine.vllm_args import option_errors

    with environment(child_env(root)):
        errors = option_errors(sets, timeout_s=TIMEOUT_S)
    cannot = [e for e in errors if e is not None and e.field is None]
    if cannot:
        return None, cannot[0].message
    return [None if e is None else e.message for e in errors], ""


def static_options(root: Path) -> set[str]:
    """The option strings ("--x") that the wheel's source passes to `add_argument`: the check
    when its parser cannot be built (names only: types, choices and `--no-` forms unseen)."""
    out: set[str] = set()
    for path in (root / "vllm").rglob("*.py"):
        text = path.read_text(errors="replace")
        if "add_argument" not in text:
            continue
        with contextlib.suppress(SyntaxError):
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "add_argument":
                    out.update(a.value for a in node.args if isinstance(a, ast.Constant)
                               and isinstance(a.value, str) and a.value.startswith("--"))
    return out


def static_problems(root: Path, sets: Sequence[OptionSet]) -> list[str | None]:
    known = static_options(root)
    out: list[str | None] = []
    for options, _, _ in sets:
        ((name, _),) = options.items()
        out.append(None if f"--{name}" in known else
                   "unknown vLLM option (in no add_argument call of the wheel's source)")
    return out


def tally_options(sets: Sequence[OptionSet], problems: Sequence[str | None], report: Report,
                  verbose: bool) -> None:
    per_file: dict[str, list[int]] = {}
    for (options, src, prefix), problem in zip(sets, problems, strict=True):
        ((name, (value,)),) = options.items()
        counts = per_file.setdefault(src, [0, 0])
        counts[0] += 1
        if problem is None:
            counts[1] += 1
            if verbose:
                print(f"    ok         {src}: {prefix}{name} = {value!r}")
        else:
            report.bad(f"option refused: {src}: {prefix}{name} = {value!r}: {problem}")
    for src, (total, good) in per_file.items():
        names = {next(iter(o)) for o, s, _ in sets if s == src}
        line = f"{src}: {good} of {total} values of {len(names)} options accepted"
        if good == total:
            report.ok(line)
        else:
            print(f"    {'refused':<10} {line}")


@dataclass(frozen=True)
class Combos:
    """The scheduler combinations to put to the wheel's SchedulerConfig: two known ones first
    (one it must accept, one it must refuse), so that a broken ask cannot pass as accepted;
    then each GPU space's."""

    spaces: list[tuple[Path, SearchSpace, Any]]  # path, space, autotune.space.combos.Combinations

    @classmethod
    def of(cls, spaces: Sequence[tuple[Path, SearchSpace]]) -> Combos:
        from autotune.space.combos import combinations

        # MODEL's context as a fixed max-model-len: combos.combinations() leaves its
        # `context` out of the up-front grid when the space does not set max-model-len
        return cls([(p, s, c) for p, s in spaces
                    if (c := combinations(s, {"max-model-len": CONTEXT}, CONTEXT))
                    is not None])

    def asked(self) -> list[dict[str, Any]]:
        from autotune.engine.vllm_args import SCHEDULER_OPTIONS

        base = {"max-model-len": 4096, **dict.fromkeys(SCHEDULER_OPTIONS)}
        good = {**base, "max-num-batched-tokens": 8192, "max-num-seqs": 1}
        bad = {**base, "max-num-batched-tokens": 16, "max-num-seqs": 256}
        return [good, bad, *(x for _, _, c in self.spaces for x in c.combos)]


def tally_combos(combos: Combos, problems: Sequence[str | None], report: Report,
                 how: str) -> bool:
    """Judge the answers as autotune.space.combos does; False where they cannot be vLLM's."""
    from autotune.core.errors import UserError
    from autotune.space.combos import judge

    (p_good, p_bad), rest = problems[:2], list(problems[2:])
    if p_good is not None:
        report.bad(f"{how}: SchedulerConfig refuses max-model-len 4096, max-num-batched-tokens "
                   f"8192, max-num-seqs 1: {p_good}")
        return False
    if p_bad is None:
        report.bad(f"{how}: max-num-batched-tokens 16 < max-num-seqs 256 came back accepted: "
                   "either the child could not ask SchedulerConfig or vLLM dropped that rule")
        return False
    report.ok(f"{how}: SchedulerConfig answers (refuses 16 batched tokens for 256 sequences: "
              f"{p_bad!r})")
    refused: dict[str, int] = {}
    for path, space, c in combos.spaces:
        mine, rest = rest[:len(c.combos)], rest[len(c.combos):]
        n = sum(p is not None for p in mine)
        refused[rel(path)] = n
        try:
            judge(space, c, mine, rel(path))
        except UserError as exc:
            report.bad(f"{exc}")
            continue
        report.ok(f"{rel(path)}: {len(c.combos)} scheduler combinations at max-model-len "
                  f"{CONTEXT}, {n} refused" + (f" (e.g. {next(p for p in mine if p)!r})"
                                                if n else ""))
    report.facts["refused_combinations"] = refused
    return True
