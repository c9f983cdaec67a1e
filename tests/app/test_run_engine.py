"""`autotune run`, `check` and `report` end to end against the real vLLM CPU engine and the
built-in tiny model: the search, the confirmation round in interleaved rounds, the stated gain,
a soak of the written profile, the study's report opened in a real browser, and the study as
optuna-dashboard reads it. (`retune`'s decisions are shown on the stand-in, test_retune.py,
where a poor profile's loss is set and large: on the real engine it would be a bet on the
minute's load.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import psutil
import pytest

from autotune.measure.records import read_samples
from autotune.profiles.profile import Profile, read_profile
from autotune.profiles.soak import MIN_WINDOWS
from autotune.space.search import load_space
from autotune.study.trials import is_baseline, metrics_of
from tests.browser import browser_page, wait_for_plots
from tests.conftest import DATA, here_profile

pytestmark = [pytest.mark.engine, pytest.mark.serial]  # one real run, shared
SPACE = DATA / "engine_space.yaml"
PROFILE = here_profile()


def vllm_processes(work: Path) -> list[str]:
    """The vLLM processes still running in `work` (a server inherits the tuner's working
    directory; other tests' servers may run beside these)."""
    out = []
    for p in psutil.process_iter(["cmdline", "name", "cwd"]):
        cmd = " ".join(p.info["cmdline"] or [])
        cwd = p.info["cwd"] or ""
        if ("vllm.entrypoints" in cmd or (p.info["name"] or "").startswith("VLLM::")) and (
                cwd == str(work) or cwd.startswith(f"{work}/")):
            out.append(f"{p.pid} {cmd[:80]}")
    return out


def autotune(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", "--gpu", "cpu", "--model",
         "builtin:tiny-qwen3", *args], cwd=work, capture_output=True, text=True,
        timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Profile, str]]:
    """One real run, shared by the tests below, with two goals (throughput up, memory down):
    the search measures vLLM's defaults and a candidate that serves one sequence at a time
    with a smaller KV cache (enqueued), side by side (`--parallel 2`: two servers, each on
    its own cores), then both are measured again in 3 interleaved rounds, one server at a
    time on the whole machine."""
    work = tmp_path_factory.mktemp("run")
    proc = autotune(work, "--space", str(SPACE), "--trials", "2", "--objective",
                    "output_throughput,peak_memory_bytes", "--parallel", "2")
    yield work, read_profile(work / PROFILE), proc.stdout


def test_search_trials_are_measured_in_rounds(confirmed: tuple[Path, Profile, str]) -> None:
    work, profile, _ = confirmed
    study = optuna.load_study(study_name=profile.meta.study,
                              storage=f"sqlite:///{work / 'autotune.db'}")
    base, slow = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # recorded as the unset value of every tuned option (samplers see the whole space)
    assert is_baseline(base) and base.params == {"max-num-seqs": None,
                                                 "env:VLLM_CPU_KVCACHE_SPACE": None}
    assert slow.params == {"max-num-seqs": 1, "env:VLLM_CPU_KVCACHE_SPACE": 1}
    w = load_space(SPACE).workload
    for t in (base, slow):
        assert t.user_attrs["status"] == "ok", t.user_attrs
        m = metrics_of(t)
        rounds = m["output_throughput"]
        assert w.measure.min_rounds <= rounds.n <= w.measure.max_rounds
        assert rounds.basis == "rounds" and rounds.low is not None
        assert rounds.low <= rounds.value <= (rounds.high or 0)
        assert m["completed"].value == w.num_requests and m["failed"].value == 0
        assert 0 < m["median_ttft_ms"].value < m["median_e2el_ms"].value
        assert m["peak_memory_bytes"].value > 100 * 2**20 and m["kv_cache_tokens"].value > 0
        assert m["peak_memory_bytes"].value == m["peak_host_pss_bytes"].value
        assert m["peak_host_pss_bytes"].value < m["peak_host_rss_bytes"].value
        assert 0 < m["kv_cache_bytes"].value < m["peak_host_rss_bytes"].value
        trial_dir = work / "autotune-runs" / profile.meta.study / f"trial-{t.number:04d}"
        result = json.loads((trial_dir / "result.json").read_text())
        assert len(result["round_values"]) == rounds.n
        # every request, as the server counted it, is the load the plan declared
        rows = read_samples(trial_dir / "samples.jsonl.gz")
        assert len(rows) == w.num_requests * rounds.n
        assert {(s.prompt_tokens, s.output_tokens) for _, _, s in rows} == {
            (w.input_tokens, w.output_tokens)}
    # vLLM's defaults pass none of the tuned options and set none of the tuned variables
    base_cmd = " ".join(base.user_attrs["command"])
    assert "--max-num-seqs" not in base_cmd
    assert base.user_attrs["env"] == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fixed, not tuned
    assert "--max-num-seqs 1" in " ".join(slow.user_attrs["command"])
    assert vllm_processes(work) == []


