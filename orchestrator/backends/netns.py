"""netns backend: each lab host is a network namespace; a veth pair joins them.

A network of more than two hosts (several clients) is a bridge in a namespace of its own
(a switch), a veth from each host to it. A router is a namespace with an interface on
each network (eth0 the clients', eth1 the server's); the other hosts get a route via it.

Needs only root and iproute2. Names carry a short id of the run, and every namespace
and link is journalled before it is created, so cleanup never guesses by pattern.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from .. import resources
from ..errors import InputError, RunError
from ..journal import LOCAL_HANDLERS
from ..runner import LocalRunner, Runner
from .base import Backend, LabHost
from .common import Member, lab_networks, nat_ruleset, object_name, route_argvs, short_id

#: nftables rule for scenario block_acks: drop the host's outgoing pure ACKs, so the
#: peer's handshakes stay half-open (SYN-RECV). Loaded in the host's own network
#: namespace, it goes away with it.
ACK_DROP_RULESET = ("table inet tcplab {\n chain out {\n  type filter hook output priority 0;\n"
                    "  tcp flags & (syn | ack | fin | rst) == ack drop\n }\n}\n")


#: Every lab interface gets a packet queue (LAB_QDISC_ARGV, in its namespace). A veth
#: has none ("noqueue"): a packet that the receiving CPU's backlog cannot take (host-wide
#: net.core.netdev_max_backlog, 1,000) fails at transmit. For a SYN-ACK retransmission the
#: kernel then drops the half-open connection, and the 1 s retransmission timers of a
#: ramp fire in batches (timer wheel buckets): 3-5% of 10,000 half-open connections
#: vanished at the first retransmission. With a queue, a burst waits in it; a real NIC
#: has one too.
LAB_QDISC = "pfifo limit 65536"
LAB_QDISC_ARGV = ["tc", "qdisc", "add", "dev", "eth0", "root", *LAB_QDISC.split()]


def qdisc_argv(dev: str) -> list[str]:
    return ["tc", "qdisc", "add", "dev", dev, "root", *LAB_QDISC.split()]


class NetnsBackend(Backend):
    name = "netns"

    def __init__(self, *args: Any, runner_factory: Callable[..., Runner] = LocalRunner,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Makes every runner on this machine: ``runner_factory(host, prefix)``, for the
        #: ``ip`` commands and each namespace's commands. Unit tests pass a recording fake.
        self.runner_factory = runner_factory

    def _ip(self, *args: str) -> None:
        result = self.runner_factory("local").run(["ip", *args], check=False)
        if not result.ok:
            raise RunError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise InputError("the netns backend needs root (network namespaces, /proc/slabinfo): "
                             "run as root, e.g. sudo make lab")
        if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
            raise InputError("iproute2 (`ip`) is missing: apt-get install iproute2")

    def namespace(self, host_name: str) -> str:
        return object_name(self.run_id, host_name)

    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        for spec in self.lab.hosts:
            ns = self.namespace(spec.name)
            self.journal.record("netns", name=ns)
            self._ip("netns", "add", ns)
            runner = self.runner_factory(spec.name, ["ip", "netns", "exec", ns])
            self.hosts[spec.name] = LabHost(spec, runner, info={"netns": ns})
        for i, (net, members) in enumerate(lab_networks(self.lab)):
            self._link(i, net, members)
        for name, host in self.hosts.items():
            host.sysctls = self.apply_sysctls(host, sysctls.get(name, {}))
        for host in self.hosts.values():
            for argv in route_argvs(self.lab, host.spec):
                host.runner.run(argv)
            if host.spec.nat:
                host.runner.run(["nft", "-f", "-"], stdin=nat_ruleset(self.lab))
        return self.hosts

    def _link(self, index: int, net: str, members: list[Member]) -> None:
        """One lab network: a veth pair between its two hosts, or with more, a bridge in a
        namespace of its own (a switch) and a veth from each host to it. Each end is
        moved into its host, renamed to its interface name, addressed, given a queue."""
        sid = short_id(self.run_id)
        if len(members) == 2 and not self.lab.router:  # the two-host lab, as it always was
            ends = [f"tl{sid}s", f"tl{sid}c"]
            self.journal.record("link", name=ends[0])
            self._ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        elif len(members) == 2:
            ends = [f"tl{sid}{index}a", f"tl{sid}{index}b"]
            self.journal.record("link", name=ends[0])
            self._ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        else:
            switch = self.namespace(f"switch{index}")
            self.journal.record("netns", name=switch)
            self._ip("netns", "add", switch)
            self._ip("-n", switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", switch, "link", "set", "br0", "up")
            ends = []
            for j in range(len(members)):
                end, port = f"tl{sid}{index}{j}", f"tl{sid}{index}{j}p"
                self.journal.record("link", name=end)
                self._ip("link", "add", end, "type", "veth", "peer", "name", port)
                self._ip("link", "set", port, "netns", switch)
                self._ip("-n", switch, "link", "set", port, "master", "br0")
                self._ip("-n", switch, "link", "set", port, "up")
                ends.append(end)
        prefix = ipaddress.ip_network(net).prefixlen
        prefix6 = ipaddress.ip_network(self.lab.subnet6).prefixlen
        for (spec, address, dev), end in zip(members, ends, strict=True):
            ns = self.namespace(spec.name)
            self._ip("link", "set", end, "netns", ns)
            self._ip("-n", ns, "link", "set", end, "name", dev)
            self._ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", dev)
            if spec.role != "router":  # IPv6 stays on one link (no router for it yet)
                self._ip("-n", ns, "addr", "add", f"{spec.address6}/{prefix6}", "dev", dev,
                         "nodad")
            self._ip("-n", ns, "link", "set", dev, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self.hosts[spec.name].runner.run(qdisc_argv(dev))
            self.hosts[spec.name].info["qdisc"] = LAB_QDISC

    def block_final_acks(self, host: LabHost) -> None:
        """An nftables rule in the host's own namespace dropping outgoing pure ACKs.

        Goes away with the namespace; nothing outside the lab is touched.
        """
        host.runner.run(["nft", "-f", "-"], stdin=ACK_DROP_RULESET)

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        return dict(LOCAL_HANDLERS)

    def side_command(self, host: LabHost) -> list[str]:
        # One program (orchestrator/resources.py), written into the run's directory: it
        # goes with the journal. The run id on the command line names the processes of
        # this run (ps, tests).
        program = self.journal.dir / "side.py"
        if not program.exists():
            program.write_text(resources.side_program())
        return ["python3", str(program), "--run", self.run_id]

    def metadata(self) -> dict:
        return {"backend": self.name, "image": None,
                "namespaces": {h.name: h.info["netns"] for h in self.hosts.values()}}
