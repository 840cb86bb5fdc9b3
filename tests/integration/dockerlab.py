"""Helpers of the docker reliability and security tests: a tcplab run in the background,
the host's sysctls, what a run leaves behind.

Not a test module: imported by tests/integration/test_docker_reliability.py and
tests/integration/test_docker_security.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator.backends.docker import LABEL_RUN
from orchestrator.journal import HostLock

from . import netsysctls

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
#: How long a run may wait for other runs to free the machine lock.
LOCK_WAIT_S = 900
#: After a run failed, teardown waits up to this long for the kernel to free the run's
#: sockets (orchestrator.measure.probes.wait_released): part of cleanup, not of stopping.
RELEASE_WAIT_S = 60


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def docker_client(need_root: bool = True) -> Iterator[object]:
    """Body of a module fixture: a Docker client; skip without a daemon (fail under CI)."""
    import docker

    if need_root and os.geteuid() != 0:
        if in_ci():
            pytest.fail("the docker tests need root")
        pytest.skip("needs root (namespaces, /proc/slabinfo, cgroups)")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon"
        reason = f"no Docker daemon answers ({type(exc).__name__}: {exc})"
        if in_ci():
            pytest.fail(f"{reason}; CI must start one (bash .ci/setup-docker.sh)")
        pytest.skip(f"{reason}; run bash .ci/setup-docker.sh as root")
    yield client
    client.close()


# -- side failures (both backends' reliability tests) ---------------------------------------

#: TCPLAB_SIDE_FAULT values and the message the run must stop with (c2s, --stall 3).
SIDE_FAULTS = [
    ("server:connect:crash", "server (server): connect failed: worker"),
    ("client:send:crash", "client (client): send failed: worker"),
    ("server:read:stall", "server (server): no answer to read for 3 s"),
]


# -- host sysctls ---------------------------------------------------------------------------

HOST_SYSCTL = "net.ipv4.tcp_max_orphans"  # host-wide on this kernel


def host_profile(tmp: Path) -> Path:
    """A profile that changes HOST_SYSCTL (runs need --allow-host-sysctls): restored after."""
    current = int(Path("/proc/sys/net/ipv4/tcp_max_orphans").read_text())
    path = tmp / "host-wide.yaml"
    path.write_text(f"description: changes a host-wide sysctl\nsysctls:\n"
                    f"  {HOST_SYSCTL}: {current + 1234}\n")
    return path


def net_sysctls() -> dict[str, str]:
    """Every writable value under /proc/sys/net (see netsysctls.py)."""
    return netsysctls.values()


def sysctls_changed(before: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """What differs from ``before`` now, read while no other run holds the machine lock
    (one that queued behind ours may be changing host sysctls the moment ours ends)."""
    return netsysctls.changes(before, snapshot_when_idle())


def snapshot_when_idle(read: Callable[[], T] = net_sysctls) -> T:  # type: ignore[assignment]
    """The sysctl dump (or what ``read`` reads), taken while no run holds the machine lock.

    Another run changes host sysctls (--allow-host-sysctls) while it holds the lock and
    restores them at its end: a dump taken meanwhile would not be the host's own values.
    """
    path = HostLock.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("the machine lock stayed busy")
                time.sleep(0.5)
        try:
            return read()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- a run ----------------------------------------------------------------------------------

class Run:
    """A ``tcplab run --backend docker`` in the background; stderr lines are collected as
    they come (with their arrival time), so a test can act at a phase."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.results = tmp / "results"
        self.state = tmp / "state"
        full_env = {**os.environ, "TCPLAB_STATE_DIR": str(self.state),
                    "TCPLAB_LOCK_WAIT": str(LOCK_WAIT_S), **(env or {})}
        self.created = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", "--backend", "docker",
             "--results", str(self.results), *args],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stamped: list[tuple[float, str]] = []  # (time.time(), line)
        self.started: float | None = None  # time.time() when the run got the lock
        self._new: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._threads = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            now = time.time()
            if self.started is None and "] hosts" in line:  # the first phase: lock held
                self.started = now
            self.stamped.append((now, line))
            self._new.put(line)
        self._new.put(None)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self._stdout.extend(self.proc.stdout)

    def wait_for(self, text: str, timeout: float = LOCK_WAIT_S + 120) -> None:
        """Return once a stderr line contains text (the lock may be queued for first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.terminate()  # the run cleans up on SIGTERM
                pytest.fail(f"no {text!r} within {timeout:.0f} s: {self.stderr[-2000:]}")
            if line is None:
                pytest.fail(f"the run ended before {text!r} (exit {self.proc.wait()}): "
                            f"{self.stderr[-2000:]}")
            if text in line:
                return

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=120)
            raise
        self.ended = time.time()
        for thread in self._threads:
            thread.join(timeout=10)
        # for the test's captured output (pytest -s shows it): the suite's own time is
        # its duration less the time spent queueing behind other runs
        queued = (self.started or self.ended) - self.created
        print(f"tcplab run: queued {queued:.1f} s for the machine lock, "
              f"ran {self.ended - (self.started or self.ended):.1f} s, exit {code}")
        return code

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.stamped)

    def timeline(self, since: float) -> str:
        """stderr with each line's time relative to ``since`` (for failure messages)."""
        return "".join(f"{t - since:+7.2f} {line}" for t, line in self.stamped)

    @property
    def run_dir(self) -> Path:
        (run_dir,) = list(self.results.iterdir())
        return run_dir

    def containers(self, client: object) -> dict[str, object]:
        """The run's containers by role (server, client)."""
        flt = {"label": f"{LABEL_RUN}={self.run_dir.name}"}
        return {c.labels["tcplab.role"]: c for c in client.containers.list(all=True, filters=flt)}

    def assert_stopped_soon(self, fault: float, bound: float) -> None:
        """The run stopped (saved its result) within ``bound`` s of the fault, and its
        cleanup ended at most RELEASE_WAIT_S later."""
        saved = (self.run_dir / "result.json").stat().st_mtime
        assert saved - fault < bound, (f"result saved {saved - fault:.1f} s after the fault\n"
                                       + self.timeline(fault))
        assert self.ended - fault < bound + RELEASE_WAIT_S + 5, (
            f"exited {self.ended - fault:.1f} s after the fault\n" + self.timeline(fault))


