"""The result as typed, read-only objects (modelled on pyperf's Run/Benchmark).

``Result.from_dict(data)`` reads a ``tcplab.result/N`` document (upgrading older versions
through ``UPGRADES``); every report, comparison, bundle and summary reads the objects, and
each accessor below (a checkpoint by name, the hosts of a role, a host's sysctl, the last
measured checkpoint...) exists in this one place. The JSON stays the stored form:
``to_dict()`` gives back exactly the document read, keys the model does not name
included (each object keeps the mapping it was read from), so a result written by any
version round-trips unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .transfers import Goodput, Transfer

ROLES = ("server", "client")


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Stat:
    """One skmem figure over a host's sockets: total, median and mean per socket."""

    sum: float = 0
    median: float = 0
    per_socket: float = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Stat:
        return cls(**{k: (d or {}).get(k, 0) for k in ("sum", "median", "per_socket")})


@dataclass(frozen=True)
class OfoHeld:
    """Sockets of a host whose Recv-Q is 0 while their rmem_alloc is not: the bytes
    (skb truesize) they hold can only sit in the out-of-order queue. A lower bound: a
    socket that also has in-order data unread is not counted (docs/analysis.md)."""

    sockets: int = 0
    rmem_alloc: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> OfoHeld | None:
        """None for a result from before the figure was recorded."""
        if not isinstance(d, Mapping):
            return None
        return cls(int(d.get("sockets") or 0), int(d.get("rmem_alloc") or 0))


@dataclass(frozen=True)
class Buffers:
    """Socket buffers of one host at a checkpoint (``ss -m`` skmem, queues summed)."""

    sockets: int
    rmem_alloc: Stat
    wmem_alloc: Stat
    wmem_queued: Stat
    fwd_alloc: Stat
    recv_q: int = 0
    send_q: int = 0
    sockstat_mem_pages: int | None = None
    ofo_inferred: OfoHeld | None = None  # None: not recorded (older results)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Buffers:
        return cls(d.get("sockets") or 0, Stat.from_dict(d.get("rmem_alloc")),
                   Stat.from_dict(d.get("wmem_alloc")), Stat.from_dict(d.get("wmem_queued")),
                   Stat.from_dict(d.get("fwd_alloc")), d.get("recv_q", 0), d.get("send_q", 0),
                   d.get("sockstat_mem_pages"), OfoHeld.from_dict(d.get("ofo_inferred")))

    def queued_per_socket(self) -> float:
        """Bytes waiting in the receive queues, per socket."""
        return self.recv_q / self.sockets if self.sockets else 0.0


@dataclass(frozen=True)
class CacheRow:
    """One slab cache's growth at a checkpoint (``per_connection_bytes.by_cache[]``)."""

    cache: str
    bytes_per_connection: float
    objects_per_connection: float = 0.0
    category: str = "socket"
    attributed: bool = False
    aliases: tuple[str, ...] = ()
    objsize: int | None = None
    objects: int | None = None
    bytes: float | None = None
    page_bytes: float | None = None
    object_bytes_per_connection: float | None = None
    reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CacheRow:
        return cls(d["cache"], d["bytes_per_connection"], d.get("objects_per_connection", 0.0),
                   d.get("category", "socket"), bool(d.get("attributed")),
                   tuple(d.get("aliases") or ()), d.get("objsize"), d.get("objects"),
                   d.get("bytes"), d.get("page_bytes"), d.get("object_bytes_per_connection"),
                   d.get("reason"))


@dataclass(frozen=True)
class PerConnection:
    """Kernel memory per connection at a checkpoint (``per_connection_bytes``)."""

    total: float
    by_cache: tuple[CacheRow, ...] = ()
    objects_total: float | None = None
    drift: float | None = None
    conntrack: float | None = None
    meminfo_slab: float | None = None
    tcp_mem_charged: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerConnection:
        return cls(d["total"], tuple(CacheRow.from_dict(r) for r in d.get("by_cache", [])),
                   d.get("objects_total"), d.get("drift"), d.get("conntrack"),
                   d.get("meminfo_slab"), d.get("tcp_mem_charged"))

    def attributed(self) -> dict[str, float]:
        """Cache -> bytes per connection, for the caches counted as socket memory."""
        return {r.cache: r.bytes_per_connection for r in self.by_cache if r.attributed}

    def of_category(self, category: str) -> dict[str, float]:
        return {r.cache: r.bytes_per_connection for r in self.by_cache if r.category == category}

    def row(self, cache: str) -> CacheRow | None:
        return next((r for r in self.by_cache if r.cache == cache), None)


