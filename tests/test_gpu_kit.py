"""The GPU kit (scripts/gpu_kit/) on a small fake vLLM release: what `prepare` chooses and why,
the manifest, the parts and their reassembly, and the on-GPU step's stages against the stand-in
server and a scripted NVML probe. (The real release is packed by hand: docs/gpu-build.md.)"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.gpu_kit import on_gpu, pack, prepare  # noqa: E402
from scripts.gpu_kit.imports import closure, imports_of  # noqa: E402

FA2 = "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
MOE = "vllm/_moe_C_stable_libtorch.abi3.so"
SOURCE = {
    "vllm/__init__.py": "import fakedep\nfrom typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    import typedep\n",
    "vllm/entrypoints/__init__.py": "",
    "vllm/entrypoints/openai/__init__.py": "",
    "vllm/entrypoints/openai/api_server.py":
        "from ... import engine\ntry:\n    import optdep\nexcept ImportError:\n    optdep = None\n",
    "vllm/engine.py": "import os\n\ndef start():\n    import lazydep\n    import mcp\n",
    "vllm/vllm_flash_attn/__init__.py": "",
    "vllm/vllm_flash_attn/flash_attn_interface.py":
        "try:\n    from . import _vllm_fa2_C\nexcept ImportError:\n    pass\n",
    "vllm/platforms/__init__.py": "",
    "vllm/platforms/cuda.py": "import vllm._moe_C_stable_libtorch\n",
}
REQUIRES = ["fakedep>=1", "optdep", "lazydep", "mcp", "unuseddep", "torch==2.11.0",
            "winonly; sys_platform == 'win32'"]


def wheel_of(path: Path, files: dict[str, bytes], name: str, version: str,
             requires: Sequence[str] = ()) -> Path:
    info = f"{name}-{version}.dist-info"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {**files, f"{info}/METADATA": f"Name: {name}\nVersion: {version}\n{meta}".encode()}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files).encode()
    path.mkdir(parents=True, exist_ok=True)
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return whl


@pytest.fixture
def release(tmp_path: Path) -> Path:
    files = {n: t.encode() for n, t in SOURCE.items()}
    # incompressible, so that the kit takes several parts of the small size the test asks
    files[FA2] = os.urandom(40_000)
    files[MOE] = os.urandom(30_000)
    return wheel_of(tmp_path / "release", files, "vllm", "0.0.1", REQUIRES)


class FakeIndex:
    """Stands for PyPI: resolves and downloads a handful of made-up packages."""

    PKGS: ClassVar[list[prepare.Package]] = [
        prepare.Package("fakedep", "1.2", ("subdep",)), prepare.Package("subdep", "0.1"),
            prepare.Package("lazydep", "3.0"), prepare.Package("pydantic", "2.12.0"),
            prepare.Package("torch", "2.11.0", ("sympy",)), prepare.Package("sympy", "1.13")]

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, reqs: Sequence[str]) -> list[prepare.Package]:
        self.asked = list(reqs)
        return list(self.PKGS)

    def download(self, pkgs: Sequence[prepare.Package], dest: Path) -> list[Path]:
        # a real name (pydantic) gets a module of another name: the test's children import
        # the real one
        def module(name: str) -> str:
            return name if name.endswith("dep") else f"{name}_stub"

        return [wheel_of(dest, {f"{module(p.name)}/__init__.py": f"V = {p.version!r}\n".encode()},
                         p.name, p.version) for p in pkgs]


def build(release: Path, out: Path, **kw: object) -> tuple[dict, FakeIndex]:
    index = FakeIndex()
    manifest = prepare.build_kit(release, out, index.resolve, index.download,
                                 part_bytes=12_000, preset=1, **kw)  # type: ignore[arg-type]
    return manifest, index


def test_imports_are_told_apart_by_how_they_run(tmp_path: Path) -> None:
    src = tmp_path / "vllm"
    for n, t in SOURCE.items():
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_text(t)
    assert ("optdep", "guarded") in imports_of(src / "entrypoints/openai/api_server.py",
                                               "vllm.entrypoints.openai.api_server")
    g = closure(tmp_path, entries=("vllm.entrypoints.openai.api_server", "vllm.nowhere"))
    assert sorted(g.required) == ["fakedep"]  # typedep: TYPE_CHECKING only
    assert sorted(g.guarded) == ["optdep"] and sorted(g.lazy) == ["lazydep", "mcp"]
    assert g.missing_entries == ["vllm.nowhere"]
    assert "vllm.engine" in g.modules and "vllm.platforms.cuda" not in g.modules


def test_prepare_takes_what_start_up_imports_and_says_why_of_the_rest(release: Path,
                                                                      tmp_path: Path) -> None:
    m, index = build(release, tmp_path / "kit")
    rows = {p["name"]: p for p in m["packages"]}
    # torch and what it needs are the image's; the vLLM wheel itself comes along
    assert set(rows) == {"vllm", "fakedep", "subdep", "lazydep", "pydantic"}
    assert rows["fakedep"]["why"] == "vLLM: imported at start-up by vllm"
    assert rows["lazydep"]["why"] == "vLLM: imported inside a function of vllm.engine"
    assert rows["subdep"]["why"] == "a dependency of vLLM's requirements"
    assert rows["pydantic"]["why"] == "autotune"
    left = {x["name"]: x["why"] for x in m["left_out"]}
    assert "optional or conditional" in left["optdep"]
    assert left["unuseddep"] == "not imported by a dense model's start-up"
    assert left["mcp"].startswith("imported on demand only") and "psycopg" in left
    assert "winonly" not in left and "winonly" not in index.asked  # not a Linux requirement
    assert "fakedep>=1" in index.asked and any(r.startswith("optuna") for r in index.asked)
    assert not any(r.startswith(("psycopg", "plotly")) for r in index.asked)
    assert {"torch", "sympy"} <= set(m["image"])
    # FA2's import is guarded, so it stays behind; the MoE kernels' is not, so they come
    assert [t["file"] for t in m["trimmed"]] == [FA2] and m["trimmed"][0]["bytes"] == 40_000
    assert m["trim_kept"] == [f"{MOE}: kept, imported unguarded by vllm/platforms/cuda.py"]
    assert rows["vllm"]["sha256"] == pack.sha256(release)
    for p in m["packages"][1:]:
        assert p["sha256"] == pack.sha256(tmp_path / "kit" / "wheels" / p["wheel"])
    on_disk = json.loads((tmp_path / "kit" / "manifest.json").read_text())
    assert on_disk["format"] == pack.FORMAT and on_disk["parts"] == m["parts"]


def test_parts_are_cut_to_size_and_go_back_together(release: Path, tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    m, _ = build(release, kit)
    sizes = [p["bytes"] for p in m["parts"]]
    assert len(sizes) >= 3 and all(s == 12_000 for s in sizes[:-1]) and 0 < sizes[-1] <= 12_000
    assert sum(sizes) == m["payload_bytes"]
    site = tmp_path / "site"
    assert pack.unpack(kit, m, site) > 5
    assert (site / "vllm" / "__init__.py").read_text() == SOURCE["vllm/__init__.py"]
    assert (site / MOE).stat().st_size == 30_000 and not (site / FA2).exists()
    record = (site / "vllm-0.0.1.dist-info" / "RECORD").read_text()
    assert MOE in record and FA2 not in record
    assert (site / "subdep" / "__init__.py").read_text() == "V = '0.1'\n"
    # a part lost or damaged on the way: named, and nothing is installed from the rest
    data = bytearray((kit / "part-001").read_bytes())
    data[10] ^= 0xFF
    (kit / "part-001").write_bytes(bytes(data))
    (kit / "part-002").unlink()
    assert pack.check_parts(kit, m)[1] == ["part-001", "part-002"]
    with pytest.raises(ValueError, match="part-001, part-002"):
        pack.unpack(kit, m, tmp_path / "again")
    assert on_gpu.receive(kit) == 0


def test_full_wheel_keeps_every_file(release: Path, tmp_path: Path) -> None:
    m, _ = build(release, tmp_path / "kit", full_wheel=True)
    assert m["trimmed"] == []
    pack.unpack(tmp_path / "kit", m, tmp_path / "site")
    assert (tmp_path / "site" / FA2).stat().st_size == 40_000


def test_the_on_gpu_step_runs_every_stage_against_the_stand_in(
        release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU machine's call, with the stand-in server for vLLM and a scripted card for NVML:
    the kit installs, its modules import, nvml_check says there is no GPU here (and the step
    goes on), one server is measured and a 3-trial run writes a profile."""
    kit, out = tmp_path / "kit", tmp_path / "out"
    build(release, kit)
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    setup = on_gpu.Setup(kit=kit, out=out, launcher=f"{sys.executable} -m "
                         "autotune.testing.fake_vllm", gpu="cpu",
                         run_extra=["--no-verify-options"], serve_extra=["--fake-probe"],
                         preflight=("vllm", "fakedep", "subdep", "autotune.cli.main"),
                         deadline_s=500)
    rc = on_gpu.run_all(setup)
    summary = json.loads((out / "summary.json").read_text())
    st = summary["stages"]
    assert st["install"]["result"] == "PASS" and summary["kit"]["release"] == "0.0.1"
    assert st["preflight"]["result"] == "PASS"
    assert st["nvml"]["result"] == "FAIL (exit 2)"  # no NVIDIA GPU on this machine
    assert "no NVIDIA GPU" in (out / "nvml.log").read_text()
    serve = st["serve"]
    assert serve["result"] == "PASS", (out / "serve.log").read_text()[-2000:]
    fig = serve["figures"]
    assert fig["gpus"] == ["NVIDIA H100 80GB HBM3"] and fig["startup_s"] > 0
    assert fig["memory"]["gpu_process_bytes"] == 2 * 2**30
    assert fig["load"]["output_throughput"] > 0 and "--load-format dummy" in fig["argv"]
    assert "--max-model-len 2048" in fig["argv"]
    run = st["run"]
    assert run["result"] == "PASS", (out / "run.log").read_text()[-3000:]
    assert rc == 0 and len(run["profiles"]) == 1 and run["profiles"][0].endswith(".yaml")
    assert run["json"]["trials"] if "trials" in run["json"] else run["json"]
    assert summary["seconds"] > 0
