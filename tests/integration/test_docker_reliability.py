"""Interrupts at every phase and side failures, on the docker backend.

Mirrors tests/integration/test_netns_reliability.py with ``--backend docker``. After
each case: no container or network labelled ``tcplab.run=<run id>`` remains (asked
through the Docker SDK), no side process of the run runs, the run's journal directory
(holding its SSH key pair) is gone, every writable value under /proc/sys/net equals its
value before the run (the run changes a host-wide one with --allow-host-sysctls), and
the partial result is saved and marked incomplete (an interrupt during teardown: the
run completes).

Side failures: a side process crashing, the server container killed while the run is
paused at a checkpoint and while a side stalls, the SSH session to the server dropped
(its ``sshd -i`` killed inside the container) and a stalled side: each stops the run
within 60 s with a message naming the host and what happened, and ``tcplab report``
shows the saved result as INCOMPLETE.

Needs root and a Docker daemon. Skipped when no daemon answers, except under CI (env CI
set), where that is a failure. Runs queue for the machine-wide lock
(TCPLAB_LOCK_WAIT, see tests/conftest.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from orchestrator.backends.docker import LABEL_RUN  # noqa: E402
from orchestrator.journal import HostLock  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = "1000"
HOST_SYSCTL = "net.ipv4.tcp_max_orphans"  # host-wide on this kernel
#: Every failure must end the run within this many seconds (after the run got the lock).
BOUND_S = 60
LOCK_WAIT_S = 900

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def daemon() -> Iterator[object]:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the docker reliability tests need root")
        pytest.skip("needs root (namespaces, /proc/slabinfo, cgroups)")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon"
        reason = f"no Docker daemon answers ({type(exc).__name__}: {exc})"
        if in_ci():
            pytest.fail(f"{reason}; CI must start one (bash .ci/setup-docker.sh)")
        pytest.skip(f"{reason}; run bash .ci/setup-docker.sh as root")
    yield client
    client.close()


# -- host state -----------------------------------------------------------------------------

def net_sysctls() -> dict[str, str]:
    """Every writable value under /proc/sys/net (read-only ones are counters, such as
    nf_conntrack_count, which other traffic on the machine moves)."""
    values = {}
    for d, _, files in os.walk("/proc/sys/net"):
        for f in files:
            path = os.path.join(d, f)
            try:
                if os.stat(path).st_mode & 0o200:
                    values[path] = Path(path).read_text()
            except OSError:
                pass
    return values


def sysctls_changed(before: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    after = net_sysctls()
    changed = {}
    for key, old in before.items():
        new = after.get(key)
        if new is None and not Path(key).exists():
            # an interface of someone else (another test) went away meanwhile: our runs
            # create no interface in this namespace, and every one present before was not ours
            continue
        if new != old:
            changed[key] = (old, new)
    return changed


def snapshot_when_idle() -> dict[str, str]:
    """The sysctl dump, taken while no run holds the machine lock.

    A run of someone else changes host sysctls (--allow-host-sysctls) while it holds the
    lock; a dump taken then would see values it restores later.
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
            return net_sysctls()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def host_profile(tmp: Path) -> Path:
    current = int(Path("/proc/sys/net/ipv4/tcp_max_orphans").read_text())
    path = tmp / "host-wide.yaml"
    path.write_text(f"description: changes a host-wide sysctl\nsysctls:\n"
                    f"  {HOST_SYSCTL}: {current + 1234}\n")
    return path


# -- a run ----------------------------------------------------------------------------------

class Run:
    """A ``tcplab run --backend docker`` in the background; its stderr lines are collected."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.results = tmp / "results"
        self.state = tmp / "state"
        full_env = {**os.environ, "TCPLAB_STATE_DIR": str(self.state),
                    "TCPLAB_LOCK_WAIT": str(LOCK_WAIT_S), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", "--backend", "docker",
             "--results", str(self.results), *args],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stamped: list[tuple[float, str]] = []  # (monotonic time, line), for timing
        self._new: queue.Queue[str | None] = queue.Queue()
        self.started: float | None = None  # when the run got the lock (its first phase)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out: list[str] = []
        self._out_reader = threading.Thread(
            target=lambda: self._out.extend(self.proc.stdout), daemon=True)  # type: ignore[arg-type]
        self._out_reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self.started is None and "] hosts" in line:
                self.started = time.monotonic()
            self.lines.append(line)
            self.stamped.append((time.monotonic(), line))
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, text: str, timeout: float = LOCK_WAIT_S + 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
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
            self.proc.kill()
            raise
        self._reader.join(timeout=10)
        self._out_reader.join(timeout=10)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    @property
    def run_dir(self) -> Path:
        (run_dir,) = list(self.results.iterdir())
        return run_dir

    def containers(self, client: object) -> dict[str, object]:
        """The run's containers by role."""
        flt = {"label": f"{LABEL_RUN}={self.run_dir.name}"}
        return {c.labels["tcplab.role"]: c for c in client.containers.list(all=True, filters=flt)}


