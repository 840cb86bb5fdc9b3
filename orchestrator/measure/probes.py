"""Snapshots of kernel memory: what is read at each checkpoint, and from where.

Global counters (slabinfo, meminfo) come from the measured kernel (a
:class:`~.kernel.MeasuredKernel`); socket counters (sockstat, sock_diag) from each lab
host, since they are per network namespace. Raw text is saved gzip-compressed beside the
result, so any figure can be re-derived.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..backends.base import LabHost
from ..errors import LabError
from . import counters, parsers
from .kernel import (
    SETTLE_CACHES,
    MeasuredKernel,
    meminfo_text,
    merge_slab,
    read_each,
    slabinfo_text,
)
from .snapshot import HostSnapshot, KernelSnapshot, Snapshot
from .sockets import SOCKDIAG, from_dict, sockdiag_argv

__all__ = ["SOCKDIAG", "sockdiag_argv", "host_summary", "quick_summary", "settle", "quiesce",
           "wait_released", "take"]

SS_ALL = ["ss", "-t", "-a", "-n", "-m", "-i", "-H"]  # -a: TIME-WAIT and SYN-RECV too
RAW_SS_MAX = 20_000  # above this many sockets per host, keep the sock_diag summary only


def host_summary(host: LabHost, with_mem: bool = True) -> parsers.SsSummary:
    """Every TCP socket of a host summarised through netlink sock_diag (bounded memory)."""
    return from_dict(json.loads(host.runner.run(sockdiag_argv(with_mem), timeout=120).stdout))


def quick_summary(host: LabHost) -> parsers.SsSummary:
    """State counts and queue sums only: cheap enough to poll while waiting."""
    return host_summary(host, with_mem=False)


def active_objects(kernel: MeasuredKernel, caches: tuple[str, ...]) -> dict[str, int]:
    """Objects in use per cache, of those of ``caches`` the kernel has."""
    slab = parsers.parse_slabinfo(kernel.read("/proc/slabinfo"))
    return {c: slab[c].active_objs for c in caches if c in slab}


def settle(connections: int, kernel: MeasuredKernel, timeout: float = 3.0,
           interval: float = 0.1) -> float:
    """Wait until the socket caches stop moving; returns the seconds waited.

    Sockets, inodes and files are freed through RCU after close, a grace period later:
    a snapshot taken the moment the states are reached would still count them.

    Every slab reading is preceded by flushing the socket caches' per-CPU slabs (and
    6.18's per-CPU sheaves): /proc/slabinfo counts every object of a per-CPU slab or sheaf
    as in use, free or not. At rest here TCP showed 53 "active" objects, 3 after a flush;
    tw_sock_TCP 48, then 0. Their number changes between two readings, which put a noise
    of 100-200 objects into per-connection counts. Writing 1 to
    /sys/kernel/slab/<cache>/shrink (kmem_cache_shrink: ~2.5 ms per cache) empties them;
    it frees only empty slabs and changes no setting. Skipped where not writable.
    """
    start = time.monotonic()
    kernel.shrink_caches()
    tolerance = max(2, connections // 500)
    before = active_objects(kernel, SETTLE_CACHES)
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        now = active_objects(kernel, SETTLE_CACHES)
        if all(abs(now.get(c, 0) - before.get(c, 0)) <= tolerance for c in set(now) | set(before)):
            break
        before = now
    return time.monotonic() - start


#: Caches a dying network namespace frees in bulk (its sockets, asynchronously).
RELEASE_CACHES = ("TCP", "TCPv6", "tw_sock_TCP", "tw_sock_TCPv6", "request_sock_TCP",
                  "sock_inode_cache")


def quiesce(kernel: MeasuredKernel, timeout: float = 60.0, window: float = 0.25,
            tolerance: int = 16) -> float:
    """Before a baseline: wait while the socket caches are shrinking; returns seconds waited.

    Every run pays one ``window`` (it was 0.5 s); a namespace being freed drops far more
    than ``tolerance`` objects within a quarter second.

    A namespace or container deleted shortly before (an earlier run killed and wiped,
    another program's) closes its sockets from a kernel workqueue, seconds later. A
    baseline taken meanwhile counts sockets that vanish during the run: negative growth.
    """
    start = time.monotonic()
    before = active_objects(kernel, RELEASE_CACHES)
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = active_objects(kernel, RELEASE_CACHES)
        if all(before.get(c, 0) - v <= tolerance for c, v in now.items()):
            break
        before = now
    return time.monotonic() - start


def wait_released(baseline: dict[str, parsers.SlabLine], kernel: MeasuredKernel,
                  timeout: float = 60.0, on_wait: Any = None, check_only: bool = False) -> bool:
    """After teardown, wait until the run's sockets are really freed.

    Deleting a network namespace closes its sockets asynchronously (a kernel workqueue):
    300,000 sockets take seconds. A next run starting earlier would count them at its
    baseline and see them vanish during its ramp. On a real host (ssh) its TIME_WAIT
    sockets stay for 60 s. ``on_wait(excess)``: called once, before waiting, with the
    objects per cache still above the baseline; ``check_only``: do not wait at all.
    """
    # SLUB keeps a few slabs per CPU cached and counts their objects as in use: allow for
    # them, or the wait runs to its timeout for nothing.
    cpus = os.cpu_count() or 1
    limit = {c: baseline[c].active_objs + max(64, baseline[c].active_objs // 100,
                                              8 * cpus * baseline[c].objperslab)
             for c in RELEASE_CACHES if c in baseline}
    deadline = time.monotonic() + timeout
    told = False
    while True:
        now = active_objects(kernel, RELEASE_CACHES)
        if all(now[c] <= v for c, v in limit.items() if c in now):
            return True
        if not told and on_wait is not None:
            on_wait({c: now[c] - baseline[c].active_objs for c in limit
                     if c in now and now[c] > limit[c]})
            told = True
        if check_only or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def take(name: str, hosts: dict[str, LabHost], raw_dir: Path, kernel: MeasuredKernel,
         memory_of: Any = None, read_hosts: Any = None) -> Snapshot:
    """Collect one checkpoint's snapshot and save the raw text under raw_dir/name.

    ``read_hosts(names, summary_argv, serial_limit)``: the backend reads every host's
    sockstat and socket summary at once (ssh: Fabric's group API) and says how long that
    took (``Snapshot.fanout``); without it (or when it gives None) each host is read on its
    own thread.
    """
    start = time.monotonic()
    out = raw_dir / name
    out.mkdir(parents=True, exist_ok=False)
    kernel.shrink_caches()  # exact object counts: see settle
    when = time.time()
    slab, meminfo, per, slab_text, mem_text = _read_kernels(kernel, out)
    stats: dict[str, str] = {}
    summaries: dict[str, str] = {}
    fanout = None
    read = read_hosts(list(hosts), sockdiag_argv(), RAW_SS_MAX) if read_hosts else None
    if read is not None:
        stats, summaries, fanout = read

    def collect(host: LabHost) -> tuple[str, HostSnapshot]:
        if host.name in stats:
            sockstat_text = stats[host.name]
            summary = from_dict(json.loads(summaries[host.name]))
        else:
            sockstat_text = host.runner.run(["cat", "/proc/net/sockstat"]).stdout
            summary = host_summary(host)
        if sum(summary.states.values()) <= RAW_SS_MAX:  # raw per-socket text, kept for study
            with gzip.open(out / f"{host.name}-ss.txt.gz", "wt", compresslevel=3) as fh:
                for line in host.runner.stream(SS_ALL):
                    fh.write(line if line.endswith("\n") else line + "\n")
        (out / f"{host.name}-sockstat.txt").write_text(sockstat_text)
        memory = memory_of(host) if memory_of else None
        conntrack = conntrack_count(host) if host.role == "router" else None
        return host.name, HostSnapshot(parsers.parse_sockstat(sockstat_text), summary, memory,
                                       conntrack, read_counters(host, out))

    # Hosts in parallel: each dump is its own process on its own host.
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        host_snaps = dict(pool.map(collect, hosts.values()))
    with gzip.open(out / "slabinfo.txt.gz", "wt") as fh:
        fh.write(slab_text)
    (out / "meminfo.txt").write_text(mem_text)
    return Snapshot(name, when, slab, meminfo, host_snaps, time.monotonic() - start,
                    per if len(per) > 1 else {}, kernel.slab_aliases(), kernel.page_size,
                    fanout)


def read_counters(host: LabHost, out: Path) -> dict[str, int] | None:
    """The host's TCP and IP counters (/proc/net/netstat and /proc/net/snmp of its own
    network namespace, container or machine), raw text saved as <host>-counters.txt; None
    where they cannot be read (the checkpoint goes on without them)."""
    try:
        text = host.runner.run(["cat", *counters.FILES], timeout=30).stdout
    except LabError:
        return None
    (out / f"{host.name}-counters.txt").write_text(text)
    return counters.parse_counters(text)


def conntrack_count(host: LabHost) -> int:
    """Connection-tracking entries of the host's own network namespace (a router's):
    nf_conntrack_count is per namespace; 0 where conntrack never started there (a router
    without NAT tracks nothing)."""
    text = host.runner.run(["sh", "-c", "cat /proc/sys/net/netfilter/nf_conntrack_count "
                            "2>/dev/null || echo 0"], timeout=30).stdout
    return int(text.split()[0]) if text.split() else 0


def _read_kernels(kernel: MeasuredKernel, out: Path) -> tuple[
        dict[str, parsers.SlabLine], dict[str, int], dict[str, KernelSnapshot], str, str]:
    """slabinfo and meminfo of every measured kernel; with several, each one's raw text is
    saved as <label>-slabinfo.txt.gz and <label>-meminfo.txt and the totals are their sum.
    Returns (slab, meminfo, per kernel, slabinfo text, meminfo text)."""
    parts = kernel.parts()
    slabs = read_each(parts, "/proc/slabinfo")
    mems = read_each(parts, "/proc/meminfo")
    per: dict[str, KernelSnapshot] = {}
    for k in parts:
        if len(parts) > 1:
            with gzip.open(out / f"{k.label}-slabinfo.txt.gz", "wt") as fh:
                fh.write(slabs[k.label])
            (out / f"{k.label}-meminfo.txt").write_text(mems[k.label])
        per[k.label] = KernelSnapshot(k.label, list(k.hosts), parsers.parse_slabinfo(slabs[k.label]),
                                      parsers.parse_meminfo(mems[k.label]), k.release,
                                      k.slab_aliases(), k.page_size)
    if len(per) == 1:
        (one,) = per.values()
        return one.slab, one.meminfo, per, slabs[one.label], mems[one.label]
    slab = merge_slab([k.slab for k in per.values()])
    totals: dict[str, int] = {}
    for k in per.values():
        for key, value in k.meminfo.items():
            totals[key] = totals.get(key, 0) + value
    return slab, totals, per, slabinfo_text(slab), meminfo_text([totals])
