"""How a run ends: the teardown every run gets, and the error it reports.

Both are used by labrun.py's ``finally``/``except``: they never raise on their own account,
so a failing cleanup or diagnosis cannot hide the run's error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from .. import faults
from ..backends import Backend
from ..errors import LabError, RunError
from ..measure import probes
from ..measure.snapshot import Snapshot
from .sides import Sides


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the run stops and cleans up.

    Exits 128 + the signal's number, as a shell reports a process the signal ended:
    130 for Ctrl-C, 143 for SIGTERM, so make, loops and CI see an interrupt, not a failure.

    Not a :class:`LabError`: the handler raises it wherever the run happens to be, and a
    ``try: ... except LabError`` there (a probe that tolerates a failing command, say)
    must not swallow it. Like KeyboardInterrupt, only the run's own ending catches it.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def teardown(backend: Backend, sides: Sides | None, snapshots: Sequence[Snapshot],
             line: Callable[[str], None], *, followed: bool = False,
             release_wait: bool = True) -> None:
    """Sides told to exit, the journal undone, then the kernel given time to free (see
    :func:`release`)."""
    if sides is not None:
        sides.close()
    faults.pause("teardown")
    problems = backend.down()
    if snapshots and not problems:
        release(backend, snapshots[0].slab, line, followed, release_wait)
    if problems:
        line(f"cleanup left problems; run `tcplab wipe` ({problems[0]})")


def release(backend: Backend, baseline: dict[str, Any], line: Callable[[str], None],
            followed: bool, release_wait: bool) -> None:
    """Wait for the kernel to free this run's sockets only where a run depends on it:
    this machine's kernel (any run here), a remote kernel when another run of this command
    follows (``followed``); ``--no-release-wait`` never waits. Said while waiting."""
    ended = getattr(backend, "end_time_wait", None)
    if ended is not None:
        ended()  # ssh: this run's own TIME_WAIT sockets closed at once (ss -K)
    kernel = backend.measured_kernel()
    wait = release_wait and (kernel.local or followed)

    def say(excess: dict[str, int]) -> None:
        held = ", ".join(f"{c} {n:,}" for c, n in sorted(excess.items())) or "a few"
        if wait:
            line(f"waiting up to 60 s for the kernel to free this run's sockets ({held} "
                 "objects above the baseline): a run started before then would count them "
                 "at its baseline (--no-release-wait skips this)")
        else:
            why = ("nothing later in this command measures that kernel" if release_wait
                   else "--no-release-wait")
            line(f"note: not waiting for the kernel to free this run's sockets ({held} "
                 f"objects above the baseline): {why}; a run started there within 60 s "
                 "waits for them at its baseline")

    if not probes.wait_released(baseline, kernel, on_wait=say, check_only=not wait) and wait:
        line("note: the kernel is still freeing this run's sockets; "
             "a run started now would count them")


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