def labelled(client: object, run_id: str) -> tuple[list[str], list[str]]:
    flt = {"label": f"{LABEL_RUN}={run_id}"}
    return ([c.name for c in client.containers.list(all=True, filters=flt)],
            [n.name for n in client.networks.list(filters=flt)])


def assert_left_nothing(run: Run, client: object, before: dict[str, str] | None = None) -> dict:
    """Nothing labelled with the run, no side process, no journal (nor key); sysctls as
    ``before``. Returns the saved result."""
    run_id = run.run_dir.name
    containers, networks = labelled(client, run_id)
    assert containers == [] and networks == [], f"left behind: {containers} {networks}"
    procs = subprocess.run(["pgrep", "-af", f"side.py --run {run_id}"], capture_output=True,
                           text=True).stdout
    assert procs.strip() == "", f"side processes left: {procs}"
    state_runs = run.state / "runs"
    assert not state_runs.exists() or not list(state_runs.iterdir()), list(state_runs.iterdir())
    if before is not None:
        changed = sysctls_changed(before)
        assert not changed, "host sysctls changed:\n" + netsysctls.shown(changed)
    return json.loads((run.run_dir / "result.json").read_text())


def assert_incomplete_and_reported(run: Run, result: dict, *fragments: str) -> None:
    assert result["status"] == "incomplete"
    for fragment in fragments:
        assert fragment in result["error"], (fragment, result["error"])
    report = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report",
                             str(run.run_dir)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    assert "INCOMPLETE" in report.stdout, report.stdout[:2000]
