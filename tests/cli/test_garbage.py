"""Malformed input of every kind, generated, not only the cases we thought of: each file gets
exit 2 and one line naming it, and no server is started. Never a traceback."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from autotune.cli.main import main
from tests.cli.test_cli import fake_run, servers_running

ROOT = Path(__file__).resolve().parents[2]
SPACE = (ROOT / "search_spaces" / "cpu.yaml").read_bytes()
WORKLOAD = b"input_tokens: 64\noutput_tokens: 16\nconcurrency: 4\nnum_requests: 8\n"

LAUGHS = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode()
    for i in range(8))

# Surely not a search space nor a workload.
BAD: dict[str, bytes] = {
    "empty": b"",
    "blank": b"  \n\n",
    "comment-only": b"# nothing here\n",
    "not-utf8": b"name: \xff\xfe cpu\n",
    "latin-1": "name: café\n".encode("latin-1"),
    "utf-16": "name: cpu\n".encode("utf-16"),
    "nul": b"name: a\x00b\n",
    "scalar": b"42\n",
    "list": b"- a\n- b\n",
    "two-documents": b"name: a\n---\nname: b\n",
    "deep-flow": b"[" * 20000 + b"]" * 20000,
    "deep-block": "".join("  " * i + "a:\n" for i in range(400)).encode(),
    "alias-bomb": LAUGHS,
    "huge": b"# " + b"x" * (5 * 2**20) + b"\nname: x\n",
    "python-tag": b"!!python/object/apply:os.system ['true']\n",
    "tab-indent": b"name: x\n\targs: 1\n",
    "zip": b"PK\x03\x04" + bytes(range(256)) * 4,
    "wrong-types": b"name: [1, 2]\nargs: 7\nworkload: {concurrency: many}\n",
    "key-twice": b"name: a\nargs: {max-num-seqs: 4}\nname: b\n",
}


def generated(seed: int = 20261125) -> dict[str, tuple[bytes, bool]]:
    """name -> (content, surely bad). Truncated and mutated real files may still be valid."""
    rng = random.Random(seed)
    out = {name: (data, True) for name, data in BAD.items()}
    for i in range(25):
        out[f"random-bytes-{i}"] = (rng.randbytes(rng.randint(1, 4000)), False)
    alphabet = ":-[]{}&*!|>'\"#%@`,? \n\t" + "abcxyz0123"
    for i in range(25):
        out[f"random-text-{i}"] = ("".join(rng.choices(alphabet, k=rng.randint(1, 400)))
                                   .encode(), False)
    for i in range(25):
        src = rng.choice([SPACE, WORKLOAD])
        out[f"truncated-{i}"] = (src[:rng.randint(0, len(src) - 1)], False)
    for i in range(25):
        b = bytearray(rng.choice([SPACE, WORKLOAD]))
        for _ in range(rng.randint(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        out[f"mutated-{i}"] = (bytes(b), False)
    return out


CASES = generated()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check(argv: list[str], path: Path, capsys: pytest.CaptureFixture[str], surely_bad: bool
          ) -> int:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc in ((2,) if surely_bad else (0, 2)), (path.name, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"autotune: error: {path}"), err
        assert "Traceback" not in err
    else:
        assert out.startswith(f"{path}: ok (")
    return rc


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_refuses_garbage_in_one_line(name: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data, surely_bad = CASES[name]
    f = tmp_path / f"{name}.yaml"
    f.write_bytes(data)
    check(["validate", "--no-verify-options", str(f)], f, capsys, surely_bad)


@pytest.mark.parametrize("flag", ["--space", "--workload"])
def test_run_refuses_garbage_before_any_start(flag: str, in_tmp: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    refused = 0
    for name, (data, surely_bad) in CASES.items():
        f = in_tmp / f"{name}.yaml"
        f.write_bytes(data)
        argv = fake_run("--trials", "1")
        if flag == "--workload":
            argv += ["--workload", str(f)]
        else:
            argv[argv.index("--space") + 1] = str(f)
        if not surely_bad:
            # a truncated or mutated file may still be valid: only ask `run` about the ones
            # `validate` refuses, so nothing here starts a server
            if main(["validate", "--no-verify-options", str(f)]) == 0:
                capsys.readouterr()
                continue
            capsys.readouterr()
        assert check(argv, f, capsys, True) == 2
        refused += 1
        assert not (in_tmp / "autotune-runs").exists(), name
        assert servers_running() == []
    assert refused >= len(BAD)


@pytest.mark.parametrize(("content", "said"), [
    (b"\xff\xd8\xff\xe0 a JPEG", "dataset: not UTF-8 text (byte 0xff at offset 0)"),
    (b"", "dataset holds no usable prompt"),
    (b'{"prompt": "a"}\n{"prompt": ', "line 2: malformed JSON"),
])
def test_a_garbage_dataset_is_named_too(content: bytes, said: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(content)
    wl = tmp_path / "wl.yaml"
    wl.write_text(f"dataset: {{path: {data}, format: jsonl}}\noutput_tokens: 8\n")
    assert main(["validate", "--no-verify-options", str(wl)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"autotune: error: {data}") and said in err, err
    assert len(err.splitlines()) == 1


def test_a_key_given_twice_is_named_with_its_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "twice.yaml"
    f.write_text("input_tokens: 64\noutput_tokens: 8\ninput_tokens: 128\n")
    assert main(["validate", str(f)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"autotune: error: {f}: malformed YAML: line 3, column 1: key 'input_tokens' given "
        "twice")
