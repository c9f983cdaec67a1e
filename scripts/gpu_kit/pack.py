"""The kit's payload: wheels installed into one tree, packed as xz into hashed parts, and back.

Standard library only: the GPU machine runs this with its own Python before anything is installed.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MiB = 2**20
# A call to the GPU machine carries at most 64 MiB: the working tree (about 7 MB tracked) and
# the ignored paths named to go along. 56 MiB leaves room for the tree and the manifest.
PART_BYTES = 56 * MiB
MANIFEST = "manifest.json"
FORMAT = 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def install_wheel(wheel: Path, site: Path, leave_out: frozenset[str] = frozenset()) -> int:
    """Unpack `wheel` into `site` as `pip install --target` would for importing (purelib and
    platlib at the top; scripts, headers and data files left out: nothing here runs them), the
    files named in `leave_out` skipped and struck from its RECORD. Returns the bytes written."""
    written = 0
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or name in leave_out:
                continue
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            dest = site / name
            if not dest.resolve().is_relative_to(site.resolve()):
                raise ValueError(f"{wheel.name}: {info.filename} points outside the tree")
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = z.read(info)
            if leave_out and parts[-1] == "RECORD" and parts[0].endswith(".dist-info"):
                data = b"".join(line for line in io.BytesIO(data)
                                if line.split(b",")[0].decode() not in leave_out)
            dest.write_bytes(data)
            mode = info.external_attr >> 16
            if mode & stat.S_IXUSR:
                dest.chmod(0o755)
            written += len(data)
    return written


class _PartWriter(io.RawIOBase):
    """A byte stream cut into files of `part_bytes` each, hashed as they are written."""

    def __init__(self, out: Path, part_bytes: int) -> None:
        self.out, self.part_bytes = out, part_bytes
        self.parts: list[dict[str, Any]] = []
        self.whole = hashlib.sha256()
        self._f: Any = None
        self._h: Any = None
        self._n = 0

    def writable(self) -> bool:
        return True

    def _roll(self) -> None:
        self._close_part()
        name = f"part-{len(self.parts):03d}"
        self._f, self._h, self._n = (self.out / name).open("wb"), hashlib.sha256(), 0
        self.parts.append({"name": name})

    def _close_part(self) -> None:
        if self._f is not None:
            self._f.close()
            self.parts[-1].update(bytes=self._n, sha256=self._h.hexdigest())
            self._f = None

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.whole.update(data)
        view = memoryview(data)
        while view:
            if self._f is None or self._n == self.part_bytes:
                self._roll()
            take = view[: self.part_bytes - self._n]
            self._f.write(take)
            self._h.update(take)
            self._n += len(take)
            view = view[len(take):]
        return len(data)

    def close(self) -> None:
        self._close_part()
        super().close()


class _XzWriter(io.RawIOBase):
    def __init__(self, sink: _PartWriter, preset: int) -> None:
        self.sink, self.z = sink, lzma.LZMACompressor(preset=preset)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.sink.write(self.z.compress(bytes(b)))
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self.sink.write(self.z.flush())
        super().close()


def pack(site: Path, out: Path, part_bytes: int = PART_BYTES, preset: int = 6
         ) -> dict[str, Any]:
    """Tar `site` (paths relative to it), compress with xz, cut into `out/part-NNN`. Returns
    the manifest's payload section: the parts with sizes and hashes, and the whole's."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    sink = _PartWriter(out, part_bytes)
    xz = _XzWriter(sink, preset)
    unpacked = 0
    with tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(site.rglob("*")):
            if path.is_file():
                unpacked += path.stat().st_size
                tar.add(path, arcname=str(path.relative_to(site)), recursive=False)
    xz.close()
    sink.close()
    total = sum(p["bytes"] for p in sink.parts)
    return {"compression": "xz", "parts": sink.parts, "payload_bytes": total,
            "payload_sha256": sink.whole.hexdigest(), "unpacked_bytes": unpacked}


def write_manifest(kit: Path, manifest: dict[str, Any]) -> Path:
    path = kit / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, **manifest}, indent=1) + "\n")
    return path


def read_manifest(kit: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((kit / MANIFEST).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{kit / MANIFEST}: format {data.get('format')}, this kit reads {FORMAT}")
    return data


def check_parts(kit: Path, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(parts present and whole, parts missing or damaged): what a call has brought so far."""
    good, bad = [], []
    for part in manifest["parts"]:
        path = kit / part["name"]
        ok = path.is_file() and path.stat().st_size == part["bytes"] and \
            sha256(path) == part["sha256"]
        (good if ok else bad).append(part["name"])
    return good, bad


class _Joined(io.RawIOBase):
    """The parts read back as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths: Iterator[Path] = iter(paths)
        self._f: Any = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while True:
            if self._f is None:
                nxt = next(self._paths, None)
                if nxt is None:
                    return 0
                self._f = nxt.open("rb")
            n: int = self._f.readinto(b)
            if n:
                return n
            self._f.close()
            self._f = None


def unpack(kit: Path, manifest: dict[str, Any], dest: Path) -> int:
    """Put the parts back together into `dest` (emptied first). Every part must be present and
    whole (check_parts). Returns the number of files."""
    _, bad = check_parts(kit, manifest)
    if bad:
        raise ValueError(f"parts missing or damaged: {', '.join(bad)}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    stream = io.BufferedReader(_Joined([kit / p["name"] for p in manifest["parts"]]), MiB)
    n = 0
    with lzma.LZMAFile(stream) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for member in tar:
            target = (dest / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(dest.resolve()):
                raise ValueError(f"unexpected entry in the kit: {member.name}")
            tar.extract(member, dest, set_attrs=False)
            if member.mode & stat.S_IXUSR:
                os.chmod(target, 0o755)
            n += 1
    return n
