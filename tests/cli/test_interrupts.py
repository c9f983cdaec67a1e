"""Ctrl-C and SIGTERM stop the tuner wherever they land: in a garbage collector's callback
(where Python swallows them) and in the study's database code (where they wait until it is
left)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from autotune.cli.interrupts import in_deferred_code

ROOT = Path(__file__).resolve().parents[2]

# A signal that lands in a weakref callback: the callback sends it and spins until Python has
# run the handler there. Without autotune.cli.interrupts the KeyboardInterrupt is "ignored" and the
# loop runs on to its end.
SWALLOWED = """
import os, signal, sys, time, weakref
from autotune.cli.interrupts import delivered

class Referent:
    pass

def callback(_):
    os.kill(os.getpid(), signal.{sig})
    t = time.monotonic()
    while time.monotonic() - t < 0.5:
        pass

with delivered():
    try:
        ref = weakref.ref(Referent(), callback)
        t = time.monotonic()
        while time.monotonic() - t < 20:
            time.sleep(0.01)
        print("went on")
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted after", round(time.monotonic() - t, 1), "s")
        sys.exit(130)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_an_interrupt_swallowed_in_a_gc_callback_is_delivered_again(sig: str) -> None:
    p = subprocess.run([sys.executable, "-c", SWALLOWED.format(sig=sig)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    assert p.returncode == 130, p.stdout + p.stderr
    assert "interrupted after" in p.stdout
    assert "Exception ignored" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_an_interrupt_is_held_while_the_study_database_runs() -> None:
    def at(module: str) -> types.FrameType:
        """A frame of a function defined in `module`, called from this test."""
        code = compile("def f():\n    import sys\n    return sys._getframe()\n", module, "exec")
        ns: dict[str, object] = {"__name__": module}
        exec(code, ns)
        frame = ns["f"]()  # type: ignore[operator]
        assert isinstance(frame, types.FrameType)
        return frame

    for module in ("sqlalchemy.orm.session", "optuna.storages._rdb.storage", "weakref"):
        assert in_deferred_code(at(module)), module
    for module in ("autotune.study.tuner", "optuna.study.study", "sqlalchemyish", "subprocess"):
        assert not in_deferred_code(at(module)), module
    assert not in_deferred_code(sys._getframe())


DEFERRED = """
import os, signal, sys, time, types
from autotune.cli.interrupts import delivered

code = compile('''
def commit(spin):
    import os, signal, time
    os.kill(os.getpid(), signal.SIGTERM)
    t = time.monotonic()
    while time.monotonic() - t < spin:
        pass
    print("committed", flush=True)
''', "sqlalchemy.engine.base", "exec")
ns = {"__name__": "sqlalchemy.engine.base"}
exec(code, ns)
with delivered():
    t = time.monotonic()
    try:
        ns["commit"](1.0)  # the signal lands in it and waits until it returns
        while time.monotonic() - t < 20:
            time.sleep(0.01)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted after", round(time.monotonic() - t, 1), "s")
        sys.exit(130)
"""


def test_an_interrupt_in_database_code_is_raised_once_it_is_left() -> None:
    p = subprocess.run([sys.executable, "-c", DEFERRED], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 130, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "committed" and lines[1].startswith("interrupted after"), p.stdout


def test_outside_the_block_the_handlers_are_what_they_were() -> None:
    from autotune.cli.interrupts import delivered

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    hook = sys.unraisablehook
    with delivered():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert sys.unraisablehook is hook


@pytest.mark.parametrize("where", ["entry", "exit", "arguments"])
def test_an_interrupt_landing_as_the_handlers_are_put_in_place_or_back_ends_in_one_line(
        where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The handler is in place a few instructions before the command's own `try`, and stays
    a few after it: a SIGTERM there ends the tuner as anywhere else (130, one line), not by
    Python's own death from an uncaught KeyboardInterrupt."""
    import contextlib
    from collections.abc import Iterator

    from autotune.cli import main as cli_main

    @contextlib.contextmanager
    def landing() -> Iterator[None]:
        if where == "entry":
            raise KeyboardInterrupt
        yield
        raise KeyboardInterrupt

    def reading() -> None:
        raise KeyboardInterrupt

    if where == "arguments":  # Ctrl-C while the arguments are read, before any handler
        monkeypatch.setattr(cli_main, "build_parser", reading)
    else:
        monkeypatch.setattr(cli_main, "delivered", landing)
    monkeypatch.setattr(cli_main, "dispatch", lambda ns: 0)
    assert cli_main.main(["validate", "x.yaml"]) == 130
    assert capsys.readouterr().err == ("autotune: interrupted; finished trials are saved, "
                                       "run again to continue\n")


# Ctrl-C while Python loads the command's modules: the import of autotune.cli.main interrupted
LOADING = """
import sys

class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "autotune.cli.main":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupting())
from autotune.cli.entry import run
sys.exit(run())
"""


def test_an_interrupt_while_the_modules_load_ends_in_one_line() -> None:
    """The command's entry (the `autotune` script, `python -m autotune.cli`) loads the rest
    inside its own `try`: a Ctrl-C a second after the start is one line and 130, not a
    traceback from whichever module was loading."""
    run = subprocess.run([sys.executable, "-c", LOADING], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 130, run.stderr
    assert run.stderr == ("autotune: interrupted; finished trials are saved, run again to "
                          "continue\n")


# An interrupted command whose exit takes a second (Python's shutdown of a large process)
EXITING = """
import atexit, sys, time
import autotune.cli.main

def slow_exit():
    t = time.monotonic()
    while time.monotonic() - t < 1:
        time.sleep(0.01)

def interrupted(argv):
    raise KeyboardInterrupt

atexit.register(slow_exit)
autotune.cli.main._command = interrupted
from autotune.cli.entry import run
sys.exit(run())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_interrupt_is_said_leaves_the_exit_130(sig: signal.Signals) -> None:
    """Ctrl-C pressed again (or SIGTERM from a supervisor) while the interrupted command
    exits: nothing is left to stop, and the exit stays 130 with its one line, not a death by
    the signal or a traceback from Python's shutdown."""
    p = subprocess.Popen([sys.executable, "-c", EXITING], cwd=ROOT, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                     signal.SIG_DFL))
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        sent = 0
        while p.poll() is None and sent < 1000:
            p.send_signal(sig)
            sent += 1
            time.sleep(0.005)
        rest = p.communicate(timeout=60)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert sent > 0 and p.returncode == 130, (sent, p.returncode, rest)
    assert line + rest == "autotune: interrupted; finished trials are saved, run again to " \
                          "continue\n"


# `python -m autotune.cli` interrupted where a Ctrl-C can land as modules load: inside a
# method that dataclasses or namedtuple made by evaluating a string
IN_EXEC = """
import runpy
import autotune.cli.main

def interrupted(argv):
    exec("raise KeyboardInterrupt")

autotune.cli.main._command = interrupted
runpy.run_module("autotune.cli", run_name="__main__")
"""


def test_an_interrupt_raised_in_code_evaluated_from_a_string_still_exits_130(
        tmp_path: Path) -> None:
    """CPython marks a KeyboardInterrupt leaving an `exec` of a string as one nobody caught,
    and under `python -m` kills itself with SIGINT as it exits: without the mark cleared the
    command said its line and died of SIGINT (-2), not 130."""
    (tmp_path / "interrupted_cli.py").write_text(IN_EXEC)
    run = subprocess.run([sys.executable, "-m", "interrupted_cli"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 130, (run.returncode, run.stderr)
    assert run.stderr == ("autotune: interrupted; finished trials are saved, run again to "
                          "continue\n")


def test_optuna_says_nothing_of_an_interrupted_trial() -> None:
    """Optuna logs a trial ended by an exception with its traceback; for Ctrl-C or SIGTERM
    the command's one line says it (tests/app/test_lifecycle.py interrupts a real run)."""
    import logging

    import autotune.study.budget  # noqa: F401  (puts the filter on Optuna's logger)

    logger = logging.getLogger("optuna.study._optimize")

    def record(exc: BaseException) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1,
                                 "Trial 3 failed with parameters: {} because of the following "
                                 "error: %r.", (exc,), (type(exc), exc, None))

    assert not logger.filter(record(KeyboardInterrupt()))
    assert logger.filter(record(ValueError("a bug")))  # a bug's traceback still shows
