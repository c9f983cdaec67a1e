"""The scheduler examples in deploy/ parse, and the autotune command in each is one that
autotune's own parser accepts (a re-tune, with a time budget and a JSON summary)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import yaml

from autotune.app.retune import BUSY, REGRESSION, UPDATED
from autotune.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SHELL_OPS = {"&&", "||", ";", "|", ">>", ">", "2>&1"}


def autotune_args(line: str) -> list[str]:
    """The arguments of the `autotune` command in a shell line (up to the next operator)."""
    words = shlex.split(line, comments=True)
    start = next(i for i, w in enumerate(words) if w.endswith("autotune") and i + 1 < len(
        words) and words[i + 1] in ("retune", "run"))
    out = []
    for w in words[start + 1:]:
        if w in SHELL_OPS:
            break
        out.append(w)
    return out


def check_retune(args: list[str]) -> None:
    ns = build_parser().parse_args(args)
    assert ns.command == "retune" and ns.gpu == "auto"
    assert ns.timeout and ns.timeout > 0 and ns.json


def test_systemd_unit_and_timer() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "autotune-retune.service")
    service = unit["Service"]
    assert service["Type"] == "oneshot"
    check_retune(shlex.split(service["ExecStart"])[1:])
    # "updated" and "another re-tune holds the lock" succeed; a regression fails the unit
    ok = {int(x) for x in service["SuccessExitStatus"].split()}
    assert ok == {UPDATED, BUSY} and REGRESSION not in ok
    timer = configparser.ConfigParser(strict=True, interpolation=None)
    timer.read(DEPLOY / "systemd" / "autotune-retune.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_cron_line() -> None:
    lines = [x for x in (DEPLOY / "cron" / "autotune-retune.cron").read_text().splitlines()
             if x.strip() and not x.startswith("#") and "=" not in x.split()[0]]
    (line,) = lines
    minute, hour, dom, month, dow, user, *_ = line.split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert (dom, month, dow) == ("*", "*", "*") and user == "autotune"
    check_retune(autotune_args(line))


def test_kubernetes_cronjob() -> None:
    doc: dict[str, Any] = yaml.safe_load(
        (DEPLOY / "kubernetes" / "retune-cronjob.yaml").read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["backoffLimit"] == 0
    (container,) = pod["containers"]
    assert container["command"][0] == "autotune"
    check_retune(container["command"][1:])
    ns = build_parser().parse_args(container["command"][1:])
    assert job["activeDeadlineSeconds"] > ns.timeout, "the job outlives the search budget"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts == {v["name"] for v in pod["volumes"]}
    # secrets come from the cluster, never from the command line
    assert not any("token" in a.lower() for a in container["command"])


def test_github_actions_workflow_for_a_self_hosted_gpu_runner() -> None:
    doc: dict[Any, Any] = yaml.safe_load(
        (DEPLOY / "github-actions" / "retune.yml").read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert len(on["schedule"][0]["cron"].split()) == 5
    job = doc["jobs"]["retune"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    step = next(s for s in job["steps"] if "autotune retune" in s.get("run", ""))
    line = next(x for x in step["run"].splitlines() if "autotune retune" in x)
    check_retune(autotune_args(line))
    # every exit code of a re-tune is handled: regression fails the job
    for code in (0, UPDATED, REGRESSION, BUSY):
        assert f"{code})" in step["run"]
    assert "exit 1" in step["run"].split(f"{REGRESSION})", 1)[1].split("\n", 1)[0]