def assert_left_nothing(run: Run, before: dict[str, str]) -> dict:
    run_id = run.run_dir.name
    client = docker.from_env(timeout=60)
    try:
        flt = {"label": f"{LABEL_RUN}={run_id}"}
        containers = [c.name for c in client.containers.list(all=True, filters=flt)]
        networks = [n.name for n in client.networks.list(filters=flt)]
    finally:
        client.close()
    assert containers == [] and networks == [], f"left behind: {containers} {networks}"
    procs = subprocess.run(["pgrep", "-af", f"side.py --run {run_id}"], capture_output=True,
                           text=True).stdout
    assert procs.strip() == "", f"side processes left: {procs}"
    state_runs = run.state / "runs"
    # the journal dir, and the run's SSH key pair in it, is gone
    assert not state_runs.exists() or not list(state_runs.iterdir()), list(state_runs.iterdir())
    changed = sysctls_changed(before)
    assert not changed, changed
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
    if phase in ("setup", "ramp", "checkpoint"):
        assert len(run.containers(daemon)) == 2  # the containers exist when the signal comes
    run.proc.send_signal(sig)
    code = run.finish()
    result = assert_left_nothing(run, before)
    if phase == "teardown":
        # signals are held off while cleaning up: the run completes and cleans up anyway
        assert code == 0, run.stderr[-3000:]
        assert result["status"] == "complete"
    else:
        assert code == 1, run.stderr[-3000:]
        assert "interrupted" in run.stderr
        assert result["status"] == "incomplete" and "interrupted" in result["error"]
    assert result["metadata"]["host_sysctls"][HOST_SYSCTL]


# -- side failures --------------------------------------------------------------------------

@pytest.mark.parametrize("fault,message", [
    ("server:connect:crash", "server (server): connect failed: worker"),
    ("client:send:crash", "client (client): send failed: worker"),
    ("server:read:stall", "server (server): no answer to read for 3 s"),
])
def test_side_failure_stops_run_and_saves_partial(tmp_path: Path, daemon: object, fault: str,
                                                  message: str) -> None:
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "c2s", "-n", "500", "--stall", "3",
              env={"TCPLAB_SIDE_FAULT": fault})
    code = run.finish()
    assert run.started is not None, run.stderr
    assert time.monotonic() - run.started < BOUND_S
    assert code == 1, run.stderr[-3000:]
    assert message in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, before)
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
    killed = time.monotonic()
    server.kill()
    code = run.finish()
    assert time.monotonic() - killed < BOUND_S
    assert code == 1, run.stderr[-3000:]
    message = f"server: cannot open an SSH session: container {server.name} (server) is not running"
    assert message in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, before)
    assert_incomplete_and_reported(run, result, message)


def test_server_container_killed_while_side_stalls(tmp_path: Path, daemon: object) -> None:
    """A stalled side would be declared stalled after --stall (30 s here); the container's
    death is noticed long before."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N, "--stall", "30",
              env={"TCPLAB_SIDE_FAULT": "server:connect:stall"})
    run.wait_for("] ramp")
    time.sleep(1)
    server = run.containers(daemon)["server"]
    killed = time.monotonic()
    server.kill()
    code = run.finish()
    assert time.monotonic() - killed < 20, "the run waited for the stall timeout"
    assert code == 1, run.stderr[-3000:]
    # what the orchestrator saw, and what the daemon says happened to the container
    for fragment in ("server: the SSH connection", "dropped while the side ran",
                     f"container {server.name} (server) is not running"):
        assert fragment in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, before)
    assert_incomplete_and_reported(run, result, "dropped", f"container {server.name}")


@pytest.mark.parametrize("nth,checkpoint", [(1, "baseline"), (2, "established")])
def test_ssh_session_dropped_at_checkpoint(tmp_path: Path, daemon: object, nth: int,
                                           checkpoint: str) -> None:
    """The side dies with its SSH session (and its sockets with it). At the last checkpoint
    nothing talks to the side afterwards: the run used to reconnect for the probes and save
    the snapshot (server FIN-WAIT-2, client CLOSE-WAIT) as a complete result."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N,
              env={"TCPLAB_PAUSE_AT": "checkpoint", "TCPLAB_PAUSE_SECONDS": "3"})
    for _ in range(nth):
        run.wait_for("paused at checkpoint")
    killed = time.monotonic()
    assert _kill_sshd_sessions(run.containers(daemon)["server"])
    code = run.finish()
    assert time.monotonic() - killed < BOUND_S
    assert code == 1, run.stderr[-3000:]
    message = f"checkpoint {checkpoint} discarded"
    assert "server: the SSH connection" in run.stderr and "dropped" in run.stderr, \
        run.stderr[-3000:]
    assert message in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, before)
    assert_incomplete_and_reported(run, result, "server", "dropped", message)
    assert checkpoint not in [c["name"] for c in result["checkpoints"]]


def test_server_container_frozen_at_checkpoint(tmp_path: Path, daemon: object) -> None:
    """A host that stops answering (``docker pause``): opening an SSH session on it used to
    wait paramiko's default hour. Frozen at the baseline, so no connection is open: with
    connections open, the client's closing sockets would wait minutes for the frozen peer
    (the kernel keeps them as orphans) and disturb the runs after this one."""
    before = snapshot_when_idle()
    run = Run(tmp_path, "--scenario", "idle", "-n", N, "--stall", "3",
              env={"TCPLAB_PAUSE_AT": "checkpoint", "TCPLAB_PAUSE_SECONDS": "2"})
    run.wait_for("paused at checkpoint")
    server = run.containers(daemon)["server"]
    frozen = time.monotonic()
    server.pause()
    code = run.finish()
    assert time.monotonic() - frozen < BOUND_S
    assert code == 1, run.stderr[-3000:]
    assert f"container {server.name} (server) is paused" in run.stderr, run.stderr[-3000:]
    assert "server: SSH to" in run.stderr, run.stderr[-3000:]
    result = assert_left_nothing(run, before)
    assert_incomplete_and_reported(run, result, "server", "is paused")
