"""Helpers every backend shares: names, the run's SSH key, fd limits, peers, runners.

One definition each, so the backends mirror each other instead of repeating each other.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import HostSpec, Lab
from ..errors import RunError
from .base import LabHost

KEY_NAME = "id_ed25519"


def short_id(run_id: str) -> str:
    """Six hex digits naming a run's objects (namespaces, containers, VMs, links)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:6]


def object_name(run_id: str, host: str = "") -> str:
    """``tcplab-<short id>-<host>`` (``tcplab-<short id>`` without a host): the name of
    what a backend makes for a run's host (namespace, container, VM) or for the run."""
    base = f"tcplab-{short_id(run_id)}"
    return f"{base}-{host}" if host else base


def make_key(directory: Path, run_id: str) -> Path:
    """An ed25519 key pair for this run only, in ``directory`` (the run's journal
    directory), both files 0600. It goes away with the directory when the run's undo
    succeeds. Returns the private key's path."""
    key = directory / KEY_NAME
    proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                           f"tcplab-{run_id}", "-f", str(key)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RunError(f"ssh-keygen failed: {proc.stderr.strip()[-200:]}; "
                       "apt-get install openssh-client")
    for path in (key, key.with_suffix(".pub")):
        path.chmod(0o600)
    return key


def read_fd_limits(host: LabHost) -> str:
    """The open-file limits (soft, hard) a side starts with on the host, kept in
    ``host.info["nofile"]`` as "soft hard"; the side shards over workers when it must."""
    limits = host.runner.run(["sh", "-c", "ulimit -Sn; ulimit -Hn"], timeout=30).stdout
    host.info["nofile"] = " ".join(limits.split())
    return host.info["nofile"]


def peer_address(lab: Lab, host: str) -> str:
    """The lab address of the other host (a two-host lab: server and client)."""
    return next(h.address for h in lab.hosts if h.name != host)


def peer_addresses(lab: Lab, host: str) -> list[str]:
    """The lab addresses of every other host (a server's peers: each client's address)."""
    return [h.address for h in lab.hosts if h.name != host]


#: A member of a lab network: the host, its address there, its interface name.
Member = tuple[HostSpec, str, str]

def nat_ruleset(lab: Lab) -> str:
    """nat: true on the router: masquerade what it forwards to the server's network, in the
    router's own namespace, so it holds one conntrack entry per connection as a NAT
    gateway does. Matched by destination, not interface name (Docker names interfaces in
    its own order). Goes away with the namespace (container)."""
    return ("table ip tcplab_nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
            f"  ip daddr {lab.server_subnet} masquerade\n }}\n}}\n")


def lab_networks(lab: Lab) -> list[tuple[str, list[Member]]]:
    """The lab's networks (subnet, members): one without a router; with one, the clients'
    (router on eth0) and the server's (router on eth1)."""
    server, clients, router = lab.host("server"), lab.of("client"), lab.router
    if router is None:
        return [(lab.subnet, [(h, h.address, "eth0") for h in (server, *clients)])]
    return [(lab.subnet, [*((c, c.address, "eth0") for c in clients),
                          (router, router.address, "eth0")]),
            (lab.server_subnet, [(router, router.server_address, "eth1"),
                                 (server, server.address, "eth0")])]


def route_argvs(lab: Lab, spec: HostSpec) -> list[list[str]]:
    """The route a host needs to the other network, via the router (none without one)."""
    router = lab.router
    if router is None or spec.role == "router":
        return []
    if spec.role == "server":
        return [["ip", "route", "add", lab.subnet, "via", router.server_address]]
    return [["ip", "route", "add", lab.server_subnet, "via", router.address]]


def close_runners(runners: Iterable[Any], log: Callable[[str], None] | None = None) -> None:
    """Close every runner's connection, best effort: a failure is logged (when a log is
    given) and the next runner is closed all the same."""
    for runner in runners:
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001 - the hosts go away next anyway
            if log is not None:
                log(f"cleanup: closing SSH to {runner.host}: {exc}")
