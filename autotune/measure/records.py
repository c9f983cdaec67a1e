"""What a trial leaves on disk: its result and every request it measured, written atomically.

`samples.jsonl.gz` holds one JSON object per measured request (level, round, timings in
seconds from the trial's first measured request, token counts planned and reported), so any
decision can be re-checked and plotted later from the same data it was made on.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from autotune.measure.client import LevelRun
from autotune.measure.metrics import RequestSample


def atomic_write(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file private; keep the mode a replaced file had (else rw-r--r--)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, doc: Any) -> None:
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def sample_rows(runs: Sequence[LevelRun]) -> Iterable[dict[str, Any]]:
    t0 = min((s.start for r in runs for s in r.samples), default=0.0)
    for run in runs:
        for s in run.samples:
            yield {"level": run.plan.index, "round": run.plan.round,
                   "start": _r(s.start - t0), "end": _r(s.end - t0), "ok": s.ok,
                   "ttft": _r(s.ttft), "itl": [_r(x) for x in s.itl],
                   "prompt_tokens": s.prompt_tokens, "output_tokens": s.output_tokens,
                   "planned_prompt_tokens": s.planned_prompt_tokens,
                   "max_tokens": s.max_tokens, "error": s.error, "detail": s.detail}


def write_samples(path: Path, runs: Sequence[LevelRun]) -> None:
    lines = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in sample_rows(runs))
    atomic_write(path, gzip.compress(lines.encode(), mtime=0))


def read_samples(path: Path) -> list[tuple[int, int, RequestSample]]:
    """(level, round, sample) for every request in a samples file."""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            out.append((row["level"], row["round"], RequestSample(
                start=row["start"], end=row["end"], ok=row["ok"], ttft=row["ttft"],
                itl=tuple(row["itl"]), prompt_tokens=row["prompt_tokens"],
                output_tokens=row["output_tokens"], error=row["error"], detail=row["detail"],
                planned_prompt_tokens=row["planned_prompt_tokens"],
                max_tokens=row["max_tokens"])))
    return out
