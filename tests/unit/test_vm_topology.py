"""Topologies on the vm backend without booting anything: which VM gets which lab
interface on which link, the switch of a network of more than two VMs (for real, over
Unix sockets), the router VM's size and sysctls, the routes and NAT it gets, and the
router's own-kernel cost."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import topology
from orchestrator.backends.common import nat_ruleset, route_argvs
from orchestrator.backends.vm import hub, network, qemu
from orchestrator.backends.vm.backend import vm_size
from orchestrator.backends.vm.kernels import Kernel
from orchestrator.config import load_lab
from orchestrator.measure.analysis import own_kernel_cost
from orchestrator.plan import RunOptions, make_plan

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_lab(ROOT / "lab" / "default.yaml")


def test_the_two_host_lab_is_one_point_to_point_link(tmp_path: Path) -> None:
    links = network.plan_links(DEFAULT, tmp_path)
    assert links.hubs == []
    assert links.nics == {
        "server": [network.LabNic("52:54:00:7c:02:01", "198.18.0.2/24", tmp_path / "lab.sock",
                                  True)],
        "client": [network.LabNic("52:54:00:7c:02:02", "198.18.0.3/24", tmp_path / "lab.sock",
                                  False)]}


def test_two_clients_behind_a_router(tmp_path: Path) -> None:
    lab = topology.derive(DEFAULT, 2, "nat")
    assert [h.name for h in network.start_order(lab)] == ["server", "router", "client1",
                                                           "client2"]
    links = network.plan_links(lab, tmp_path)
    clients_net, server_net = tmp_path / "lab0.sock", tmp_path / "lab1.sock"
    assert links.hubs == [clients_net]  # three members: a switch; two: a direct link
    assert links.nics["router"] == [
        network.LabNic("52:54:00:7c:02:02", "198.18.0.1/24", clients_net, False),
        network.LabNic("52:54:00:7c:03:02", "198.18.1.1/24", server_net, False)]
    assert links.nics["server"] == [
        network.LabNic("52:54:00:7c:02:01", "198.18.1.2/24", server_net, True)]
    assert [(n.address, n.socket, n.listen) for c in ("client1", "client2")
            for n in links.nics[c]] == [("198.18.0.3/24", clients_net, False),
                                        ("198.18.0.4/24", clients_net, False)]
    macs = [n.mac for nics in links.nics.values() for n in nics]
    assert len(set(macs)) == len(macs)


def test_one_client_and_a_router_need_no_switch(tmp_path: Path) -> None:
    links = network.plan_links(topology.derive(DEFAULT, 1, "plain"), tmp_path)
    assert links.hubs == []
    # the router starts before the client: it listens on the clients' link
    assert [n.listen for n in links.nics["router"]] == [True, False]
    assert [n.listen for n in links.nics["client"]] == [False]


def test_router_vm_has_an_interface_on_each_network(tmp_path: Path) -> None:
    lab = topology.derive(DEFAULT, 2, "nat")
    nics = network.plan_links(lab, tmp_path).nics["router"]
    kernel = Kernel("6.1", "6.1.0-56-cloud-amd64", "/cache/vmlinuz", "/cache/modules.img", "apt")
    config = qemu.VmConfig(name="tcplab-abc123-router", host="router", index=2, kernel=kernel,
                           rootfs="/cache/root.img", workdir=tmp_path, labs=nics,
                           public_key="AAAAKEY", memory_mb=512, cpus=1, ssh_port=40022)
    argv = config.argv()
    assert f"stream,id=lab0,server=off,addr.type=unix,addr.path={tmp_path}/lab0.sock" in argv
    assert f"stream,id=lab1,server=off,addr.type=unix,addr.path={tmp_path}/lab1.sock" in argv
    assert "virtio-net-pci,netdev=lab1,mac=52:54:00:7c:03:02" in argv
    append = argv[argv.index("-append") + 1].split()
    assert [a for a in append if a.startswith("tcplab.lab=")] == [
        "tcplab.lab=52:54:00:7c:02:02,198.18.0.1/24", "tcplab.lab=52:54:00:7c:03:02,198.18.1.1/24"]
    assert argv[argv.index("-m") + 1] == "512" and argv[argv.index("-smp") + 1] == "1"


def test_vm_sizes_per_role() -> None:
    lab = topology.derive(DEFAULT, 2, "nat")
    assert vm_size(lab.host("server")) == (1024, 2)
    assert vm_size(lab.host("client")) == (1024, 2)
    assert vm_size(lab.router) == (512, 1)
    import dataclasses

    big = dataclasses.replace(lab.router, vm={"memory": 2048})
    assert vm_size(big) == (2048, 1)


@pytest.mark.parametrize("mode", ["nat", "plain"])
def test_vm_plan_pins_forwarding_and_the_routers_table(mode: str) -> None:
    plan = make_plan(RunOptions(scenario="idle", root=ROOT, backend="vm", connections=400,
                                clients=2, router=mode))
    router = plan.host_sysctls["router"]
    assert router["net.ipv4.ip_forward"] == "1"
    if mode == "nat":  # the VM's default table follows its memory: 4,096 entries in 512 MiB
        assert router["net.netfilter.nf_conntrack_max"] == "65536"
    else:
        assert "net.netfilter.nf_conntrack_max" not in router
    assert "net.ipv4.ip_forward" not in plan.host_sysctls["server"]
    assert {c: sum(n for _, n in s) for c, s in plan.client_shards.items()} == {
        "client1": 200, "client2": 200}


def test_without_nat_the_server_is_routed_to_the_client_addresses() -> None:
    """What the vm backend runs in the VMs (the netns backend's commands): routes via the
    router and, only with NAT, the masquerade table. Without it nothing rewrites the
    clients' source addresses, so the server sees each client's own."""
    plain = topology.derive(DEFAULT, 2, "plain")
    assert route_argvs(plain, plain.host("server")) == [
        ["ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1"]]
    for client in plain.of("client"):
        assert route_argvs(plain, client) == [
            ["ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.1"]]
    assert route_argvs(plain, plain.router) == []
    assert [h.name for h in plain.hosts if h.nat] == []
    nat = topology.derive(DEFAULT, 2, "nat")
    assert [h.name for h in nat.hosts if h.nat] == ["router"]
    assert "ip daddr 198.18.1.0/24 masquerade" in nat_ruleset(nat)


def test_the_routers_own_kernel_cost() -> None:
    router = {"router": {"conntrack": 400, "entries_per_connection": 1.0}}
    kernels = {
        "server": {"hosts": ["server"], "per_connection_bytes": {
            "by_cache": [{"bytes": 1_600_000}], "conntrack": 0.0}},
        "router": {"hosts": ["router"], "per_connection_bytes": {
            "by_cache": [{"bytes": 102_400}, {"bytes": 51_200}, {"bytes": 4_000}],
            "conntrack": 384.0}}}
    own_kernel_cost(router, kernels, 400)
    assert router["router"]["own_kernel"] is True
    assert router["router"]["kernel_bytes_per_connection"] == 394.0
    assert router["router"]["kernel_conntrack_per_connection"] == 384.0


# -- the switch, for real ------------------------------------------------------------------

def _frame(dst: str, src: str, payload: bytes) -> bytes:
    eth = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"
    body = eth + payload
    return struct.pack(">I", len(body)) + body


def _recv_frames(sock, want: int, timeout: float = 3.0) -> list[bytes]:
    sock.settimeout(0.2)
    buf, frames, deadline = b"", [], time.monotonic() + timeout
    while len(frames) < want and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        buf += data
        while len(buf) >= 4 and len(buf) - 4 >= struct.unpack(">I", buf[:4])[0]:
            size = struct.unpack(">I", buf[:4])[0]
            frames.append(buf[4:4 + size])
            buf = buf[4 + size:]
    return frames


def test_the_switch_floods_then_learns(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "lab0.sock"
    proc = subprocess.Popen([sys.executable, hub.__file__, str(path), "run-x"])
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        members = []
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            members.append(s)
        a, b, c = members
        time.sleep(0.2)
        mac_a, mac_b = "52:54:00:7c:02:03", "52:54:00:7c:02:04"
        broadcast = _frame("ff:ff:ff:ff:ff:ff", mac_a, b"who-has")
        a.sendall(broadcast[:7])  # a frame split over two writes arrives whole
        time.sleep(0.05)
        a.sendall(broadcast[7:])
        assert _recv_frames(b, 1) == [broadcast[4:]]
        assert _recv_frames(c, 1) == [broadcast[4:]]
        reply = _frame(mac_a, mac_b, b"is-at")
        b.sendall(reply)  # a's MAC is known now: to a only
        assert _recv_frames(a, 1) == [reply[4:]]
        assert _recv_frames(c, 1, timeout=0.5) == []
        for s in members:
            s.close()
        path.unlink()  # the run's directory goes: the switch goes with it
        proc.wait(timeout=5)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_report_of_a_vm_topology_shows_the_routers_own_kernel() -> None:
    """A captured run (vm, kernel 6.1, 2 client VMs x 200 through a NAT router VM)."""
    import gzip
    import json

    from orchestrator.report.html import per_side
    from orchestrator.report.text import render
    from orchestrator.results.model import Result

    data = json.loads(gzip.open(ROOT / "tests/data/topology/nat-vm-result.json.gz").read())
    result = Result.from_dict(data)
    text = render(result)
    assert "client2 198.18.0.4 ─┘── 198.18.0.1 [router: NAT] 198.18.1.1 ─── 198.18.1.2 server" \
        in text
    assert ("established   router (NAT)                  401             1.000"
            "                 384                             436") in text
    assert "Each VM is its own kernel: the per-host slab figures are exact for each host" in text
    assert "The slab counters are machine-wide" not in text
    sides = per_side(result)
    assert sides is not None
    assert [(r["label"], r["role"]) for r in sides["rows"]] == [
        ("server", "server"), ("router", "router"), ("client1", "client"),
        ("client2", "client")]
    # the client VMs' kernels add up to the client side, beside the server's
    totals = result.side_totals(result.last_measured())
    assert totals == {"server": 3725.1, "client": 3877.4}


def test_a_client_vm_is_classified_against_the_connections_it_holds() -> None:
    """One of two client VMs holds 200 of 400 connections: 190 new filp objects there
    (some still in per-CPU slabs) are 0.95 per connection it holds, socket memory; against
    all 400 they would be 0.475, below TRACKS_MIN, and called drift. Bytes stay per
    connection of the run."""
    from orchestrator.measure.analysis import cache_deltas
    from orchestrator.measure.parsers import SlabLine

    base = {"filp": SlabLine("filp", 1000, 1008, 256, 16, 1, 63, 63)}
    now = {"filp": SlabLine("filp", 1190, 1200, 256, 16, 1, 75, 75)}
    (shared,) = cache_deltas(base, now, 400, {})
    assert shared["category"] == "drift"
    (own,) = cache_deltas(base, now, 400, {}, held=200)
    assert own["category"] == "socket"
    assert own["reason"] == "0.95 objects per connection it holds (200)"
    assert own["objects_per_connection"] == 0.475 and own["bytes_per_connection"] == 121.6


def test_no_ssh_to_vms_gone_with_the_run() -> None:
    """After teardown the VMs are gone, and their TIME_WAIT sockets with them: the vm
    backend does not try to log in to end them (the ssh backend does, ss -K)."""
    from types import SimpleNamespace

    from orchestrator.backends.vm.backend import VmBackend

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("logged in to a stopped VM")

    backend = VmBackend.__new__(VmBackend)
    backend.runners = {"server": SimpleNamespace(run=refuse)}
    backend.end_time_wait()
