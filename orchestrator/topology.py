"""Topologies: many clients, one server, an optional router (with or without NAT).

Three jobs, all pure (nothing is created here):

* :func:`derive` turns the short forms of the command line (``--clients 4 --router nat``,
  ``make lab CLIENTS=4 ROUTER=nat``) into a full lab from a lab file's server and first
  client, so any scenario runs unchanged on any topology;
* :func:`split` spreads the connections over the clients (each its own address, so each
  has its own ephemeral ports towards every server port) and gives the server the sum;
* :func:`render` draws a lab as text: hosts, addresses, links (``tcplab topology``, the
  report).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from .config import LAB_NETWORK, HostSpec, Lab
from .errors import InputError

ROUTER_MODES = ("none", "plain", "nat")
#: A NAT router masquerades every client to its one address: its own port range towards
#: each server port (1024-65535 for masquerade), used at most half as the clients' are.
NAT_PORTS = 65535 - 1024 + 1
#: The router's sysctl that makes it forward: pinned in its own namespace/container only.
FORWARDING = {"net.ipv4.ip_forward": "1"}


def derive(lab: Lab, clients: int | None, router: str | None) -> Lab:
    """The lab with ``clients`` client hosts and a router of kind ``router`` (none, plain,
    nat); either None keeps what the lab file says. Clients are named client1..clientN
    (client when there is one) and take the first client's sysctls and the next free
    addresses of network.subnet from the first client's on; with a router the server moves
    to network.server_subnet (the next network of the same size unless the file gives one)
    at the same host number, and the router takes .1 of each network."""
    if clients is None and router is None:
        return lab
    if clients is not None and clients < 1:
        raise InputError(f"--clients/CLIENTS: expected a number of clients >= 1, got {clients}")
    if router is not None and router not in ROUTER_MODES:
        raise InputError(f"--router/ROUTER: expected one of {', '.join(ROUTER_MODES)}, "
                         f"got {router!r}")
    old_router = lab.router
    mode = router or ("none" if old_router is None else "nat" if old_router.nat else "plain")
    count = clients if clients is not None else len(lab.of("client"))
    server, first = lab.host("server"), lab.host("client")
    subnet = ipaddress.ip_network(lab.subnet)
    hosts: list[HostSpec] = []
    used: set[Any] = set()
    server_subnet = ""
    if mode == "none":
        srv = dataclasses.replace(server, address=_same_host(server.address, subnet))
        used.add(ipaddress.ip_address(srv.address))
    else:
        server_net = _server_network(lab, subnet)
        server_subnet = str(server_net)
        gateway, server_gateway = next(subnet.hosts()), next(server_net.hosts())
        srv = dataclasses.replace(server, address=_same_host(server.address, server_net))
        name = old_router.name if old_router else "router"
        hosts.append(HostSpec(name, "router", str(gateway), dict(old_router.sysctls)
                              if old_router else {}, server_address=str(server_gateway),
                              nat=mode == "nat"))
        used.add(gateway)
    hosts.insert(0, srv)
    free = [ip for ip in subnet.hosts() if ip not in used
            and int(ip) >= int(ipaddress.ip_address(first.address))]
    free += [ip for ip in subnet.hosts() if ip not in used and ip not in free]
    if count > len(free):
        raise InputError(
            f"--clients/CLIENTS: {count} clients need {count} addresses and network.subnet "
            f"{subnet} of {lab.path} has {len(free)} left (after the server's and the "
            "router's); use fewer clients or a larger network.subnet in a lab file (--lab)")
    for i in range(count):
        name = first.name if count == 1 else f"client{i + 1}"
        hosts.append(dataclasses.replace(first, name=name, address=str(free[i]), address6=""))
    hosts = [dataclasses.replace(h, address6=_address6(lab, h.address)) for h in hosts]
    return dataclasses.replace(lab, hosts=tuple(hosts), server_subnet=server_subnet)


def _same_host(address: str, net: Any) -> str:
    """The address with the same host number in ``net`` (198.18.0.2 -> 198.18.1.2)."""
    offset = int(ipaddress.ip_address(address)) & int(net.hostmask)
    return str(net.network_address + (offset or 2))


def _server_network(lab: Lab, subnet: Any) -> Any:
    if lab.server_subnet:
        return ipaddress.ip_network(lab.server_subnet)
    following = ipaddress.ip_network(
        f"{subnet.network_address + subnet.num_addresses}/{subnet.prefixlen}")
    if not following.subnet_of(LAB_NETWORK):
        raise InputError(f"--router/ROUTER: the server's network would follow network.subnet "
                         f"{subnet} of {lab.path} and leave 198.18.0.0/15; give "
                         "network.server_subnet in a lab file (--lab)")
    return following


def _address6(lab: Lab, address: str) -> str:
    return str(ipaddress.ip_network(lab.subnet6).network_address
               + int(ipaddress.ip_address(address)) % 65536)


def router_sysctls(lab: Lab) -> dict[str, dict[str, str]]:
    """Per host, what the topology itself pins: forwarding on in the router, nowhere else."""
    router = lab.router
    return {router.name: dict(FORWARDING)} if router else {}


# -- the connections over the clients ------------------------------------------------------

Shards = list[list[int]]


def split(connections: int, clients: list[str], per_port: int, nat: bool,
          base_port: int) -> tuple[Shards, dict[str, Shards]]:
    """(server shards, each client's shards): [[server port, connections], ...].

    Each client has its own address, so towards one server port it has its own ephemeral
    ports: a port carries ``per_port`` per client. Behind a NAT router every client
    leaves with the router's address, which bounds a port at half the router's range.
    Each port's count is spread evenly over the clients (the remainders taken in turn),
    so the clients' totals differ by at most one.
    """
    ports = ports_needed(connections, len(clients), per_port, nat)
    base, extra = divmod(connections, ports)
    server = [[base_port + i, base + (1 if i < extra else 0)] for i in range(ports)]
    mine: dict[str, Shards] = {c: [] for c in clients}
    turn = 0
    for port, count in server:
        share, rest = divmod(count, len(clients))
        for j in range(len(clients)):
            c = clients[(turn + j) % len(clients)]
            n = share + (1 if j < rest else 0)
            if n:
                mine[c].append([port, n])
        turn = (turn + rest) % len(clients)
    return server, mine


def ports_needed(connections: int, clients: int, per_port: int, nat: bool) -> int:
    """Server ports ``split`` uses (integers only: any N is counted without a list)."""
    per_total = per_port * clients
    if nat:
        per_total = min(per_total, NAT_PORTS // 2)
    return max(1, -(-connections // per_total))


def split_summary(client_shards: dict[str, Shards]) -> dict[str, dict[str, Any]]:
    """Per client: how many connections, on which server ports (the result's record)."""
    return {c: {"connections": sum(n for _, n in s), "ports": [p for p, _ in s]}
            for c, s in client_shards.items()}


# -- drawing ---------------------------------------------------------------------------------

def describe(lab: Lab) -> dict[str, Any]:
    """The lab's topology as data: hosts with their addresses, and the links (networks)."""
    router = lab.router
    hosts = {}
    for h in lab.hosts:
        entry: dict[str, Any] = {"role": h.role, "addresses": [h.address]}
        if h.role == "router":
            entry["addresses"].append(h.server_address)
            entry["nat"] = h.nat
        hosts[h.name] = entry
    clients = [h.name for h in lab.of("client")]
    server = lab.host("server").name
    if router is None:
        links = [{"network": lab.subnet, "hosts": [server, *clients]}]
    else:
        links = [{"network": lab.subnet, "side": "clients", "hosts": [*clients, router.name]},
                 {"network": lab.server_subnet, "side": "server", "hosts": [router.name, server]}]
    return {"hosts": hosts, "links": links}


def render(lab: Lab) -> str:
    """The topology as text: a drawing, then every host and link."""
    router = lab.router
    server = lab.host("server")
    clients = lab.of("client")
    width = max(len(f"{c.name} {c.address}") for c in clients)
    if router is None:
        right = f" {server.address} {server.name}"
    else:
        kind = "NAT" if router.nat else "forwarding"
        right = (f" {router.address} [{router.name}: {kind}] {router.server_address}"
                 f" ─── {server.address} {server.name}")
    lines = []
    for i, c in enumerate(clients):
        text = f"{c.name} {c.address}".rjust(width)
        if len(clients) == 1:
            joint = "───"
        else:
            mid = len(clients) // 2
            joint = (" ─┐" if i == 0 else " ─┘" if i == len(clients) - 1
                     else " ─┼" if i == mid else " ─┤")
        mid = len(clients) // 2
        lines.append(text + joint + ("──" + right if i == mid or len(clients) == 1 else ""))
    data = describe(lab)
    lines.append("")
    lines.append("hosts:")
    for name, h in data["hosts"].items():
        extra = ""
        if h["role"] == "router":
            extra = ("  forwarding on; NAT: masquerades the clients to "
                     f"{h['addresses'][1]}" if h["nat"] else "  forwarding on, no NAT")
        lines.append(f"  {name:<10} {h['role']:<7} {', '.join(h['addresses'])}{extra}")
    lines.append("links:")
    for link in data["links"]:
        side = {"clients": " (clients' network)", "server": " (server's network)"}.get(
            link.get("side", ""), "")
        lines.append(f"  {link['network']}{side}: {', '.join(link['hosts'])}")
    return "\n".join(lines) + "\n"