def test_the_search_ran_two_real_servers_at_once_on_disjoint_cores(
        confirmed: tuple[Path, Profile, str]) -> None:
    from autotune.engine.slots import core_sets, cpu_list

    work, profile, out = confirmed
    study = optuna.load_study(study_name=profile.meta.study,
                              storage=f"sqlite:///{work / 'autotune.db'}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    sets = [cpu_list(c) for c in core_sets(sorted(os.sched_getaffinity(0)), 2)]
    assert sorted(t.user_attrs["slot"] for t in trials) == sorted(f"cores {c}" for c in sets)
    assert len({t.user_attrs["worker"] for t in trials}) == 2 and "worker 1 (pid" in out
    a, b = trials
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete, \
        "the two servers did not run at the same time"
    for t in trials:  # every process of the server (API server, engine) ran on its cores only
        want = t.user_attrs["slot"].removeprefix("cores ")
        assert cpu_list(t.user_attrs["cores"]) == want, (t.user_attrs["cores"], want)
        result = json.loads((work / "autotune-runs" / study.study_name /
                             f"trial-{t.number:04d}" / "result.json").read_text())
        assert result["cores"] == t.user_attrs["cores"]
    # the confirmation ran one server at a time on the whole machine
    everything = sorted(os.sched_getaffinity(0))
    for r in (work / "autotune-runs" / study.study_name / "confirm").glob("*/result.json"):
        assert json.loads(r.read_text())["cores"] == everything


def test_confirmation_interleaves_fresh_servers_and_states_the_gain(
        confirmed: tuple[Path, Profile, str]) -> None:
    work, profile, out = confirmed
    conf_dir = work / "autotune-runs" / profile.meta.study / "confirm"
    conf = json.loads((conf_dir / "confirmation.json").read_text())
    assert [a["name"] for a in conf["arms"]] == ["vLLM defaults", "trial 1"]
    assert all(len(a["objective"]) == 3 and None not in a["objective"] for a in conf["arms"])
    # each arm in each round on its own server, rounds in order: A B, B A, A B
    commands = {d.name: " ".join(json.loads((d / "result.json").read_text())["command"])
                for d in conf_dir.iterdir() if d.is_dir()}
    assert len(commands) == 6
    assert all(("--max-num-seqs 1" in cmd) == name.endswith("trial-1")
               for name, cmd in commands.items())
    started = sorted(conf_dir.glob("round-*/server.log"), key=lambda p: p.stat().st_mtime)
    assert [p.parent.name for p in started] == [
        "round-01-vllm-defaults", "round-01-trial-1", "round-02-trial-1",
        "round-02-vllm-defaults", "round-03-vllm-defaults", "round-03-trial-1"]
    # the gain is stated with its interval over the 3 paired rounds; how fast one sequence at a
    # time serves on this machine this minute is a figure (one CI run measured it at x1.02 of the
    # defaults' throughput), not something a test may bet on: the verdict is asserted
    slow = next(a for a in conf["arms"] if a["name"] == "trial 1")
    ratio = slow["vs_baseline"]["output_throughput"]
    assert ratio["n"] == 3 and ratio["low"] <= ratio["value"] <= ratio["high"]
    # the profile is what the verdict decided, whichever way the figures went
    if conf["verdict"]["winner"] in (None, "vLLM defaults"):
        assert profile.meta.trial is None and "max-num-seqs" not in profile.settings
        assert profile.meta.verdict.startswith("nothing beat vLLM's defaults beyond noise")
        assert profile.meta.gain == {}, "vLLM's defaults are not stated against themselves"
    else:
        assert conf["verdict"]["winner"] == "trial 1" and profile.meta.trial == 1
        assert profile.settings["max-num-seqs"] == 1 and profile.meta.gain
    figure = profile.meta.metrics["output_throughput"]
    assert figure.n == 3 and figure.basis == "starts" and figure.low is not None
    assert "confirmation: 3 interleaved rounds" in out
    assert vllm_processes(work) == []


def test_the_multi_objective_run_writes_its_front_and_confirms_on_both_goals(
        confirmed: tuple[Path, Profile, str]) -> None:
    work, profile, out = confirmed
    assert profile.meta.objective["pareto"] == [{"metric": "peak_memory_bytes",
                                                 "direction": "minimize"}]
    front = json.loads((work / "autotune-runs" / profile.meta.study / "front.json").read_text())
    assert [g["metric"] for g in front["goals"]] == ["output_throughput", "peak_memory_bytes"]
    points = front["points"]
    assert points and points[0]["chosen"] and "Pareto front:" in out
    for p in points:
        assert set(p["figures"]) == {"output_throughput", "peak_memory_bytes"}
    conf = json.loads((work / "autotune-runs" / profile.meta.study / "confirm" /
                       "confirmation.json").read_text())
    comparison = conf["verdict"]["comparisons"][0]
    assert set(comparison["goals"]) == {"output_throughput", "peak_memory_bytes"}
    # the decision follows the goals' intervals: a win is better on one goal and shown to
    # lose at most max_loss on the other; otherwise a goal is worse or unproven
    if comparison["beats"]:
        assert comparison["better_on"] and not comparison["worse_on"]
    else:
        assert comparison["worse_on"] + comparison["unproven_on"] or not comparison["better_on"]
    assert all(len(a["goals"]["peak_memory_bytes"]) == 3 for a in conf["arms"])


def test_vllm_parser_accepts_profile(confirmed: tuple[Path, Profile, str]) -> None:
    work, profile, _ = confirmed
    code = (
        "import json,sys\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "ns = make_arg_parser(FlexibleArgumentParser()).parse_args(['--config', sys.argv[1]])\n"
        "print(json.dumps({k: v for k, v in vars(ns).items() if isinstance(v, (int, str))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(work / PROFILE)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ns = json.loads(proc.stdout.strip().splitlines()[-1])
    s = profile.settings
    assert ns["model"] == s["model"]
    assert ns["max_model_len"] == s["max-model-len"] == 512
    assert ns["load_format"] == "dummy"
    assert ns["enforce_eager"] is True


def test_a_soak_of_the_written_profile_reports_drift_and_memory_growth(
        confirmed: tuple[Path, Profile, str]) -> None:
    work, _, _ = confirmed
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "check", str(PROFILE), "--soak", "15s",
         "--window", "2s", "--json"], cwd=work, capture_output=True, text=True, timeout=600,
        check=False)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert (proc.returncode == 0) == (doc["breaches"] == [])
    windows = doc["windows"]
    # 15 s in 2 s windows: how many end in the 15 s is the machine's (beside a full CI run
    # 4 or 5); the soak goes on until it has the windows the drift and the growth need
    assert len(windows) >= MIN_WINDOWS and all(w["errors"] == 0 for w in windows)
    assert all(w["memory_bytes"] > 100 * 2**20 for w in windows)  # the real server's tree
    assert all(0 < w["p99_ttft_ms"] < w["p99_e2el_ms"] for w in windows)
    drift, growth = doc["latency_drift"], doc["memory_growth_mib_per_h"]
    assert drift["low"] <= drift["value"] <= drift["high"] and drift["basis"] == "windows"
    assert growth["low"] <= growth["value"] <= growth["high"]
    assert doc["recorded"]["output_throughput"]["n"] == 3  # the confirmation's figure
    assert "checking " in proc.stderr and "t=" in proc.stderr
    # a fresh server from the profile served: vLLM read the options from the file
    (log,) = (work / "autotune-runs" / "check").glob("*/server.log")
    text = log.read_text()
    assert "'max_model_len': 512" in text and "'load_format': 'dummy'" in text
    assert vllm_processes(work) == []


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_the_report_of_the_real_study_renders_offline_in_a_real_browser(
        confirmed: tuple[Path, Profile, str]) -> None:
    work, _, _ = confirmed
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "report", str(PROFILE),
                           "--json"], cwd=work, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    page_path = (work / doc["html"]).resolve()
    assert len(doc["trials"]) == 2 and (work / doc["markdown"]).read_text().startswith(
        "# autotune report: ")
    requests: list[str] = []
    with browser_page() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        wait_for_plots(page, 6)
        header, body = page.inner_text("#header"), page.inner_text("body")
        sizes = page.eval_on_selector_all(
            ".js-plotly-plot", "els => els.map(e => [e.id, e.getBoundingClientRect().width, "
            "e.getBoundingClientRect().height, e.querySelectorAll('.main-svg').length])")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-real-engine.png"), full_page=True)
    # every plot drawn, with a size; the page asked nothing of the network
    assert len(sizes) >= 6, sizes
    assert all(w > 100 and h > 100 and svgs > 0 for _, w, h, svgs in sizes), sizes
    assert requests == [page_path.as_uri()], requests
    # the top names the hardware, vLLM, the profile and its deploy line; two trials rank nothing
    profile = read_profile(work / PROFILE)
    assert profile.meta.hardware["key"] in header and profile.meta.vllm_version in header
    assert profile.deploy_command(PROFILE) in header
    assert "Not computed: 2 measured trials; ranking settings takes at least 8" in body