@dataclass(frozen=True)
class KernelShare:
    """One measured kernel's own figures at a checkpoint (``per_kernel.<label>``)."""

    label: str
    hosts: tuple[str, ...]
    release: str | None
    objsize: dict[str, int]
    per_connection: PerConnection

    @classmethod
    def from_dict(cls, label: str, d: Mapping[str, Any]) -> KernelShare:
        return cls(label, tuple(d.get("hosts", [])), d.get("release"),
                   dict(d.get("objsize") or {}),
                   PerConnection.from_dict(d["per_connection_bytes"]))


@dataclass(frozen=True)
class Checkpoint:
    """A snapshot named in the scenario; the baseline holds no per-connection figures."""

    name: str
    time: float | None = None
    connections: int = 0
    collect_seconds: float | None = None
    states: dict[str, dict[str, int]] = field(default_factory=dict)
    sockstat: dict[str, dict[str, Any]] = field(default_factory=dict)
    buffers: dict[str, Buffers] = field(default_factory=dict)
    memory_per_connection: dict[str, dict[str, float]] = field(default_factory=dict)
    per_kernel: dict[str, KernelShare] = field(default_factory=dict)
    tw_overflow: dict[str, int] = field(default_factory=dict)
    tw_dropped: dict[str, int] = field(default_factory=dict)
    per_connection_bytes: PerConnection | None = None
    #: per host: kernel counters (nstat names: ``TcpExtListenOverflows``) -> change since
    #: the baseline, non-zero only (a counter absent did not move); {} before this existed
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    raw: dict[str, Any] = _raw()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        pcb = d.get("per_connection_bytes")
        return cls(
            d["name"], d.get("time"), d.get("connections") or 0, d.get("collect_seconds"),
            dict(d.get("states") or {}), dict(d.get("sockstat") or {}),
            {h: Buffers.from_dict(b) for h, b in (d.get("buffers") or {}).items()},
            dict(d.get("memory_per_connection") or {}),
            {k: KernelShare.from_dict(k, v) for k, v in (d.get("per_kernel") or {}).items()},
            dict(d.get("tw_overflow") or {}), dict(d.get("tw_dropped") or {}),
            PerConnection.from_dict(pcb) if pcb else None,
            {h: dict(c) for h, c in (d.get("counters") or {}).items()}, dict(d))

    @property
    def measured(self) -> bool:
        return self.per_connection_bytes is not None

    def counter(self, host: str, name: str) -> int:
        """How much a kernel counter of ``host`` moved since the baseline: an nstat name
        (``TcpRetransSegs``) or a bare one (``ListenOverflows``: TcpExt, Tcp, then IpExt)."""
        moved = self.counters.get(host, {})
        for key in (name, f"TcpExt{name}", f"Tcp{name}", f"IpExt{name}"):
            if key in moved:
                return moved[key]
        return 0

    def per_connection(self) -> PerConnection:
        """The per-connection figures; the baseline (nothing measured) raises."""
        if self.per_connection_bytes is None:
            raise InputError(f"checkpoint {self.name}: no per-connection figures (the baseline "
                             "is not measured); pick a measured checkpoint")
        return self.per_connection_bytes

    def sockets_in(self, state: str) -> int:
        """Sockets in an ``ss`` state (``TIME-WAIT``...), summed over the hosts."""
        return sum(s.get(state, 0) for s in self.states.values())

    def live_states(self) -> set[str]:
        """The states some socket is in, LISTEN excluded."""
        return {k for s in self.states.values() for k, v in s.items() if v and k != "LISTEN"}

    def sockstat_mem(self, host: str) -> int | None:
        """TCP ``mem`` pages of /proc/net/sockstat as the host saw it (else its buffers')."""
        stat = self.sockstat.get(host) or next(iter(self.sockstat.values()), None)
        if stat is not None:
            return stat.get("TCP", {}).get("mem")
        buf = self.buffers.get(host)
        return buf.sockstat_mem_pages if buf else None


@dataclass(frozen=True)
class HostInfo:
    """One lab host as the run saw it (``metadata.hosts.<name>``)."""

    name: str
    role: str | None = None
    address: str | None = None
    sysctls_pinned: dict[str, Any] = field(default_factory=dict)
    net_sysctls: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = _raw()

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> HostInfo:
        return cls(name, d.get("role"), d.get("address"), dict(d.get("sysctls_pinned") or {}),
                   dict(d.get("net_sysctls") or {}), dict(d))

    @property
    def where(self) -> str:
        """The backend's handle on it: network namespace or container."""
        return next((self.raw[k] for k in ("netns", "container", "container_id")
                     if self.raw.get(k)), "")


@dataclass(frozen=True)
class KernelInfo:
    release: str | None = None
    version: str | None = None
    machine: str | None = None


