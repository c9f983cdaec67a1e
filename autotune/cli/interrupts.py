"""Ctrl-C and SIGTERM that stop the tuner every time, wherever they land.

Both become a KeyboardInterrupt, so `with` blocks stop their servers and the trial is queued
again. Python raises it wherever the main thread is, and two places lose it or worse:
- a weakref callback or `__del__` run by the garbage collector: Python prints "Exception
  ignored" and carries on, and the tuner would go on tuning;
- the study's database code (SQLAlchemy, Optuna's storage): interrupted half-way, a session
  can be left holding a lock that the trial's clean-up then waits on for ever.
So an interrupt landing in the database code is delivered again a moment later, and one the
garbage collector swallowed is delivered again too. Once an interrupt has been raised, a
redelivery still pending is dropped (a second Ctrl-C by the user is not).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

# what the command says and returns when interrupted (autotune.cli.entry, autotune.cli.main)
INTERRUPTED = "autotune: interrupted; finished trials are saved, run again to continue"
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT

AGAIN_S = 0.05  # how soon an interrupt that could not be raised is delivered again
# modules an interrupt is not raised in: it waits until the main thread has left them
DEFERRED = ("sqlalchemy", "optuna.storages", "sqlite3", "psycopg2", "weakref")


class _State:
    signum: int | None = None
    active = False  # between `delivered()`'s entry and exit
    raised = False  # a KeyboardInterrupt was raised (and not swallowed since)


_state = _State()


def in_deferred_code(frame: FrameType | None) -> bool:
    """Whether `frame` or a frame that called it runs code of one of DEFERRED's modules."""
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if any(name == m or name.startswith(m + ".") for m in DEFERRED):
            return True
        frame = frame.f_back
    return False


def _again(signum: int) -> None:
    def deliver() -> None:
        if _state.active and not _state.raised:
            _thread.interrupt_main(signal.Signals(signum))
    timer = threading.Timer(AGAIN_S, deliver)
    timer.daemon = True
    timer.start()


def _handler(signum: int, frame: FrameType | None) -> None:
    _state.signum = signum
    if in_deferred_code(frame):
        _again(signum)
        return
    _state.raised = True
    raise KeyboardInterrupt


def _hook(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _state.active:
            # raised from the hook itself it would be swallowed again: from a thread, later
            _state.raised = False
            _again(_state.signum or signal.SIGINT)
            return
        previous(unraisable)
    return hook


@contextlib.contextmanager
def delivered() -> Iterator[None]:
    """Within it, SIGTERM is Ctrl-C, and neither is lost (on the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    signal.signal(signal.SIGTERM, _handler)
    if before[signal.SIGINT] is signal.default_int_handler:  # an ignored SIGINT stays so
        signal.signal(signal.SIGINT, _handler)
    sys.unraisablehook = _hook(hook)
    _state.active, _state.signum, _state.raised = True, None, False
    try:
        yield
    finally:
        _state.active = False
        sys.unraisablehook = hook
        for s, h in before.items():
            signal.signal(s, h)


def settle() -> None:
    """For a process about to end on an interrupt it has acted on (servers stopped, the
    trial queued again): another Ctrl-C or SIGTERM has nothing left to stop, and from here
    to the exit it is ignored, so it cannot turn the exit status 130, said in one line, into
    a death by signal or a traceback from Python's shutdown. And CPython is told the
    interrupt was handled (below)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    handled()


def handled() -> None:
    """Clears CPython's mark of a Ctrl-C nobody caught. A KeyboardInterrupt raised in code run
    by `exec` or `eval` from a string (dataclasses and namedtuple make their methods so, as
    modules load) sets that mark even when it is caught further up, as the command catches
    it; under `python -m` the interpreter then kills itself with SIGINT as it exits, after
    the command has said its line and returned 130 (a tuner interrupted as its server
    started died so about once in a hundred tries, and once on CI). Evaluating a string
    clears the mark (CPython's run_eval_code_obj, 3.11 to 3.13)."""
    exec("")
