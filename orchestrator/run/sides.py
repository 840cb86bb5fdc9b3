"""The side processes of a run: one per lab host whose role runs the side script.

Each side (scenarios/side.py) is spoken to in JSON lines over its channel: a config line,
a ``hello``, then one operation at a time, answered by any number of ``progress`` lines
and one ``ok`` reply. A side silent for ``stall`` seconds fails the run, naming its host.
Hosts are addressed by name; a step addresses a role and goes to every host of it. Roles
without a side script (a future ``router``) simply have no channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import faults
from ..backends import Backend, LabHost
from ..errors import LabError, RunError
from ..measure.kernel import MeasuredKernel
from ..measure.timeline import SAMPLE_INTERVAL, merge_side_timelines
from ..plan import Plan
from ..runner import LineChannel
from ..ui import Ticker

#: Roles whose hosts run the side script, in start order.
SIDE_ROLES = ("server", "client")
#: Whose address a side of each role is given as its peer.
PEER_ROLE = {"server": "client", "client": "server"}


#: Seconds a stalled side gets to exit before it is killed (a live one gets 10).
STALLED_GRACE_S = 0.5


class Sides:
    """The side processes of a run, by host name."""

    def __init__(self, channels: dict[str, LineChannel], roles: dict[str, str],
                 stall: float) -> None:
        self.channels = channels  # by host name
        self.roles = roles  # host name -> role
        self.stall = stall
        #: by host: our clock minus the side's, the smallest over its replies (each carries
        #: the side's clock when sent): off by the quickest reply's latency
        self.offsets: dict[str, float] = {}
        self.prepared: dict[str, int] = {}  # workers per host, once prepared
        #: by host: our clock minus the side's as the backend measured it (ssh: round
        #: trips with a bound); preferred to ``offsets`` for the timeline
        self.measured: dict[str, float] = {}
        #: hosts whose side stopped answering: not waited for at close (a stalled side
        #: does not read its stdin, so the polite exit would only cost its full timeout)
        self.stalled: set[str] = set()

    def of(self, role: str) -> list[str]:
        """The hosts of a role that run a side."""
        return [h for h in self.channels if self.roles.get(h) == role]

    def label(self, host: str) -> str:
        """How messages and the result name a side: its role while the role has one host."""
        role = self.roles.get(host, host)
        return role if len(self.of(role)) <= 1 else host

    def send(self, host: str, msg: dict) -> None:
        self.channels[host].send(msg)

    def send_role(self, role: str, msg: dict) -> None:
        for host in self.of(role):
            self.send(host, msg)

    def wait(self, hosts: list[str], op: str, ticker: Ticker | None = None,
             progress_role: str | None = None) -> dict[str, dict]:
        """Wait for each host's reply to ``op``; a side silent for ``stall`` s fails the run.

        Progress lines of the hosts of ``progress_role`` advance ``ticker`` (each line
        carries the connections done since the last one, so several hosts add up).
        """
        replies: dict[str, dict] = {}
        last = {h: time.monotonic() for h in hosts}
        while len(replies) < len(hosts):
            for host in hosts:
                if host in replies:
                    continue
                channel = self.channels[host]
                msg = channel.receive(timeout=0.05)
                role = self.roles.get(host, host)
                if msg is None:
                    if time.monotonic() - last[host] > self.stall:
                        self.stalled.add(host)
                        raise RunError(f"{channel.host} ({role}): no answer to {op} "
                                       f"for {self.stall:.0f} s; the side stalled")
                    continue
                last[host] = time.monotonic()
                if "progress" in msg:
                    if ticker is not None and role == progress_role:
                        ticker.advance(int(msg["progress"]))
                    continue
                if not msg.get("ok"):
                    raise RunError(f"{channel.host} ({role}): {op} failed: {msg.get('error')}")
                replies[host] = msg
                if isinstance(msg.get("clock"), (int, float)):
                    offset = time.time() - msg["clock"]
                    self.offsets[host] = min(offset, self.offsets.get(host, offset))
        return replies

    def do(self, hosts: list[str], msg: dict, **kw: Any) -> dict[str, dict]:
        for host in hosts:
            self.send(host, msg)
        return self.wait(hosts, msg["op"], **kw)

    def do_role(self, role: str, msg: dict, **kw: Any) -> dict[str, dict]:
        return self.do(self.of(role), msg, **kw)

    def everyone(self) -> list[str]:
        return list(self.channels)

    def hello(self) -> None:
        """Each side's first line: it started (else its error, as it printed it)."""
        for host, channel in self.channels.items():
            hello = channel.receive(timeout=self.stall)
            if not hello or "hello" not in hello:
                raise RunError(f"{host}: side script did not start: {hello}")

    def prepare(self) -> dict[str, int]:
        """Open listeners and fork workers; returns each host's worker count."""
        replies = self.do(self.everyone(), {"op": "prepare"})
        self.prepared = {h: p["workers"] for h, p in replies.items()}
        return self.prepared

    def workers(self, role: str) -> int:
        """Worker processes of every side of a role."""
        return sum(self.prepared.get(h, 0) for h in self.of(role))

    def timeline(self, local: dict[str, Any], kernel: MeasuredKernel,
                 note: Callable[[str], None]) -> dict[str, Any]:
        """The run's timeline from the samples each side took of its own kernel (VMs,
        remote hosts), shifted onto this machine's clock; ``local`` if they cannot be read."""
        try:
            replies = self.do(self.everyone(), {"op": "timeline"})
        except LabError as exc:
            note(f"timeline: the sides' samples could not be read ({exc})")
            return local
        return merge_side_timelines(local, replies, {**self.offsets, **self.measured},
                                    {k.label: k.hosts for k in kernel.parts()})

    def sockstat_paths(self, backend: Backend, hosts: dict[str, LabHost]) -> dict[str, Path]:
        """For the timeline sampler: /proc/<pid>/net/sockstat of each side process that
        runs on this machine (its host's network namespace; none for remote hosts)."""
        paths = {}
        for name, channel in self.channels.items():
            pid = backend.netns_pid(hosts[name], channel)
            if pid:
                paths[name] = Path(f"/proc/{pid}/net/sockstat")
        return paths

    def check_alive(self, during: str) -> None:
        """Fail the run when a side has gone since its last answer (see ended_error)."""
        for channel in self.channels.values():
            problem = channel.ended_error()
            if problem:
                raise RunError(f"{problem}; {during} discarded")

    def close(self) -> None:
        for host, channel in self.channels.items():
            try:
                channel.send({"op": "exit"})
            except LabError:
                pass
            channel.close(STALLED_GRACE_S if host in self.stalled else 10.0)


