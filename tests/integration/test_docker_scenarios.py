"""Every scenario for real on the docker backend, at small N, asserting the article's facts.

Mirrors tests/integration/test_netns_scenarios.py with ``--backend docker``, plus what is
particular to containers: the idle cost matches a netns run of the same module, pinned
sysctls are visible inside the containers and recorded, cgroup memory is collected,
and Ctrl-C, SIGKILL + ``tcplab wipe`` leave no labelled container or network behind.

Needs root and a Docker daemon. Skipped when no daemon answers, except under CI (env CI
set), where that is a failure: CI must start one (bash .ci/setup-docker.sh).

Only one tcplab run measures at a time on a machine (/run/lock/tcplab.lock); a run that
finds the lock taken by someone else's run is retried until it gets it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from orchestrator.backends.docker import LABEL_RUN  # noqa: E402 - after the importorskip

from . import facts, netsysctls  # noqa: E402
from .dockerlab import docker_client, snapshot_when_idle  # noqa: E402
from .facts import cache, checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = 1000
#: The docker/netns comparison and the TIME_WAIT test compare a few hundred bytes per
#: connection; other processes on the machine open and close files and exit meanwhile
#: (an absolute noise of several hundred objects): a larger N keeps that below 5%.
N_CMP = 4000
BUSY = "another tcplab run is measuring"
LOCK_WAIT_S = 900  # how long to wait for other people's runs to free the machine lock
pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def daemon() -> Iterator[object]:
    yield from docker_client()


# -- running tcplab -------------------------------------------------------------------------

def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "TCPLAB_STATE_DIR": str(state)}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def tcplab(*args: str, results: Path, state: Path, timeout: float = 300
           ) -> subprocess.CompletedProcess:
    """Run tcplab; while another run holds the machine lock, wait and try again."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        proc = subprocess.run(_cli(*args, "--results", str(results)), cwd=ROOT, env=_env(state),
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode == 2 and BUSY in proc.stderr and time.monotonic() < deadline:
            shutil.rmtree(results, ignore_errors=True)  # a refused run may leave an empty dir
            time.sleep(3)
            continue
        return proc


