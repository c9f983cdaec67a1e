"""One writer per profile: a run or re-tune holds a lock beside the profile it may replace.

An OS file lock (`flock`), not a file that says "busy": the kernel drops it when the holder
exits, however it ends (SIGKILL included), so no stale lock ever blocks the next night's run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from autotune.core.errors import UserError


class Busy(UserError):
    """Another autotune process holds the lock of this profile."""


def lock_path(profile: Path) -> Path:
    return profile.parent / f".{profile.name}.lock"


@contextlib.contextmanager
def profile_lock(profile: Path) -> Iterator[Path]:
    """Hold the profile's lock for the block, or raise Busy at once (never wait: a scheduler
    should see the clash, not stack runs up)."""
    path = lock_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise Busy(f"{profile}: another autotune run (pid {holder}) holds its lock "
                       f"({path}); it ends on its own, or when that process ends") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