def side_hosts(hosts: dict[str, LabHost]) -> list[LabHost]:
    """The hosts that run a side, servers first (their listeners before any connect)."""
    return [h for role in SIDE_ROLES for h in hosts.values() if h.role == role]


def start_sides(backend: Backend, hosts: dict[str, LabHost], plan: Plan,
                sample: bool) -> Sides:
    """Start the side script on every side host and send it its config line: its role,
    its address and its peer's, the port shards, and the plan's options. ``sample``: the
    side samples its own kernel for the timeline (VMs, remote hosts)."""
    opts = plan.options
    six = opts.family == "ipv6"
    config = {"stall": opts.stall, "per_worker": opts.per_worker,
              "server_model": opts.server_model, "sample": SAMPLE_INTERVAL if sample else 0}

    def address(host: LabHost) -> str:
        return host.spec.address6 if six else host.address

    channels: dict[str, LineChannel] = {}
    starting = side_hosts(hosts)
    for host in starting:
        # a client's peer is the server; the server's, the first client (with several
        # clients, or behind a NAT router, only what its connections come from tells)
        peer = next(h for h in starting if h.role == PEER_ROLE[host.role])
        channel = backend.start_side(host)
        channels[host.name] = channel
        channel.send({"role": host.role, "address": address(host), "peer": address(peer),
                      "shards": plan.shards_of(host.name),
                      "fault": faults.side_fault(host.role), **config})
    return Sides(channels, {h.name: h.role for h in starting}, opts.stall)
