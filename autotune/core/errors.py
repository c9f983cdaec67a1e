"""The exception tree: user errors stop the run, trial failures are results.

    AutotuneError
    ├── UserError            bad input; the CLI prints one line and exits 2, no server started
    │   ├── ConfigError      a file (search space, workload, profile) failed validation
    │   └── WorkloadError    the load fails alike for every candidate (a prompt the model
    │                        refuses, a count the server does not confirm): found by a trial
    ├── EnvironmentFailure   the machine is not fit to measure on (port busy, memory not back)
    └── TrialFailure         a candidate configuration failed; recorded on its trial, never raised
                             out of the tuner
"""

from __future__ import annotations

from enum import Enum


class AutotuneError(Exception):
    """Root of every error autotune raises on purpose."""


class UserError(AutotuneError):
    """Input the user must fix. Stops the run before any server starts."""


class ConfigError(UserError):
    """A file failed validation. The message names the file and the field."""

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {message}")


class WorkloadError(UserError):
    """The workload, not the candidate, is at fault: every candidate would fail it alike
    (the server refused its requests as malformed, or counted other tokens than planned).
    Found once a server runs, it stops the run with one line."""


class EnvironmentFailure(AutotuneError):
    """The machine cannot give a clean measurement (busy port, memory not released)."""


class FailureReason(str, Enum):
    """Why a trial failed. Values are stable: they are stored on Optuna trials."""

    INVALID_ARGS = "invalid_args"
    OOM_AT_STARTUP = "oom_at_startup"
    STARTUP_CRASH = "startup_crash"
    STARTUP_TIMEOUT = "startup_timeout"
    DIED_DURING_BENCHMARK = "died_during_benchmark"
    OOM_UNDER_LOAD = "oom_under_load"
    HUNG_UNDER_LOAD = "hung_under_load"
    LOAD_ERROR = "load_error"
    TOO_MANY_ERRORS = "too_many_errors"
    ENVIRONMENT = "environment"
    # found before any start: recorded without one, and not counted in the budget
    BREAKS_RULE = "breaks_rule"
    CANNOT_FIT = "cannot_fit"
    # greedy outputs too far from vLLM's defaults' (a setting that changes numerics)
    LOW_AGREEMENT = "low_agreement"


NO_START = (FailureReason.BREAKS_RULE, FailureReason.CANNOT_FIT)


class TrialFailure(AutotuneError):
    """A candidate configuration did not produce a valid measurement."""

    def __init__(self, reason: FailureReason, detail: str, log_tail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.log_tail = log_tail
        super().__init__(f"{reason.value}: {detail}")
