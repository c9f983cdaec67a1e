"""c. argv: the argv autotune builds, parsed and validated by the wheel's own CLI in a child Python
whose vllm is the wheel."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile
    from autotune.space.search import SearchSpace

from scripts.gpu_build.common import API_KEY, MODEL, SCRIPT, TIMEOUT_S, Report, candidates, rel
from scripts.gpu_build.wheel import child_env


def argv_items(spaces: Sequence[tuple[Path, SearchSpace]],
               profiles: Sequence[tuple[Path, Profile]]) -> list[dict[str, Any]]:
    """The argv autotune builds for each candidate, in both launcher forms, with what each
    option must parse to."""
    from autotune.engine.argv import API_SERVER_MODULE, ServerSpec, build_command

    items = []
    forms = {"vllm serve": ("vllm", "serve"),
             "python -m": ("python", "-m", API_SERVER_MODULE)}
    for path, space in spaces:
        for label, params in candidates(space):
            for form, launcher in forms.items():
                spec = ServerSpec(model=MODEL, args=params.args, env=params.env,
                                  launcher=launcher, api_key=API_KEY)
                items.append({"label": f"{rel(path)} {label} ({form})", "form": form,
                              "module": API_SERVER_MODULE, "argv": build_command(spec),
                              "skip": len(launcher), "model": MODEL,
                              "expect": dict(params.args)})
    if profiles:
        from autotune.profiles.catalog import serve_command
    for path, prof in profiles:
        argv, _ = serve_command(path, prof, ("vllm", "serve"))
        items.append({"label": f"{rel(path)} (vllm serve --config)", "form": "vllm serve",
                      "module": API_SERVER_MODULE, "argv": argv, "skip": 2, "model": None,
                      "expect": dict(prof.settings)})
    return items


def tally_argv(items: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
               report: Report, verbose: bool) -> None:
    for item, result in zip(items, results, strict=True):
        shown = " ".join(item["argv"])
        if result["ok"]:
            report.ok(f"{item['label']}: {shown}", verbose)
        else:
            report.bad(f"argv refused: {item['label']}: {result['error']}  [{shown}]")
    good = sum(r["ok"] for r in results)
    tag = "ok" if good == len(items) else "refused"
    print(f"    {tag:<10} {good} of {len(items)} argv autotune builds parsed and validated "
          "by the wheel's CLI")


def ask_child(root: Path, request: dict[str, Any]) -> dict[str, Any]:
    """This script as a child Python whose vllm is the wheel (see `child`)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--child"],
                          input=json.dumps(request, default=str), capture_output=True,
                          text=True, env={**os.environ, **child_env(root)}, timeout=TIMEOUT_S,
                          check=False)
    try:
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"probe": {}, "error": f"the child failed (exit {proc.returncode}): {said}"}
    return answer


def child() -> int:
    """Build the wheel's parsers the way its own CLI does (`vllm serve`: its main()'s parser
    with the serve subcommand; `python -m`: the parser the serve module imports by name, with
    no module path copied from one release) and answer, with autotune's own functions:
    options (`autotune.engine.vllm_args.problems`), scheduler combinations
    (`autotune.engine.vllm_args.combination_problem`), and argv (parsed, then validated)."""
    request = json.loads(sys.stdin.read())
    answer: dict[str, Any] = {"probe": _probe()}
    try:
        serve_cli: Any = importlib.import_module("vllm.entrypoints.cli.serve")
        root_parser = serve_cli.FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
        subparsers = root_parser.add_subparsers(required=False, dest="subparser")
        (cmd,) = serve_cli.cmd_init()
        serve_parser = cmd.subparser_init(subparsers)
        module_parser = serve_cli.make_arg_parser(serve_cli.FlexibleArgumentParser(
            prog="python -m vllm.entrypoints.openai.api_server"))
        validate_module = serve_cli.validate_parsed_serve_args
        answer["parser_from"] = serve_cli.make_arg_parser.__module__
    except Exception as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(answer))
        return 0
    from autotune.engine.vllm_args import combination_problem, problems

    if request.get("option_sets") is not None:
        answer["options"] = [problems(module_parser, o) for o in request["option_sets"]]
    if request.get("combos") is not None:
        answer["combos"] = []
        for combo in request["combos"]:
            try:
                answer["combos"].append(combination_problem(combo))
            except Exception as exc:  # cannot ask: a refusal the known pair will expose
                answer["combos"].append(f"cannot ask SchedulerConfig: {exc}")
    answer["argv"] = []
    for item in request.get("argv", []):
        argv = item["argv"][item["skip"]:]
        if item["form"] == "vllm serve":
            answer["argv"].append(_parse(root_parser, serve_parser, ["serve", *argv],
                                         cmd.validate, item))
        elif importlib.util.find_spec(item["module"]) is None:
            answer["argv"].append({"ok": False, "error": f"no module {item['module']}"})
        else:
            answer["argv"].append(_parse(module_parser, module_parser, argv, validate_module,
                                         item))
    print(json.dumps(answer, default=str))
    return 0


def _probe() -> dict[str, str]:
    """How much of the wheel imports here: vLLM itself, its CUDA platform, the platform."""
    import importlib.metadata

    out = {"version": importlib.metadata.version("vllm")}
    import vllm

    out["vllm_path"] = str(Path(vllm.__file__).parent)
    try:
        importlib.import_module("vllm.platforms.cuda")
        out["cuda_platform"] = "imports"
    except Exception as exc:
        out["cuda_platform"] = f"does not import ({type(exc).__name__}: {exc})"
    from vllm.platforms import current_platform

    out["platform"] = type(current_platform).__name__
    return out


def _parse(parser: Any, opts: Any, words: list[str], validate: Any,
           item: dict[str, Any]) -> dict[str, Any]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            ns = parser.parse_args(words)
            validate(ns)
    except SystemExit:
        said = [x for x in buf.getvalue().strip().splitlines() if x.strip()]
        return {"ok": False, "error": said[-1] if said else "the parser exited"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    wrong = []
    model = getattr(ns, "model_tag", None) or getattr(ns, "model", None)
    if item["model"] is not None and model != item["model"]:
        wrong.append(f"model parsed as {model!r}")
    for name, want in item["expect"].items():
        action = opts._option_string_actions.get(f"--{name}")
        got = getattr(ns, action.dest, "<absent>") if action else "<no such option>"
        if not _same(got, want):
            wrong.append(f"--{name} {want!r} parsed as {got!r}")
    return {"ok": not wrong, "error": "; ".join(wrong) or None}


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or got is None:
        return got is want
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
            _same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want or str(got) == str(want)
                or (isinstance(want, dict) and json.dumps(got, sort_keys=True, default=str)
                    == json.dumps(want, sort_keys=True, default=str)))
