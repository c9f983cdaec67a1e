"""`python -m autotune.cli`: the command line."""

import sys

from autotune.cli.entry import run

sys.exit(run())
