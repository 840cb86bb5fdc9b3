"""Interrupts at every phase, side failures and concurrent runs, on network namespaces.

After each: no namespace, link or side process of the run remains, the journal is gone,
the partial result is saved and marked incomplete, and every host sysctl under
/proc/sys/net (including one the run changed with --allow-host-sysctls) equals its value
before the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.netns import short_id

from . import netsysctls
from .dockerlab import (  # one definition of each for both backends
    HOST_SYSCTL,
    SIDE_FAULTS,
    host_profile,
    snapshot_when_idle,
    sysctls_changed,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]



def start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp / "state"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "--backend", "netns",
         "--results", str(tmp / "results"), *args],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_left_nothing(tmp: Path, before: dict[str, str]) -> dict:
    runs = list((tmp / "results").iterdir())
    assert len(runs) == 1
    run_id = runs[0].name
    sid = short_id(run_id)
    assert f"tcplab-{sid}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                  text=True).stdout
    assert f"tl{sid}" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                            text=True).stdout
    procs = subprocess.run(["pgrep", "-f", f"side.py --run {run_id}"], capture_output=True,
                           text=True).stdout
    assert procs.strip() == "", procs
    state_runs = tmp / "state" / "runs"
    assert not state_runs.exists() or not list(state_runs.iterdir())
    changed = sysctls_changed(before)
    assert not changed, "host sysctls changed:\n" + netsysctls.shown(changed)
    return json.loads((runs[0] / "result.json").read_text())


@pytest.mark.parametrize("phase", ["setup", "ramp", "checkpoint", "teardown"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_matrix(tmp_path: Path, phase: str, sig: signal.Signals) -> None:
    before = snapshot_when_idle()
    proc = start(tmp_path, "--scenario", "idle", "-n", "1000", "--profile",
                 str(host_profile(tmp_path)), "--allow-host-sysctls",
                 env={"TCPLAB_PAUSE_AT": phase, "TCPLAB_PAUSE_SECONDS": "3"})
    for line in proc.stderr:
        if f"paused at {phase}" in line:
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    result = assert_left_nothing(tmp_path, before)
    if phase == "teardown":
        # signals are held off while cleaning up: the run completes and cleans up anyway
        assert proc.returncode == 0, err
        assert result["status"] == "complete"
    else:
        assert proc.returncode == 128 + sig, err  # 130 SIGINT, 143 SIGTERM, as shells report
        assert "interrupted" in err
        assert result["status"] == "incomplete" and "interrupted" in result["error"]
    assert result["metadata"]["host_sysctls"][HOST_SYSCTL]


@pytest.mark.parametrize("fault,message", SIDE_FAULTS)
def test_side_failure_stops_run_and_saves_partial(tmp_path: Path, fault: str, message: str) -> None:
    before = snapshot_when_idle()
    proc = start(tmp_path, "--scenario", "c2s", "-n", "500", "--stall", "3",
                 env={"TCPLAB_SIDE_FAULT": fault})
    _, err = proc.communicate(timeout=180)  # teardown may wait for the kernel to free sockets
    assert proc.returncode == 1
    assert message in err, err
    result = assert_left_nothing(tmp_path, before)
    assert result["status"] == "incomplete"
    assert message in result["error"]
    assert result["finished"] - result["started"] < 60  # the run stopped in bounded time
    # an incomplete result is never shown as a complete one
    report = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report",
                             str(next((tmp_path / "results").iterdir()))],
                            cwd=ROOT, capture_output=True, text=True)
    assert "INCOMPLETE" in report.stdout


def test_second_concurrent_run_is_refused(tmp_path: Path) -> None:
    first = start(tmp_path / "a", "--scenario", "idle", "-n", "500",
                  env={"TCPLAB_PAUSE_AT": "ramp", "TCPLAB_PAUSE_SECONDS": "4"})
    for line in first.stderr:
        if "paused at ramp" in line:
            break
    second = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--scenario", "idle", "-n", "10",
         "--backend", "netns", "--results", str(tmp_path / "b" / "results")],
        cwd=ROOT, env={**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "b" / "state"),
                       "TCPLAB_LOCK_WAIT": "0"},
        capture_output=True, text=True, timeout=60)
    first.communicate(timeout=120)
    assert second.returncode == 2
    assert "another tcplab run is measuring on this machine (idle/default, pid" in second.stderr
    assert not (tmp_path / "b" / "results").exists()  # nothing created
    assert first.returncode == 0