@dataclass(frozen=True)
class Metadata:
    """``metadata``: where and how the run was made. Fields the model does not name
    (``vm``, ``image_digest``, ``namespaces``...) are read with ``get``."""

    tool_version: str | None = None
    git_commit: str | None = None
    kernel: KernelInfo = KernelInfo()
    backend: str | None = None
    backend_choice: str | None = None
    image: str | None = None
    hosts: dict[str, HostInfo] = field(default_factory=dict)
    host_sysctls: dict[str, Any] = field(default_factory=dict)
    shards: list[list[int]] = field(default_factory=list)
    workers: dict[str, int] = field(default_factory=dict)
    page_size: int | None = None
    slab_aliases: dict[str, list[str]] = field(default_factory=dict)
    objsize: dict[str, int] = field(default_factory=dict)
    idle_pair_estimate: dict[str, Any] | None = None
    kernels: dict[str, dict[str, Any]] = field(default_factory=dict)
    kernel_label: str | None = None
    raw: dict[str, Any] = _raw()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metadata:
        k = d.get("kernel") or {}
        return cls(d.get("tool_version"), d.get("git_commit"),
                   KernelInfo(k.get("release"), k.get("version"), k.get("machine")),
                   d.get("backend"), d.get("backend_choice"), d.get("image"),
                   {n: HostInfo.from_dict(n, h) for n, h in (d.get("hosts") or {}).items()},
                   dict(d.get("host_sysctls") or {}), list(d.get("shards") or []),
                   dict(d.get("workers") or {}), d.get("page_size"),
                   dict(d.get("slab_aliases") or {}), dict(d.get("objsize") or {}),
                   d.get("idle_pair_estimate"), dict(d.get("kernels") or {}),
                   d.get("kernel_label"), dict(d))

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


@dataclass(frozen=True)
class Timeline:
    """Samples every ``interval`` seconds: ``columns`` (``t``, ``slab_kb``,
    ``<host>.inuse/tw/orphan/mem``) and a mark where each checkpoint began."""

    interval: float = 0.1
    start: float | None = None
    columns: dict[str, list[float]] = field(default_factory=dict)
    marks: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Timeline:
        d = d or {}
        return cls(d.get("interval", 0.1), d.get("start"), dict(d.get("columns") or {}),
                   list(d.get("marks") or []), d.get("source"))

    def mark_time(self, name: str) -> float | None:
        """Seconds since the start at which checkpoint ``name`` began."""
        return next((float(m["t"]) for m in self.marks if m.get("name") == name), None)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str | None = None
    connections: int = 0
    bytes: int = 0
    steps: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scenario:
        return cls(d.get("name", "?"), d.get("description"), d.get("connections") or 0,
                   d.get("bytes") or 0, tuple(d.get("steps") or ()))

    def actions(self) -> list[tuple[str, Any]]:
        """(action, argument) of each step, in order."""
        return [(next(iter(s)), s[next(iter(s))]) for s in self.steps
                if isinstance(s, dict) and s]

    @staticmethod
    def side(arg: Any) -> str | None:
        """The role a step acts on: ``{"side": "client"}`` or plain ``"client"``."""
        if isinstance(arg, dict):
            return arg.get("side")
        return arg if isinstance(arg, str) else None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str | None = None
    sysctls: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        return cls(d.get("name", "?"), d.get("description"), dict(d.get("sysctls") or {}),
                   tuple(d.get("files") or ()))


#: Format history: version N -> the function reading a ``tcplab.result/N`` document into
#: the current shape. Only /1 exists; a /2 adds its entry and /1 gets an upgrade step.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: lambda data: data}


