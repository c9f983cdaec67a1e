"""Kill a server's process group when the tuner that owns it dies, however it dies.

`VllmServer` starts one of these per server, in a session of its own:
`python -m autotune.engine.watchdog OWNER_PID OWNER_START SERVER_PGID MARK`. It polls; when
the owner is gone (even by SIGKILL, which no handler in the owner can catch) it SIGTERMs the
server's group, then SIGKILLs it and every process whose environment carries the server's MARK
(a compile worker or any child that left the group with a session of its own).
PR_SET_PDEATHSIG covers only the server's first process; this covers the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil

# Every process of a server carries this variable (inherited through fork, spawn and setsid),
# valued with the server's own random mark: how VllmServer.stop() and this watchdog find
# its strays.
OWNER_MARK = "AUTOTUNE_SERVER_MARK"


def marked_processes(mark: str) -> list[psutil.Process]:
    """The live processes whose environment carries `mark` (this user's processes only)."""
    out = []
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(OWNER_MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def owner_alive(pid: int, start: float) -> bool:
    try:
        p = psutil.Process(pid)
        # a recycled pid is not our owner
        return abs(p.create_time() - start) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the group: one system call, where listing the group's
    members reads every process on the machine."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, mark: str, grace_s: float = 3.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    strays = marked_processes(mark)
    for p in strays:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(strays, timeout=5)


def main(argv: list[str]) -> int:
    owner, start, pgid, mark = int(argv[0]), float(argv[1]), int(argv[2]), argv[3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the tuner
    # every half second, cheaply: the owner's pid and the group's (several servers side by
    # side each have a watchdog); every process's environment is read only once the group is
    # gone, for strays that left it
    while True:
        if not owner_alive(owner, start):
            kill_group(pgid, mark)
            return 0
        if not group_alive(pgid) and not marked_processes(mark):
            return 0  # the server is gone: nothing left to guard
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
