"""Resets on network namespaces (N=1,000, about 15 s each): a close with unread data and
an ``abort`` send a reset, and the checkpoint model expects it (orchestrator/scenario.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .facts import checkpoint, objs
from .test_netns_scenarios import run_ok

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]
N = 1000

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
#: shared with tests/unit/test_scenario.py, which checks the model's expectations of them
UNREAD_CLOSE = str(SCENARIOS / "unread-close.yaml")
ABORT = str(SCENARIOS / "abort.yaml")


def test_a_close_with_unread_data_resets(tmp_path: Path) -> None:
    result = run_ok(UNREAD_CLOSE, tmp_path, n=N)
    assert checkpoint(result, "unread")["states"] == {"server": {"ESTAB": N},
                                                       "client": {"ESTAB": N}}
    reset = checkpoint(result, "reset")
    # no FIN-WAIT-2, no TIME-WAIT: the client's sockets went away with the reset, the
    # server's are CLOSE (not shown by sock_diag once unhashed)
    assert reset["states"]["client"] == {}
    assert set(reset["states"]["server"]) <= {"UNCONN"}
    assert sum(b.get("recv_q", 0) + b.get("send_q", 0)
               for b in reset["buffers"].values()) == 0
    assert checkpoint(result, "gone")["states"] == {"server": {}, "client": {}}


def test_abort_resets_idle_connections(tmp_path: Path) -> None:
    result = run_ok(ABORT, tmp_path, n=N)
    aborted = checkpoint(result, "aborted")
    assert aborted["states"]["client"] == {}
    assert set(aborted["states"]["server"]) <= {"UNCONN"}
    # a reset leaves no tw sock behind, as a FIN-closed client would (TIME-WAIT)
    assert abs(objs(aborted, "tw_sock_TCP")) < 0.1