def test_optuna_dashboard_reads_the_study(confirmed: tuple[Path, Profile, str]) -> None:
    import wsgiref.util

    from optuna_dashboard import wsgi

    work, profile, _ = confirmed
    app = wsgi(f"sqlite:///{work / 'autotune.db'}")

    def get(path: str) -> dict[str, object]:
        env: dict[str, object] = {"PATH_INFO": path}
        wsgiref.util.setup_testing_defaults(env)
        status: list[str] = []
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        assert status == ["200 OK"], body[:500]
        out: dict[str, object] = json.loads(body)
        return out

    # the study, and the confirmation's lease (a study of its own, with who held it)
    summaries = get("/api/studies")["study_summaries"]
    assert sorted(s["study_name"] for s in summaries) == [  # type: ignore[attr-defined]
        profile.meta.study, f"{profile.meta.study}:confirm:2:1"]
    (summary,) = [s for s in summaries if s["study_name"] == profile.meta.study]  # type: ignore[attr-defined]
    study = get(f"/api/studies/{summary['study_id']}")
    trials = study["trials"]
    assert isinstance(trials, list)
    # the two measured trials with both goals' values; the space's other queued candidates wait
    done = [t for t in trials if t["state"] != "Waiting"]
    assert len(done) == 2 and all(t["state"] == "Complete" and len(t["values"]) == 2
                                  for t in done)
    assert {u["key"] for u in done[0]["user_attrs"]} >= {"metrics", "status", "command"}
