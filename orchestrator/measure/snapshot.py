"""What one checkpoint read: pure, frozen values (no runner, no backend).

Built by :func:`orchestrator.measure.probes.take`; read by :mod:`.analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .parsers import PAGE_SIZE, SlabLine, SsSummary


@dataclass(frozen=True)
class HostSnapshot:
    """One lab host's socket counters (per network namespace)."""

    sockstat: dict[str, dict[str, int]]
    ss: SsSummary
    memory: dict[str, Any] | None = None  # cgroup accounting, where the backend has it
    conntrack: int | None = None  # a router's conntrack entries (its own namespace)
    #: Tcp/TcpExt/IpExt counters of its namespace, absolute (measure/counters.py); None
    #: where they could not be read
    counters: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sockstat": self.sockstat, "ss": self.ss.to_dict(), "memory": self.memory,
                "conntrack": self.conntrack, "counters": self.counters}


@dataclass(frozen=True)
class KernelSnapshot:
    """One kernel's global counters at a checkpoint, and the lab hosts it runs."""

    label: str
    hosts: list[str]
    slab: dict[str, SlabLine]
    meminfo: dict[str, int]
    release: str | None = None
    aliases: dict[str, list[str]] = field(default_factory=dict)
    page_size: int = PAGE_SIZE  # that kernel's machine's: slabs and sockstat mem count pages


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint: the measured kernel's slab and meminfo, and every host's sockets."""

    name: str
    time: float
    slab: dict[str, SlabLine]
    meminfo: dict[str, int]
    hosts: dict[str, HostSnapshot] = field(default_factory=dict)
    seconds: float = 0.0  # how long collecting took
    # Several measured kernels (VMs, remote machines): each one's own counters, by label.
    # Empty for one kernel; then slab/meminfo above are that kernel's, else their sum.
    kernels: dict[str, KernelSnapshot] = field(default_factory=dict)
    aliases: dict[str, list[str]] | None = None  # SLUB merges of the measured kernel(s)
    page_size: int = PAGE_SIZE  # of the measured kernel's machine (os.sysconf there)
    # Hosts read all at once (ssh): parallel vs serial seconds, each host's moment
    fanout: dict[str, Any] | None = None
