"""How a run ends: the teardown every run gets, and the error it reports.

Both are used by labrun.py's ``finally``/``except``: they never raise on their own account,
so a failing cleanup or diagnosis cannot hide the run's error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence

from .. import faults
from ..backends import Backend
from ..errors import LabError, RunError
from ..measure import probes
from ..measure.snapshot import Snapshot
from .sides import Sides


class Interrupted(RunError):
    """SIGINT or SIGTERM arrived; the run stops and cleans up.

    Exits 128 + the signal's number, as a shell reports a process the signal ended:
    130 for Ctrl-C, 143 for SIGTERM, so make, loops and CI see an interrupt, not a failure.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def teardown(backend: Backend, sides: Sides | None, snapshots: Sequence[Snapshot],
             line: Callable[[str], None]) -> None:
    """Sides told to exit, the journal undone, then the kernel given time to free."""
    if sides is not None:
        sides.close()
    faults.pause("teardown")
    problems = backend.down()
    if snapshots and not problems and not probes.wait_released(
            snapshots[0].slab, backend.measured_kernel()):
        line("note: the kernel is still freeing this run's sockets; "
             "a run started now would count them")
    if problems:
        line(f"cleanup left problems; run `tcplab wipe` ({problems[0]})")


def explained(error: LabError, backend: Backend | None) -> LabError:
    """The error, led by what the backend knows of hosts that died (a killed container):
    whichever side notices first reports a symptom; the cause comes first."""
    if isinstance(error, Interrupted) or backend is None:
        return error
    try:
        notes = [n for n in backend.diagnose() if n not in str(error)]
    except Exception:  # noqa: BLE001 - a diagnosis never hides the error itself
        return error
    return RunError(f"{'; '.join(notes)}; what the run saw: {error}") if notes else error
