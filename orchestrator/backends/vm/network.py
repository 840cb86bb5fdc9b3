"""The lab networks of a vm run: which VM gets which lab interface on which link.

The same networks as on netns and docker (``common.lab_networks``): one without a
router; with one, the clients' (router on its first lab interface) and the server's
(router on its second). How each is carried, all in the run's directory, nothing on a
network of this machine:

* two members (the two-host lab, the server's network behind a router, one client and
  the router): a point-to-point link, a Unix stream socket one VM's qemu listens on and
  the other's connects to (``-netdev stream``), as the two-host lab always was;
* more (several clients): a switch process of tcplab's own (``hub.py``) listening on
  the network's socket, each member's qemu connecting to it.

The VMs start in :func:`start_order` (server, router, clients): the listening member of
a link is the one that starts first, so a connecting qemu finds the socket already there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ...config import HostSpec, Lab
from ..common import lab_networks
from .qemu import mac

ROLE_ORDER = {"server": 0, "router": 1, "client": 2}


@dataclass(frozen=True)
class LabNic:
    """One lab interface of a VM: its MAC, its address/prefix, the socket of its link, and
    whether this VM's qemu listens on that socket (else it connects)."""

    mac: str
    address: str
    socket: Path
    listen: bool


@dataclass(frozen=True)
class LabLinks:
    nics: dict[str, list[LabNic]]  # per host, in interface order
    hubs: list[Path]  # sockets a hub process serves: networks of more than two members


def start_order(lab: Lab) -> list[HostSpec]:
    """Server, router, clients (in the lab file's order within a role)."""
    return sorted(lab.hosts, key=lambda h: ROLE_ORDER.get(h.role, 3))


def plan_links(lab: Lab, workdir: Path) -> LabLinks:
    """Every VM's lab interfaces and the hubs the networks need."""
    order = start_order(lab)
    index = {h.name: i for i, h in enumerate(order, 1)}
    nics: dict[str, list[LabNic]] = {h.name: [] for h in order}
    hubs: list[Path] = []
    networks = lab_networks(lab)
    for n, (net, members) in enumerate(networks):
        prefix = ipaddress.ip_network(net).prefixlen
        path = workdir / ("lab.sock" if len(networks) == 1 else f"lab{n}.sock")
        first = min(members, key=lambda m: index[m[0].name])[0].name
        if len(members) > 2:
            hubs.append(path)
        for spec, address, _dev in members:
            own = nics[spec.name]
            own.append(LabNic(mac(index[spec.name], 2 + len(own)), f"{address}/{prefix}", path,
                              listen=len(members) == 2 and spec.name == first))
    return LabLinks(nics, hubs)