@dataclass(frozen=True)
class Result:
    """One run: ``from_dict`` reads the stored document, ``to_dict`` gives it back."""

    run_id: str
    status: str | None
    scenario: Scenario
    profile: Profile
    lab: dict[str, Any]
    metadata: Metadata
    checkpoints: tuple[Checkpoint, ...]
    schema: str = "tcplab.result/1"
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    ramp: dict[str, Any] | None = None
    slope: dict[str, Any] | None = None
    timeline: Timeline = Timeline()
    transfers: tuple[Transfer, ...] = ()
    raw: dict[str, Any] = _raw()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        raw = copy.deepcopy(dict(data))
        schema = raw.get("schema") or "tcplab.result/1"
        try:
            version = int(str(schema).rsplit("/", 1)[1])
            upgrade = UPGRADES[version]
        except (IndexError, ValueError, KeyError):
            raise InputError(f"result {raw.get('run_id', '?')}: schema {schema!r} is not one "
                             f"this tcplab reads ({', '.join(f'/{v}' for v in UPGRADES)})") from None
        d = upgrade(copy.deepcopy(raw))
        return cls(d.get("run_id") or "?", d.get("status"),
                   Scenario.from_dict(d.get("scenario") or {}),
                   Profile.from_dict(d.get("profile") or {}), dict(d.get("lab") or {}),
                   Metadata.from_dict(d.get("metadata") or {}),
                   tuple(Checkpoint.from_dict(c) for c in d.get("checkpoints") or ()),
                   schema, d.get("error"), d.get("started"), d.get("finished"), d.get("ramp"),
                   d.get("slope"), Timeline.from_dict(d.get("timeline")),
                   tuple(Transfer.from_dict(t) for t in d.get("transfers") or ()), raw)

    def to_dict(self) -> dict[str, Any]:
        """The document as read (a copy): the stored JSON, unchanged."""
        return copy.deepcopy(self.raw)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, name: str) -> Checkpoint | None:
        return next((c for c in self.checkpoints if c.name == name), None)

    def measured(self) -> list[Checkpoint]:
        """The checkpoints with per-connection figures (all but the baseline)."""
        return [c for c in self.checkpoints if c.measured]

    def last_measured(self) -> Checkpoint | None:
        """The last checkpoint with per-connection figures and connections."""
        cps = [c for c in self.checkpoints if c.measured and c.connections]
        return cps[-1] if cps else None

    def before(self, cp: Checkpoint) -> Checkpoint | None:
        """The checkpoint taken just before ``cp``."""
        i = next(i for i, c in enumerate(self.checkpoints) if c.name == cp.name)
        return self.checkpoints[i - 1] if i > 0 else None

    # -- bytes moved ----------------------------------------------------------------------
    def goodput(self, step: int | None = None) -> Goodput | None:
        """Goodput of the transfer read at scenario step ``step`` (its index in the steps),
        or, without one, of the transfer that moved the most bytes; None without transfers.
        ``.goodput`` is bytes/s of all connections, ``.mean`` bytes/s per connection."""
        if step is not None:
            return next((t.total for t in self.transfers if t.step == step), None)
        return max((t.total for t in self.transfers), key=lambda g: g.bytes, default=None)

    # -- hosts and roles ------------------------------------------------------------------
    def hosts_by_role(self) -> dict[str, list[str]]:
        """Role -> the host names playing it (several clients, a router...), from the
        metadata, else the lab file."""
        sources = [{n: h.role for n, h in self.metadata.hosts.items()},
                   {n: (h or {}).get("role") for n, h in (self.lab.get("hosts") or {}).items()}]
        out: dict[str, list[str]] = {}
        for source in sources:
            for name, role in source.items():
                if role and name not in out.setdefault(role, []):
                    out[role].append(name)
        return out

    def host(self, role: str) -> str | None:
        """The one host playing ``role``. A result without hosts for it (hand-made, older)
        names the host like the role (server, client); two or more raise."""
        names = self.hosts_by_role().get(role, [])
        if len(names) > 1:
            raise InputError(f"result {self.run_id}: {len(names)} hosts play {role} "
                             f"({', '.join(names)}); name the host instead of the role")
        if names:
            return names[0]
        return role if role in ROLES else None

    def role_of(self, host: str) -> str | None:
        return self.metadata.hosts[host].role if host in self.metadata.hosts else None

    def sysctl(self, host: str, key: str) -> Any:
        """A sysctl of ``host``: as read back during the run, else as pinned, else None."""
        info = self.metadata.hosts.get(host, HostInfo(host))
        return info.net_sysctls.get(key) or info.sysctls_pinned.get(key) or None

    def sysctl_ints(self, host: str, key: str) -> list[int] | None:
        """A sysctl of integers (``net.ipv4.tcp_rmem``: min default max), or None."""
        value = self.sysctl(host, key)
        try:
            return [int(p) for p in str(value).split()] if value else None
        except ValueError:
            return None

    def flow(self) -> tuple[str | None, str | None]:
        """(sender host, receiver host) of the scenario's first send step, else (None, None)."""
        for action, arg in self.scenario.actions():
            side = Scenario.side(arg) if action == "send" else None
            if side:
                other = "client" if side == "server" else "server"
                return self.host(side), self.host(other)
        return None, None

    def side_totals(self, cp: Checkpoint) -> dict[str, float | None]:
        """Per role: bytes per connection of the kernel that role ran on alone (per_kernel:
        VMs, remote hosts), None where no kernel held that role's host only. Several
        hosts of a role (client VMs) each hold their share: their kernels' totals add up."""
        out: dict[str, float | None] = dict.fromkeys(ROLES)
        for share in cp.per_kernel.values():
            role = self.role_of(share.hosts[0]) if len(share.hosts) == 1 else None
            if role in out:
                out[role] = round((out[role] or 0.0) + share.per_connection.total, 1)
        return out
