"""Fault injection points for the reliability tests (interrupt matrix, side failures).

Inactive unless the environment asks: ``TCPLAB_PAUSE_AT=<phase>`` makes the run print
``tcplab: paused at <phase>`` and sleep there (``TCPLAB_PAUSE_SECONDS``, default 5), so a
test can deliver a signal in exactly that phase. ``TCPLAB_SIDE_FAULT=<role>:<op>:<kind>``
(kind ``crash`` or ``stall``) is passed to that side, which fails that way at that op.
"""

from __future__ import annotations

import os
import sys
import time

PHASES = ("setup", "ramp", "checkpoint", "teardown", "image")


def pause(phase: str) -> None:
    if os.environ.get("TCPLAB_PAUSE_AT") == phase:
        print(f"tcplab: paused at {phase}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("TCPLAB_PAUSE_SECONDS", "5")))


def side_fault(role: str) -> dict[str, str] | None:
    spec = os.environ.get("TCPLAB_SIDE_FAULT", "")
    parts = spec.split(":")
    if len(parts) == 3 and parts[0] == role:
        return {"op": parts[1], "kind": parts[2]}
    return None
