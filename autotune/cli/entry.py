"""The command's entry point, light on purpose: Ctrl-C while Python still loads autotune's
modules (a second or more on a busy machine) ends the command in one line, as it does later
(autotune.cli.main), not in a traceback from whatever module was loading."""

from __future__ import annotations

import sys

from autotune.cli.interrupts import EXIT_INTERRUPTED, INTERRUPTED, settle


def run() -> int:
    try:
        from autotune.cli.main import main
    except KeyboardInterrupt:
        settle()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    return main(ending=True)
