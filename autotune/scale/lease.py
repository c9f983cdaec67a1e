"""Who runs a shared study's confirmation round: one worker, never two (a lease in the storage).

The lease is a study named `<study>:confirm:<trials>:<k>` in the same storage: creating a
study of a taken name fails in the database (a unique key), so of several workers that finish
together exactly one creates it. `<trials>` is the number of measured trials it confirms; `k`
counts confirmations of that same search (a later run that resumes a finished study confirms
again, under the next k).

A worker that finds the lease taken:
- by a confirmation still running (its holder beats at every round): leaves it to the holder;
- done after this worker started: a peer of this run confirmed; nothing left to do here;
- done before this worker started, abandoned (its holder was interrupted), or its holder
  dead (a process of this host that is gone, or silent for STALE_S): the next k is tried.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import optuna

# a holder that has not beaten for this long is dead (a round is one server start and its load)
STALE_S = 1800.0
TAKEN, BEAT, DONE, HOLDER = "taken_at", "beat_at", "done_at", "holder"
ABANDONED = "abandoned_at"  # its holder stopped before the end (interrupted, an error)


@dataclass(frozen=True)
class Lease:
    storage: optuna.storages.BaseStorage
    name: str

    def _study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def beat(self) -> None:
        self._study().set_user_attr(BEAT, time.time())

    def abandon(self) -> None:
        self._study().set_user_attr(ABANDONED, time.time())

    def done(self, note: str) -> None:
        s = self._study()
        s.set_user_attr("note", note)
        s.set_user_attr(DONE, time.time())


@dataclass(frozen=True)
class Held:
    """Another worker holds (or held) the lease: what to tell the user."""

    name: str
    holder: str
    running: bool


def take(storage: optuna.storages.BaseStorage, study: str, trials: int,
         started_at: float, now: float | None = None) -> Lease | Held:
    """The lease to confirm `study`'s `trials` measured trials, or who has it."""
    for k in range(1, 1000):
        name = f"{study}:confirm:{trials}:{k}"
        try:
            lease = optuna.create_study(study_name=name, storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
            t = time.time() if now is None else now
            holder = str(attrs.get(HOLDER, "?"))
            if ABANDONED in attrs or _gone(holder):
                continue
            if DONE in attrs:
                if float(attrs[DONE]) >= started_at:
                    return Held(name, holder, running=False)
                continue  # an earlier run's confirmation: this run confirms again
            beat = float(attrs.get(BEAT, attrs.get(TAKEN, t)))
            if t - beat < STALE_S:
                return Held(name, holder, running=True)
            continue  # its holder died mid-confirmation
        lease.set_user_attr(HOLDER, f"{socket.gethostname()}:{os.getpid()}")
        lease.set_user_attr(TAKEN, time.time())
        return Lease(storage, name)
    raise AssertionError("a thousand confirmations of one search")


def _gone(holder: str) -> bool:
    """A holder on this host whose process no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


__all__ = ["STALE_S", "Held", "Lease", "take"]
