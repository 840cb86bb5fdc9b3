"""Shared fixtures: snapshots built from the real captures in tests/data (see its README.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.measure import parsers
from orchestrator.measure.snapshot import HostSnapshot, Snapshot
from orchestrator.measure.sockets import summarize_ss

# Lab runs take a machine-wide lock (slab counters are global): tests queue for it rather
# than fail when another run measures. Tests of the lock itself set it to 0.
os.environ.setdefault("TCPLAB_LOCK_WAIT", "900")

DATA = Path(__file__).resolve().parent / "data"
K = 2000  # connections in each capture run

# checkpoint -> (slabinfo/meminfo suffix, sockstat suffix, {host: ss capture or None})
# The ss captures keep the first 300 sockets of each state (LISTEN excluded from counts).
# Run 2 (unread-13) has no sockstat at its baseline: run 1's (TCP mem 150 pages) stands in,
# as in the README's "sockstat TCP mem 150 -> 1942 pages".
_CAPTURES = {
    "baseline": ("baseline", "baseline", {"server": None, "client": None}),
    "established": ("established-2000", "established-2000",
                    {"server": "ss-tmni-established.txt",
                     "client": "ss-tmniH-established-client.txt"}),
    "fin_wait2": ("closewait-2000", "closewait-2000",
                  {"server": "ss-tmni-closewait.txt", "client": "ss-tmni-finwait2.txt"}),
    "time_wait": ("timewait-2000", "timewait-2000",
                  {"server": None, "client": "ss-tmni-timewait.txt"}),
    "baseline-unread": ("baseline-unread-13", "baseline", {"server": None, "client": None}),
    "unread": ("unread-13-2000", "unread-13-2000",
               {"server": "ss-tmni-unread-13.txt", "client": None}),
}


def _summary(name: str | None) -> parsers.SsSummary:
    if name is None:
        return summarize_ss([])
    return summarize_ss(parsers.parse_ss((DATA / name).read_text()))


def load_capture(name: str) -> Snapshot:
    slab, sockstat, ss = _CAPTURES[name]
    hosts = {}
    for host, ss_file in ss.items():
        text = (DATA / f"sockstat-{sockstat}-{host}.txt").read_text()
        hosts[host] = HostSnapshot(parsers.parse_sockstat(text), _summary(ss_file))
    return Snapshot(name, 0.0, parsers.parse_slabinfo((DATA / f"slabinfo-{slab}.txt").read_text()),
                    parsers.parse_meminfo((DATA / f"meminfo-{slab}.txt").read_text()), hosts)


@pytest.fixture(scope="session")
def capture() -> Callable[[str], Snapshot]:
    """``capture("established")``: a Snapshot of a captured checkpoint (see _CAPTURES)."""
    return load_capture


@pytest.fixture(scope="session")
def slab_aliases() -> dict[str, list[str]]:
    """The SLUB merge groups of the capture machine."""
    return parsers.slab_alias_groups(json.loads((DATA / "slab-aliases.json").read_text()))
