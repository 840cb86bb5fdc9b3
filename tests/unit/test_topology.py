"""Topologies without running anything: derive, split, render, per-host levels and shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import topology
from orchestrator.backends.common import lab_networks, nat_ruleset, route_argvs
from orchestrator.config import load_lab
from orchestrator.errors import InputError
from orchestrator.run.checkpoint import per_host
from orchestrator.scenario import Expect

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_lab(ROOT / "lab" / "default.yaml")


def test_derive_four_clients_behind_a_nat_router() -> None:
    lab = topology.derive(DEFAULT, 4, "nat")
    assert [(h.name, h.role, h.address) for h in lab.hosts] == [
        ("server", "server", "198.18.1.2"), ("router", "router", "198.18.0.1"),
        ("client1", "client", "198.18.0.3"), ("client2", "client", "198.18.0.4"),
        ("client3", "client", "198.18.0.5"), ("client4", "client", "198.18.0.6")]
    router = lab.router
    assert router is not None and router.nat and router.server_address == "198.18.1.1"
    assert lab.server_subnet == "198.18.1.0/24"
    # every client keeps the first client's sysctls (its wide port range)
    assert {h.sysctls["net.ipv4.ip_local_port_range"] for h in lab.of("client")} == {"1024 65535"}
    assert topology.router_sysctls(lab) == {"router": {"net.ipv4.ip_forward": "1"}}


def test_derive_without_router_keeps_one_network() -> None:
    lab = topology.derive(DEFAULT, 3, None)
    assert lab.router is None and lab.server_subnet == ""
    assert [h.address for h in lab.hosts] == ["198.18.0.2", "198.18.0.3", "198.18.0.4",
                                              "198.18.0.5"]
    assert topology.derive(DEFAULT, None, None) is DEFAULT


def test_more_clients_than_addresses_is_refused() -> None:
    with pytest.raises(InputError, match="300 clients need 300 addresses and network.subnet "
                       "198.18.0.0/24 .* has 253 left"):
        topology.derive(DEFAULT, 300, "plain")
    assert len(topology.derive(DEFAULT, 253, "plain").of("client")) == 253


def test_split_spreads_connections_evenly_and_adds_up() -> None:
    server, clients = topology.split(10_001, ["a", "b", "c", "d"], 32_256, False, 5000)
    assert server == [[5000, 10_001]]
    assert sorted(sum(n for _, n in s) for s in clients.values()) == [2500, 2500, 2500, 2501]
    # many ports: each port's clients add up to the server's count
    server, clients = topology.split(100_003, ["a", "b", "c"], 10_000, False, 5000)
    for port, count in server:
        assert sum(n for s in clients.values() for p, n in s if p == port) == count
    totals = [sum(n for _, n in s) for s in clients.values()]
    assert max(totals) - min(totals) <= 1 and sum(totals) == 100_003


def test_nat_bounds_a_port_by_the_routers_range() -> None:
    server, _ = topology.split(100_000, ["a", "b", "c", "d"], 32_256, True, 5000)
    assert len(server) == 4  # 32,256 per port at most through one address
    server, _ = topology.split(100_000, ["a", "b", "c", "d"], 32_256, False, 5000)
    assert len(server) == 1
    assert topology.split_summary({"a": [[5000, 3], [5001, 2]]}) == {
        "a": {"connections": 5, "ports": [5000, 5001]}}


def test_render_draws_hosts_addresses_and_links() -> None:
    text = topology.render(topology.derive(DEFAULT, 4, "nat"))
    assert "client3 198.18.0.5 ─┼── 198.18.0.1 [router: NAT] 198.18.1.1 ─── 198.18.1.2 server" \
        in text
    assert "  198.18.0.0/24 (clients' network): client1, client2, client3, client4, router" in text
    assert "  198.18.1.0/24 (server's network): router, server" in text
    assert "198.18.0.2 server" in topology.render(DEFAULT)


def test_networks_routes_and_nat_rules() -> None:
    lab = topology.derive(DEFAULT, 2, "nat")
    nets = lab_networks(lab)
    assert [(n, [(h.name, a, d) for h, a, d in m]) for n, m in nets] == [
        ("198.18.0.0/24", [("client1", "198.18.0.3", "eth0"), ("client2", "198.18.0.4", "eth0"),
                           ("router", "198.18.0.1", "eth0")]),
        ("198.18.1.0/24", [("router", "198.18.1.1", "eth1"), ("server", "198.18.1.2", "eth0")])]
    assert route_argvs(lab, lab.host("server")) == [
        ["ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1"]]
    assert route_argvs(lab, lab.host("client")) == [
        ["ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.1"]]
    assert route_argvs(lab, lab.router) == [] and route_argvs(DEFAULT, DEFAULT.host("client")) == []
    assert "ip daddr 198.18.1.0/24 masquerade" in nat_ruleset(lab)


def test_uneven_clients_are_each_held_to_their_own_share() -> None:
    roles = {"server": "server", "c1": "client", "c2": "client", "router": "router"}
    wanted = per_host(Expect({"server": {"ESTAB": 5}, "client": {"ESTAB": 5}}, {}), roles,
                      {"c1": 3, "c2": 2})
    assert wanted == {"server": {"ESTAB": 5}, "c1": {"ESTAB": 3}, "c2": {"ESTAB": 2}}
    # a key naming a host is that host's own (level checkpoints)
    assert per_host(Expect({"c2": {"ESTAB": 1}}, {}), roles) == {"c2": {"ESTAB": 1}}
    # a host named like its role beside others of it (ssh: client, client2): the role's
    assert per_host(Expect({"client": {"ESTAB": 400}}, {}),
                    {"server": "server", "client": "client", "client2": "client"}) == {
        "client": {"ESTAB": 200}, "client2": {"ESTAB": 200}}


def test_conntrack_extensions_are_not_socket_memory() -> None:
    from orchestrator.measure.analysis import conntrack_extensions

    def row(cache: str, objects: int, category: str) -> dict:
        return {"cache": cache, "objects": objects, "category": category, "attributed":
                category == "socket", "reason": ""}

    # measured through a NAT router, N=10,000: kmalloc-128 +11,581, nf_conntrack +9,877
    rows = [row("TCP", 20_000, "socket"), row("kmalloc-128", 11_581, "socket"),
            row("nf_conntrack", 9_877, "conntrack")]
    conntrack_extensions(rows, 10_000)
    assert [r["category"] for r in rows] == ["socket", "conntrack", "conntrack"]
    assert rows[1]["reason"].startswith("conntrack extensions (ct->ext): 1.17 objects")
    # no tracking: nothing moves; a cache that also tracks sockets stays socket memory
    plain = [row("kmalloc-128", 11_581, "socket")]
    conntrack_extensions(plain, 10_000)
    assert plain[0]["category"] == "socket"
    both = [row("kmalloc-128", 14_000, "socket"), row("nf_conntrack", 9_877, "conntrack")]
    conntrack_extensions(both, 5_000)
    assert both[0]["category"] == "socket"
    # docker: every container tracks (nf_conntrack +5 per connection), only the router's
    # NAT'd entries carry an extension: matched against the router's own count
    docker = [row("kmalloc-128", 11_512, "socket"), row("nf_conntrack", 49_876, "conntrack")]
    conntrack_extensions(docker, 10_000)
    assert docker[0]["category"] == "socket"
    conntrack_extensions(docker, 10_000, entries=10_000)
    assert docker[0]["category"] == "conntrack"


def test_tcplab_topology_prints_the_drawing(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    assert main(["topology", "--clients", "2", "--router", "plain"]) == 0
    out = capsys.readouterr().out
    assert "client1 198.18.0.3 ─┐" in out
    assert "198.18.0.1 [router: forwarding] 198.18.1.1 ─── 198.18.1.2 server" in out
    assert "  router     router  198.18.0.1, 198.18.1.1  forwarding on, no NAT" in out


def test_report_shows_topology_split_and_router_cost() -> None:
    """A captured run (docker, 4 clients x 2,500 through a NAT router, N=10,000)."""
    import gzip
    import json

    from orchestrator.report.text import render
    from orchestrator.results.model import Result

    data = json.loads(gzip.open(ROOT / "tests/data/topology/nat-docker-result.json.gz").read())
    text = render(Result.from_dict(data))
    assert "client3 198.18.0.5 ─┼── 198.18.0.1 [router: NAT] 198.18.1.1 ─── 198.18.1.2 server" \
        in text
    assert "client4           2,500            5000" in text
    assert "established   router (NAT)               10,000             1.000                 384" \
        in text
    # the NAT extensions are conntrack, not socket memory: the ends cost what two hosts do
    cp = data["checkpoints"][1]
    assert 7_800 < cp["per_connection_bytes"]["total"] < 8_000
    ext = next(r for r in cp["per_connection_bytes"]["by_cache"] if r["cache"] == "kmalloc-128")
    assert ext["category"] == "conntrack"


def test_a_derived_topology_round_trips_through_a_lab_file(tmp_path: Path) -> None:
    """The result's lab (what a bundle carries as its lab file) loads back as it was."""
    import yaml

    lab = topology.derive(DEFAULT, 3, "nat")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab.to_dict()))
    again = load_lab(path)
    assert again.to_dict() == lab.to_dict()
    assert again.router is not None and again.router.nat and len(again.of("client")) == 3
