"""Kill a server's process group when the tuner that owns it dies, however it dies.

`VllmServer` starts one of these per server, in a session of its own:
`python -m autotune.watchdog OWNER_PID OWNER_START SERVER_PGID`. It polls; when the owner is
gone (even by SIGKILL, which no handler in the owner can catch) it SIGTERMs the server's group,
then SIGKILLs it. PR_SET_PDEATHSIG covers only the server's first process; vLLM's engine and
worker processes are its children, and this covers them too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil


def owner_alive(pid: int, start: float) -> bool:
    try:
        p = psutil.Process(pid)
        # a recycled pid is not our owner
        return abs(p.create_time() - start) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) == pgid:
                out.append(p)
    return out


def kill_group(pgid: int, grace_s: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    owner, start, pgid = int(argv[0]), float(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the tuner
    while True:
        if not group_members(pgid):
            return 0  # the server is gone: nothing left to guard
        if not owner_alive(owner, start):
            kill_group(pgid)
            return 0
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
