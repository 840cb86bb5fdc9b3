"""Interrupts at every phase and side failures, on the docker backend.

Mirrors tests/integration/test_netns_reliability.py with ``--backend docker``. After
each case: no container or network labelled ``tcplab.run=<run id>`` remains (asked
through the Docker SDK), no side process of the run runs, the run's journal directory
(holding its SSH key pair) is gone, every writable value under /proc/sys/net equals its
value before the run (the run changes a host-wide one with --allow-host-sysctls), and
the partial result is saved and marked incomplete (an interrupt during teardown: the
run completes).

Side failures: a side process crashing or stalling (TCPLAB_SIDE_FAULT, --stall 3), the
server container killed (through the SDK) while the run is paused at a checkpoint and
while a side stalls, frozen (``docker pause``) while a checkpoint is taken, and the SSH
session to the server dropped (its ``sshd -i`` killed) at the first and at the last
checkpoint: each stops the run (its partial result saved) within 60 s with a message
naming the host and what happened, ``tcplab report`` shows the result as INCOMPLETE, and
cleanup leaves nothing.

Needs root and a Docker daemon. Skipped when no daemon answers, except under CI (env CI
set), where that is a failure. Runs queue for the machine-wide lock
(TCPLAB_LOCK_WAIT, see tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("docker")

from .dockerlab import (  # noqa: E402
    HOST_SYSCTL,
    SIDE_FAULTS,
    Run,
    assert_incomplete_and_reported,
    assert_left_nothing,
    docker_client,
    host_profile,
    snapshot_when_idle,
)

N = "1000"
#: Every failure stops the run (its partial result saved) within this many seconds.
BOUND_S = 60

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def daemon() -> Iterator[object]:
    yield from docker_client()


# -- the interrupt matrix -------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["setup", "image", "ramp", "checkpoint", "teardown"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_matrix(tmp_path: Path, daemon: object, phase: str,
                          sig: signal.Signals) -> None:
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N, "--profile", str(host_profile(tmp_path)),
              "--allow-host-sysctls",
              env={"TCPLAB_PAUSE_AT": phase, "TCPLAB_PAUSE_SECONDS": "2"})
    run.wait_for(f"paused at {phase}")
    # image: before the image is looked up or built, nothing created yet but the journal
    # and the host sysctl; every later phase: both containers exist
    assert len(run.containers(daemon)) == (0 if phase == "image" else 2)
    run.proc.send_signal(sig)
    code = run.finish()
    result = assert_left_nothing(run, daemon, before)
    if phase == "teardown":
        # signals are held off while cleaning up: the run completes and cleans up anyway
        assert code == 0, run.stderr[-3000:]
        assert result["status"] == "complete"
    else:
        assert code == 128 + sig, run.stderr[-3000:]  # 130 SIGINT, 143 SIGTERM
        assert "interrupted" in run.stderr
        assert result["status"] == "incomplete" and "interrupted" in result["error"]
    assert result["metadata"]["host_sysctls"][HOST_SYSCTL]


# -- side failures --------------------------------------------------------------------------

@pytest.mark.parametrize("fault,message", SIDE_FAULTS)
def test_side_failure_stops_run_and_saves_partial(tmp_path: Path, daemon: object, fault: str,
                                                  message: str) -> None:
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "c2s", "-n", "500", "--stall", "3",
              env={"TCPLAB_SIDE_FAULT": fault})
    code = run.finish()
    assert run.started is not None, run.stderr
    run.assert_stopped_soon(run.started, BOUND_S)
    assert code == 1, run.stderr[-3000:]
    assert message in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, daemon, before)
    assert_incomplete_and_reported(run, result, message)


def _kill_sshd_sessions(container: object) -> list[int]:
    """Kill the ``sshd -i`` processes (the orchestrator's SSH sessions; they rename
    themselves ``sshd: root@notty``) of a container, from this machine: the link drops as
    if the network had failed. sshd on the lab address (PID 1 in the container) stays."""
    top = container.top(ps_args="-eo pid,args")
    pid_col = top["Titles"].index("PID")
    args_col = top["Titles"].index("COMMAND")
    pids = [int(p[pid_col]) for p in top["Processes"]
            if p[args_col].startswith(("sshd: root@", "/usr/sbin/sshd -i"))]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def test_server_container_killed_at_checkpoint(tmp_path: Path, daemon: object) -> None:
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N,
              env={"TCPLAB_PAUSE_AT": "checkpoint", "TCPLAB_PAUSE_SECONDS": "3"})
    run.wait_for("paused at checkpoint")
    server = run.containers(daemon)["server"]
    killed = time.time()
    server.kill()
    code = run.finish()
    run.assert_stopped_soon(killed, BOUND_S)
    assert code == 1, run.stderr[-3000:]
    message = f"server: cannot open an SSH session: container {server.name} (server) is not running"
    assert message in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, daemon, before)
    assert_incomplete_and_reported(run, result, message)


def test_server_container_killed_while_side_stalls(tmp_path: Path, daemon: object) -> None:
    """A stalled side is declared stalled after --stall (30 s here); the container's death
    is noticed long before that."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N, "--stall", "30",
              env={"TCPLAB_SIDE_FAULT": "server:connect:stall"})
    run.wait_for("baseline ")  # taken: the sides are at the connect step, the server stalls
    time.sleep(0.5)
    server = run.containers(daemon)["server"]
    killed = time.time()
    server.kill()
    code = run.finish()
    run.assert_stopped_soon(killed, 20)  # not the 30 s stall timeout
    assert code == 1, run.stderr[-3000:]
    # the cause first, as the daemon tells it; then the symptom a side saw first: the
    # server's SSH link dropped, or (when the client was still connecting, as on a slower
    # machine) the client's connections were reset by the dying namespace
    cause = f"tcplab: error: container {server.name} (server) is not running: exited, " \
            "exit code 137 (SIGKILL); what the run saw: "
    assert cause in run.stderr, run.stderr[-3000:]
    seen = run.stderr.split(cause, 1)[1]
    assert (seen.startswith("server: the SSH connection") and "dropped while the side ran" in seen
            or seen.startswith("client (client): connect failed") and "reset by peer" in seen), \
        run.stderr[-3000:]
    result = assert_left_nothing(run, daemon, before)
    assert_incomplete_and_reported(run, result, f"container {server.name}", "what the run saw")


