"""The ssh backend with several client hosts: three sshd hosts in network namespaces
(a server and two clients, see SshLab in test_ssh_backend.py) driven over SSH in parallel
with Fabric's group API.

Checks: the connections split across the two client addresses (the server's own sockets
say so), every host's clock offset recorded with its bound (the hosts share this
machine's clock, so the true offset is 0 and must lie within the bound), each snapshot
read on all hosts at once and timed against the same reads host after host, and nothing
left afterwards. Needs root, iproute2 and openssh-server.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from .test_ssh_backend import (
    SshLab,
    ns_sysctl,
    pytestmark,  # noqa: F401 - root, sshd
    remote_journals,
    side_processes,
    tcplab,
)

N = 400


@pytest.fixture
def three_hosts(tmp_path: Path):
    lab = SshLab(tmp_path, clients=2)
    try:
        yield lab.up()
    finally:
        lab.down()


def peers_of(ss_gz: Path) -> Counter:
    """The peer address of every ESTAB socket in a raw `ss -tanmi` capture."""
    peers: Counter = Counter()
    with gzip.open(ss_gz, "rt") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == "ESTAB":
                peers[fields[4].rsplit(":", 1)[0]] += 1
    return peers


def test_ssh_two_clients_in_parallel_with_clock_offsets(three_hosts: SshLab,
                                                        tmp_path: Path) -> None:
    lab_hosts = three_hosts
    before = {name: ns_sysctl(lab_hosts.ns[name], "net.ipv4.ip_local_port_range")
              for name in ("client", "client2")}
    lab = lab_hosts.lab_file()
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", str(N), "--lab", str(lab),
                  "--allow-host-sysctls", "--results", str(tmp_path / "results"),
                  timeout=1200)  # the machine lock may be held by other runs for minutes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clocks: server " in proc.stdout + proc.stderr
    (run_dir,) = list((tmp_path / "results").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    meta = result["metadata"]
    assert sorted(meta["hosts"]) == ["client", "client2", "server"]

    # The split: half the connections from each client's address, as the server sees them.
    est = next(c for c in result["checkpoints"] if c["name"] == "established")
    assert est["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N // 2},
                             "client2": {"ESTAB": N // 2}}
    server_peers = peers_of(run_dir / "raw" / "established" / "server-ss.txt.gz")
    ssh_from_here = f"198.19.{lab_hosts.k}.1"  # the control connection (raw ss keeps it)
    assert set(server_peers) <= {lab_hosts.addr["client"], lab_hosts.addr["client2"],
                                 ssh_from_here}
    assert server_peers[lab_hosts.addr["client"]] == N // 2
    assert server_peers[lab_hosts.addr["client2"]] == N // 2
    assert by_cache(est)["TCP"] == pytest.approx(2.0, abs=0.1)

    # Clock offsets: measured for every host, with a bound; one clock here, so 0 within it.
    for name in ("server", "client", "client2"):
        clock = meta["hosts"][name]["clock"]
        assert clock["rounds"] >= 3
        assert 0 < clock["error_s"] < 0.5, clock
        assert abs(clock["offset_s"]) <= clock["error_s"] + 1e-5, clock

    # Each snapshot read on the three hosts at once, and the same reads one after another.
    for cp in result["checkpoints"]:
        fan = cp["fanout"]
        assert fan["hosts"] == 3
        assert fan["parallel_seconds"] > 0 and fan["serial_seconds"] > 0
        assert sorted(fan["read_at"]) == ["client", "client2", "server"]
        assert min(fan["read_at"].values()) == 0
        assert max(fan["read_at"].values()) < fan["parallel_seconds"] + 0.5
    # The sides' timelines, merged on this machine's clock: every host's columns.
    columns = result["timeline"]["columns"]
    assert {"server.inuse", "client.inuse", "client2.inuse"} <= set(columns)
    assert max(columns["client2.inuse"]) >= N // 2

    # Nothing left: sysctls restored on both clients, journals gone, no side process.
    for name in ("client", "client2"):
        assert ns_sysctl(lab_hosts.ns[name], "net.ipv4.ip_local_port_range") == before[name]
    assert remote_journals(run_dir.name) == []
    assert side_processes(run_dir.name) == ""
    runs = tmp_path / "state" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_ssh_refuses_a_router(three_hosts: SshLab, tmp_path: Path) -> None:
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", "10", "--lab",
                  str(three_hosts.lab_file()), "--router", "nat", "--allow-host-sysctls",
                  "--results", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    assert "the ssh backend drives server and client hosts but not a router" in proc.stderr
    assert not (tmp_path / "results").exists()


def by_cache(checkpoint: dict) -> dict[str, float]:
    return {r["cache"]: r["objects_per_connection"]
            for r in checkpoint["per_connection_bytes"]["by_cache"]}
