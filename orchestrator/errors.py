"""The one exception hierarchy of tcplab.

Every message says what went wrong and what to do next. The CLI maps
``InputError`` to exit code 2 (nothing was created) and any other
``LabError`` to exit code 1 (a run failed; cleanup already happened).
"""

from __future__ import annotations


class LabError(Exception):
    """Base of every error tcplab reports to the user."""

    exit_code = 1


class InputError(LabError):
    """Bad input (lab file, profile, scenario, CLI argument, environment).

    Raised before anything is created.
    """

    exit_code = 2


class RunError(LabError):
    """A run failed after it started (a side crashed, stalled, a command failed)."""

    exit_code = 1


class CommandError(RunError):
    """A command run locally or on a lab host exited non-zero."""

    def __init__(self, result: object) -> None:
        self.result = result
        super().__init__(str(result))