@pytest.mark.parametrize("nth,checkpoint", [(1, "baseline"), (2, "established")])
def test_ssh_session_dropped_at_checkpoint(tmp_path: Path, daemon: object, nth: int,
                                           checkpoint: str) -> None:
    """The side dies with its SSH session (and its sockets with it). At the last checkpoint
    nothing talks to the side afterwards: the run used to reconnect for the probes and save
    that snapshot (server FIN-WAIT-2, client CLOSE-WAIT) in a *complete* result."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N,
              env={"TCPLAB_PAUSE_AT": "checkpoint", "TCPLAB_PAUSE_SECONDS": "3"})
    for _ in range(nth):
        run.wait_for("paused at checkpoint")
    dropped = time.time()
    assert _kill_sshd_sessions(run.containers(daemon)["server"])
    code = run.finish()
    run.assert_stopped_soon(dropped, BOUND_S)
    assert code == 1, run.stderr[-3000:]
    message = f"checkpoint {checkpoint} discarded"
    for fragment in ("server: the SSH connection", "dropped while the side ran", message):
        assert fragment in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, daemon, before)
    assert_incomplete_and_reported(run, result, "server: the SSH connection", message)
    assert checkpoint not in [c["name"] for c in result["checkpoints"]]


def test_server_container_frozen_at_checkpoint(tmp_path: Path, daemon: object) -> None:
    """A host that stops answering (``docker pause``) while a checkpoint is taken: opening an
    SSH session on it used to wait paramiko's default hour. Frozen at the baseline, so no
    lab connection is open: with connections open, the client's closing sockets would wait
    minutes for the frozen peer (the kernel keeps them as orphans) and disturb later runs."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N, "--stall", "3",
              env={"TCPLAB_PAUSE_AT": "checkpoint", "TCPLAB_PAUSE_SECONDS": "2"})
    run.wait_for("paused at checkpoint")
    server = run.containers(daemon)["server"]
    frozen = time.time()
    server.pause()
    code = run.finish()
    run.assert_stopped_soon(frozen, BOUND_S)
    assert code == 1, run.stderr[-3000:]
    for fragment in ("server: SSH to", "Timeout opening channel",
                     f"container {server.name} (server) is paused"):
        assert fragment in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, daemon, before)
    assert_incomplete_and_reported(run, result, "server: SSH to", "is paused")