def start_until_ramp(args: list[str], results: Path, state: Path, **popen: object
                     ) -> tuple[subprocess.Popen, list[str]]:
    """Start a run and return once it prints its ramp phase (retrying while the lock is busy)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        proc = subprocess.Popen(_cli(*args, "--results", str(results)), cwd=ROOT,
                                env=_env(state), stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, **popen)
        lines: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "] ramp" in line:
                return proc, lines
        proc.wait(timeout=60)
        text = "".join(lines)
        if proc.returncode == 2 and BUSY in text and time.monotonic() < deadline:
            shutil.rmtree(results, ignore_errors=True)
            time.sleep(3)
            continue
        pytest.fail(f"the run ended before its ramp (exit {proc.returncode}): {text[-2000:]}")


def run_ok(scenario: str, tmp_path: Path, *extra: str, backend: str = "docker",
           n: int = N) -> dict:
    results, state = tmp_path / "results", tmp_path / "state"
    proc = tcplab("run", "--scenario", scenario, "-n", str(n), "--backend", backend, *extra,
                  results=results, state=state)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert result["metadata"]["backend"] == backend
    if backend == "docker":
        assert_clean(run_dir.name, state)
    return result


def labelled(client: object, run_id: str) -> tuple[list[str], list[str]]:
    """Names of the containers and networks labelled with this run."""
    flt = {"label": f"{LABEL_RUN}={run_id}"}
    containers = [c.name for c in client.containers.list(all=True, filters=flt)]
    networks = [n.name for n in client.networks.list(filters=flt)]
    return containers, networks


def assert_clean(run_id: str, state: Path) -> None:
    client = docker.from_env(timeout=30)
    try:
        containers, networks = labelled(client, run_id)
    finally:
        client.close()
    assert containers == [] and networks == [], f"left behind: {containers} {networks}"
    procs = subprocess.run(["pgrep", "-f", f"side.py --run {run_id}"], capture_output=True,
                           text=True, check=False)
    assert procs.stdout.strip() == "", f"side processes left: {procs.stdout}"
    runs = state / "runs"
    # the journal dir (and the run's SSH key pair inside it) is gone
    assert not runs.exists() or not list(runs.iterdir()), list(runs.iterdir())


def host_sysctls() -> dict[str, str]:
    """Every writable /proc/sys/net value, read while no run holds the machine lock."""
    return snapshot_when_idle()


# -- the runs shared by several tests -------------------------------------------------------

@pytest.fixture(scope="module")
def idle_docker(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_ok("idle", tmp_path_factory.mktemp("idle-docker"))


@pytest.fixture(scope="module")
def idle_docker_cmp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_ok("idle", tmp_path_factory.mktemp("idle-docker-cmp"), n=N_CMP)


@pytest.fixture(scope="module")
def idle_netns_cmp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_ok("idle", tmp_path_factory.mktemp("idle-netns-cmp"), backend="netns", n=N_CMP)


# -- scenarios ------------------------------------------------------------------------------

def test_idle_matches_object_sizes(idle_docker: dict) -> None:
    result = idle_docker
    cp = checkpoint(result, "established")
    expected = result["metadata"]["idle_pair_estimate"]["total"]
    total = cp["per_connection_bytes"]["objects_total"]
    assert abs(total - expected) / expected < 0.10, (total, expected)
    assert 1.9 <= cache(cp, "TCP")["objects_per_connection"] <= 2.1
    assert cp["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N}}
    for host in ("server", "client"):
        buf = cp["buffers"][host]
        assert buf["rmem_alloc"]["sum"] == 0 and buf["wmem_queued"]["sum"] == 0
    client = result["metadata"]["hosts"]["client"]
    assert client["net_sysctls"]["net.ipv4.ip_local_port_range"] == "1024 65535"
    meta = result["metadata"]
    assert meta["image"].startswith("tcplab/node:") and meta["image_digest"].startswith("sha256:")
    assert meta["image_method"] in ("registry", "debootstrap")
    assert set(meta["containers"]) == {"server", "client"}
    assert meta["network"].startswith("tcplab-")


def test_idle_same_as_netns(idle_docker_cmp: dict, idle_netns_cmp: dict) -> None:
    """Containers add no socket memory: the idle cost per connection is the netns one.

    (Docker's netfilter connection tracking does add memory per connection, but it is
    reported as its own category, conntrack, not in the socket total.)
    """
    dk = checkpoint(idle_docker_cmp, "established")["per_connection_bytes"]
    ns = checkpoint(idle_netns_cmp, "established")["per_connection_bytes"]
    docker_total, netns_total = dk["objects_total"], ns["objects_total"]
    diff = abs(docker_total - netns_total) / netns_total
    message = (f"idle objects_total per connection at N={N_CMP}: docker {docker_total:,.1f} B, "
               f"netns {netns_total:,.1f} B ({diff:.1%} apart); conntrack docker "
               f"{dk['conntrack']:,.1f} B, netns {ns['conntrack']:,.1f} B")
    print(message)
    assert diff < 0.05, message


def test_cgroup_memory_in_checkpoints(idle_docker: dict) -> None:
    cp = checkpoint(idle_docker, "established")
    memory = cp["memory"]
    assert set(memory) == {"server", "client"}, memory.keys()
    for host, values in memory.items():
        assert values["cgroup"] in ("v1", "v2")
        assert idle_docker["metadata"]["containers"][host] in values["path"]
        assert isinstance(values["kmem"], int) and values["kmem"] > 0, (host, values)
        assert isinstance(values["usage"], int) and values["usage"] > 0, (host, values)
        assert all(isinstance(v, int) for k, v in values.items() if k not in ("cgroup", "path"))
    # The connecting side's sockets are made in its own process context: charged to it.
    assert memory["client"]["kmem"] > N * 2000, memory["client"]["kmem"]


def test_c2s_receive_buffer_below_rmem_min(tmp_path: Path) -> None:
    facts.receive_buffer_below_rmem_min(run_ok("c2s", tmp_path), N)


def test_s2c_64k_sender_released_receiver_holds(tmp_path: Path) -> None:
    facts.sender_released_receiver_holds(run_ok("s2c", tmp_path, "--bytes", "65536"), N, 65536)


def test_timewait_sheds_socket_objects(tmp_path: Path) -> None:
    n = N_CMP  # what remains is compared with 10% of what was there: see N_CMP
    facts.timewait_sheds_socket_objects(run_ok("timewait", tmp_path, n=n), n)


FORWARDING6 = "net.ipv6.conf.all.forwarding"


def _forwarding6() -> str:
    return Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text().strip()


def test_ipv4_run_leaves_ipv6_forwarding_off(tmp_path: Path, daemon: object,
                                             host_sysctl: Callable[[str, str], None]) -> None:
    # A fresh machine has IPv6 forwarding off; an IPv4 lab network has no IPv6, so dockerd
    # has no reason to turn it on (it did when every lab network had IPv6: issue 11).
    host_sysctl(FORWARDING6, "0")
    result = run_ok("idle", tmp_path, n=200)
    assert result["status"] == "complete"
    assert _forwarding6() == "0"


def test_ipv6_refused_without_opt_in(tmp_path: Path) -> None:
    results, state = tmp_path / "results", tmp_path / "state"
    proc = tcplab("run", "--scenario", "idle", "-n", "10", "--backend", "docker",
                  "--family", "ipv6", results=results, state=state)
    assert proc.returncode == 2, proc.stderr
    assert ("--family/FAMILY ipv6 on the docker backend: dockerd turns on IPv6 forwarding "
            "for the whole host") in proc.stderr
    assert not results.exists() or not list(results.iterdir())  # nothing created


def test_ipv6_sockets_are_tcpv6(tmp_path: Path, host_sysctl: Callable[[str, str], None]
                                ) -> None:
    # The Docker network carries the lab's IPv6 range beside the IPv4 one. dockerd turns
    # the host's IPv6 forwarding on for it: saved before, restored after the run.
    host_sysctl(FORWARDING6, "0")
    result = run_ok("idle", tmp_path, "--family", "ipv6", "--allow-host-sysctls")
    assert _forwarding6() == "0"
    cp = checkpoint(result, "established")
    assert cp["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N}}
    assert 1.8 <= cache(cp, "TCPv6")["objects_per_connection"] <= 2.2
    assert abs(cache(cp, "TCP")["objects_per_connection"]) < 0.1
    assert result["metadata"]["family"] == "ipv6"


def test_synrecv_filter_inside_the_client_container(tmp_path: Path) -> None:
    # The ACK-dropping rule is loaded in the client container's namespace from the host
    # (the container stays unprivileged) and goes away with the container. N=2,000 as on
    # netns: request socks are a cache of their own, so others' noise stays far below 2%.
    n = 2 * N
    result = run_ok("synrecv", tmp_path, n=n)
    cp = checkpoint(result, "syn_recv")
    assert cp["states"] == {"server": {"SYN-RECV": n}, "client": {"ESTAB": n}}
    assert "changed_while_taken" not in cp  # the containers' queues: see the netns test
    requests = cache(cp, "request_sock_TCP")["objects_per_connection"]
    assert 0.98 <= requests <= 1.02, requests
    assert {h["qdisc"] for h in result["metadata"]["hosts"].values()} == {"pfifo limit 65536"}
    # The request socks are allocated in softirq context: not charged to the server's cgroup.
    assert cp["memory_per_connection"]["server"]["kmem"] < 300


def test_profile_sysctl_pinned_in_both_containers(tmp_path: Path, daemon: object) -> None:
    rmem = "4096 65536 1048576"
    profile = tmp_path / "rmem-pinned.yaml"
    profile.write_text("description: tcp_rmem pinned for the docker test\n"
                       f"sysctls:\n  net.ipv4.tcp_rmem: \"{rmem}\"\n")
    host_before = host_sysctls()
    results, state = tmp_path / "results", tmp_path / "state"
    proc, _ = start_until_ramp(["run", "--scenario", "idle", "-n", str(N), "--backend",
                                "docker", "--profile", str(profile)], results, state)
    seen: dict[str, str] = {}
    pinned: dict[str, dict] = {}
    try:
        (run_dir,) = list(results.iterdir())
        flt = {"label": f"{LABEL_RUN}={run_dir.name}"}
        for container in daemon.containers.list(filters=flt):
            code, out = container.exec_run(["cat", "/proc/sys/net/ipv4/tcp_rmem"])
            assert code == 0, out
            role = container.labels["tcplab.role"]
            seen[role] = " ".join(out.decode().split())
            pinned[role] = container.attrs["HostConfig"].get("Sysctls") or {}
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert seen == {"server": rmem, "client": rmem}, seen
    assert all(p.get("net.ipv4.tcp_rmem") == rmem for p in pinned.values()), pinned
    result = json.loads((run_dir / "result.json").read_text())
    for host in ("server", "client"):
        meta = result["metadata"]["hosts"][host]
        assert meta["net_sysctls"]["net.ipv4.tcp_rmem"] == rmem
        assert meta["sysctls_pinned"]["net.ipv4.tcp_rmem"] == rmem
    assert netsysctls.changes(host_before, host_sysctls()) == {}  # the host's own: untouched
    assert_clean(run_dir.name, state)


def test_sigint_during_ramp_cleans_up(tmp_path: Path) -> None:
    results, state = tmp_path / "results", tmp_path / "state"
    before = host_sysctls()
    proc, _ = start_until_ramp(["run", "--scenario", "idle", "-n", "40000", "--backend",
                                "docker"], results, state)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "incomplete"
    assert_clean(run_dir.name, state)
    assert netsysctls.changes(before, host_sysctls()) == {}


def test_wipe_after_sigkill(tmp_path: Path, daemon: object) -> None:
    results, state = tmp_path / "results", tmp_path / "state"
    proc, _ = start_until_ramp(["run", "--scenario", "idle", "-n", "40000", "--backend",
                                "docker"], results, state, start_new_session=True)
    proc.kill()
    proc.wait(timeout=30)
    (run_dir,) = list(results.iterdir())
    containers, networks = labelled(daemon, run_dir.name)
    assert len(containers) == 2 and len(networks) == 1, (containers, networks)
    # the next run notices the stale one and points at wipe
    again = tcplab("run", "--scenario", "idle", "-n", "10", "--backend", "docker",
                   results=tmp_path / "other", state=state)
    assert again.returncode == 2 and "tcplab wipe" in again.stderr, again.stderr
    wiped = subprocess.run(_cli("wipe"), cwd=ROOT, env=_env(state), capture_output=True,
                           text=True, timeout=300, check=False)
    assert wiped.returncode == 0, wiped.stderr
    assert run_dir.name in wiped.stdout, wiped.stdout
    assert_clean(run_dir.name, state)


def test_wipe_restores_ipv6_forwarding_after_sigkill(
        tmp_path: Path, daemon: object, host_sysctl: Callable[[str, str], None]) -> None:
    host_sysctl(FORWARDING6, "0")
    results, state = tmp_path / "results", tmp_path / "state"
    proc, _ = start_until_ramp(["run", "--scenario", "idle", "-n", "40000", "--backend",
                                "docker", "--family", "ipv6", "--allow-host-sysctls"],
                               results, state, start_new_session=True)
    proc.kill()
    proc.wait(timeout=30)
    # What dockerd does for an IPv6 network unless it was started with --ip-forward=false
    # (as .ci/setup-docker.sh starts it): the journal recorded the value before, so the
    # wipe must bring it back either way.
    Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1\n")
    wiped = subprocess.run(_cli("wipe"), cwd=ROOT, env=_env(state), capture_output=True,
                           text=True, timeout=300, check=False)
    assert wiped.returncode == 0, wiped.stderr
    (run_dir,) = list(results.iterdir())
    assert_clean(run_dir.name, state)
    assert _forwarding6() == "0"


def test_undo_never_touches_unlabelled(daemon: object) -> None:
    """A journal entry whose name now belongs to an object without the run's label: kept."""
    from orchestrator.backends.docker import docker_undo_handlers

    handlers = docker_undo_handlers()
    name = f"tcplab-test-{os.getpid()}"
    network = daemon.networks.create(name, driver="bridge", internal=True)
    try:
        handlers["network"]({"kind": "network", "name": name, "run": "some-run"})
        assert daemon.networks.get(name).id == network.id
    finally:
        network.remove()
    handlers["network"]({"kind": "network", "name": name, "run": "some-run"})  # gone: fine
