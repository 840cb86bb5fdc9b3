"""From snapshots to per-connection figures. Pure functions over parsed data.

Rules (documented in docs/analysis.md):

* Bytes of a cache are the memory in its slab pages (num_slabs x pagesperslab x page),
  so slab overhead is counted; objects x objsize is kept beside it.
* A cache counts as socket memory only where its growth tracks the connection count:
  at least ``TRACKS_MIN`` objects per connection. Smaller changes are drift.
* Caches known to grow for other reasons are never attributed: ``proc_inode_cache``
  (something scanning ``/proc/<pid>/fd`` adds one per open socket while it runs) and
  its dentries and LSM blobs (subtracted from ``dentry`` and ``lsm_inode_cache``), and
  process-heap caches. ``nf_conntrack``
  is real per-connection memory, but not socket memory: it is its own category.
* Merged caches (SLUB) are reported under the name slabinfo prints, with their aliases.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from . import counters
from .parsers import PAGE_SIZE, SlabLine, SsSummary
from .snapshot import Snapshot

TRACKS_MIN = 0.5  # objects per connection: every socket-owned cache holds >= 1 per connection
MIN_OBJECTS = 32  # and a change this small is within one slab of noise, whatever N is

#: Caches that grow with open sockets for reasons other than the sockets themselves.
NOT_SOCKET = {
    "proc_inode_cache": "a /proc/<pid>/fd scanner: one inode per open descriptor it looks at",
    "anon_vma": "process heap", "anon_vma_chain": "process heap",
    "vm_area_struct": "process heap", "maple_node": "process address space",
    "pid": "processes", "task_struct": "processes", "mm_struct": "processes",
    "files_cache": "processes", "signal_cache": "processes", "sighand_cache": "processes",
    "cred_jar": "processes", "kernfs_node_cache": "sysfs", "radix_tree_node": "page cache",
    "buffer_head": "page cache", "ext4_inode_cache": "files", "shmem_inode_cache": "files",
}
#: Objects every inode brings along, one per proc inode a /proc/<pid>/fd scanner makes:
#: its dentry, and the LSM blob (security_inode_alloc; its own cache since 6.1 where an
#: LSM needs one) - set apart by the growth of proc_inode_cache.
PER_PROC_INODE = {"dentry": "dentries", "lsm_inode_cache": "LSM inode blobs"}
CONNTRACK = ("nf_conntrack",)
#: Socket caches SLUB may merge into a line named after a NOT_SOCKET cache (on 6.1 the
#: "pid" line counts tcp_bind_bucket, "anon_vma_chain" tcp_bind2_bucket): such a line
#: that tracks the connection count is socket memory.
SOCKET_ALIASES = ("tcp_bind_bucket", "tcp_bind2_bucket", "tw_sock_TCP", "request_sock_TCP",
                  "sock_inode_cache", "filp", "TCP")
SKMEM_FIELDS = {"r": "rmem_alloc", "t": "wmem_alloc", "w": "wmem_queued", "f": "fwd_alloc"}


def slab_footprint(line: SlabLine, page_size: int = PAGE_SIZE) -> float:
    """Bytes of slab pages one object takes: its share of a slab (objsize + slab overhead).

    Counting objects x footprint rather than the change in slab pages keeps slab overhead
    in, yet does not depend on how many free slots the slabs had at the baseline: new
    objects that fill slabs an earlier run left half empty cost the same here.
    """
    if line.objperslab:
        return line.pagesperslab * page_size / line.objperslab
    return float(line.objsize)


def cache_deltas(base: Mapping[str, SlabLine], now: Mapping[str, SlabLine], connections: int,
                 aliases: Mapping[str, list[str]],
                 page_size: int = PAGE_SIZE, held: int | None = None) -> list[dict[str, Any]]:
    """Per-cache change between two slabinfo snapshots, classified (``page_size``: the
    measured kernel's machine's, which slabs are made of). ``held``: the connections
    whose ends this kernel holds when fewer than all (one of several client VMs): a cache
    tracks them at TRACKS_MIN objects per connection it holds; bytes stay per connection
    of the run."""
    n = max(connections, 1)
    own = max(held, 1) if held else n
    whose = f" it holds ({own:,})" if own != n else ""
    rows = []
    proc_growth = 0
    if "proc_inode_cache" in now and "proc_inode_cache" in base:
        proc_growth = now["proc_inode_cache"].active_objs - base["proc_inode_cache"].active_objs
    for name in sorted(set(base) | set(now)):
        b, c = base.get(name), now.get(name)
        objs = (c.active_objs if c else 0) - (b.active_objs if b else 0)
        page_bytes = (c.bytes(page_size) if c else 0) - (b.bytes(page_size) if b else 0)
        if objs == 0 and page_bytes == 0:
            continue
        line = c or b
        assert line is not None
        note = ""
        what = PER_PROC_INODE.get(name)
        if what and proc_growth:
            # /proc/<pid>/fd lookups add a dentry and an LSM blob with each proc inode, and
            # take them along when the kernel reclaims the inode: neither change is the
            # sockets' (the shrink made small runs' totals negative). Set apart up to this
            # cache's own change in the same direction, never more.
            share = (min(proc_growth, max(objs, 0)) if proc_growth > 0
                     else max(proc_growth, min(objs, 0)))
            objs -= share
            reclaimed = "reclaimed " if proc_growth < 0 else ""
            note = f"{abs(share):,} {what} of {reclaimed}/proc fd lookups set apart"
        nbytes = round(objs * slab_footprint(line, page_size))
        per_conn_objs = objs / own
        merged_socket = [a for a in aliases.get(name, []) if a in SOCKET_ALIASES]
        if name in NOT_SOCKET and merged_socket and abs(per_conn_objs) >= TRACKS_MIN:
            category = "socket"
            reason = (f"{per_conn_objs:.2f} objects per connection; the line also counts "
                      f"{', '.join(merged_socket)} (SLUB merged)")
        elif name in NOT_SOCKET:
            category, reason = "drift", NOT_SOCKET[name]
        elif name.startswith(CONNTRACK):
            category, reason = "conntrack", "connection tracking entry (not socket memory)"
        elif abs(per_conn_objs) >= TRACKS_MIN and abs(objs) >= MIN_OBJECTS:
            category, reason = "socket", f"{per_conn_objs:.2f} objects per connection{whose}"
        else:
            category, reason = "drift", f"{per_conn_objs:.3f} objects per connection{whose}"
        rows.append({
            "cache": name,
            "aliases": list(aliases.get(name, [])),
            "objsize": line.objsize,
            "objects": objs,
            "bytes": nbytes,
            "page_bytes": page_bytes,
            "objects_per_connection": round(objs / n, 4),
            "bytes_per_connection": round(nbytes / n, 1),
            "object_bytes_per_connection": round(objs * line.objsize / n, 1),
            "category": category,
            "attributed": category == "socket",
            "reason": reason + (f"; {note}" if note else ""),
        })
    rows.sort(key=lambda r: -abs(r["bytes"]))
    conntrack_extensions(rows, n)
    return rows


def conntrack_extensions(rows: list[dict[str, Any]], n: int, entries: int | None = None) -> None:
    """Set a conntrack entry's extension area (ct->ext: NAT, accounting...; one kmalloc
    object per entry) apart from socket memory.

    It grows with the connections wherever they are tracked (a NAT router, Docker's host
    rules), so it would pass for socket memory: the kmalloc-* line growing closest to one
    object per nf_conntrack object is moved to the conntrack category when, without those
    objects, it would not track the connections. Measured: 4 clients x 2,500 through a NAT
    router, kmalloc-128 +1.16 objects per connection, nf_conntrack +0.99. Only NAT'd
    entries have it: where other namespaces track too (docker: each container), the
    router's own entries are the measure (``entries``), else every nf_conntrack object.
    """
    if entries is None:
        entries = next((r["objects"] for r in rows if r["cache"] == "nf_conntrack"), 0)
    if entries < MIN_OBJECTS:
        return
    found = [r for r in rows if r["cache"].startswith("kmalloc-") and r["category"] == "socket"
             and 0.9 <= r["objects"] / entries <= 1.5]
    if not found:
        return
    row = min(found, key=lambda r: abs(r["objects"] / entries - 1))
    if (row["objects"] - entries) / n < TRACKS_MIN:
        row["category"], row["attributed"] = "conntrack", False
        row["reason"] = (f"conntrack extensions (ct->ext): {row['objects'] / entries:.2f} "
                         "objects per nf_conntrack entry (not socket memory)")


def buffers(summary: SsSummary, sockstat: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Socket buffer memory of one host from ``ss -m`` skmem, plus sockstat pages."""
    sockets = sum(summary.states.values())
    out: dict[str, Any] = {"sockets": sockets}
    main_state = max(summary.states, key=summary.states.get) if summary.states else None
    for key, label in SKMEM_FIELDS.items():
        total = sum(s.get(key, 0) for s in summary.sums.values())
        median = summary.medians.get(main_state, {}).get(key, 0) if main_state else 0
        out[label] = {"sum": total, "median": median,
                      "per_socket": round(total / sockets, 1) if sockets else 0}
    out["recv_q"] = sum(s.get("recv_q", 0) for s in summary.sums.values())
    out["send_q"] = sum(s.get("send_q", 0) for s in summary.sums.values())
    out["sockstat_mem_pages"] = sockstat.get("TCP", {}).get("mem", 0)
    # sockets with nothing in order left to read that still hold skbs: out-of-order data
    held = summary.ofo_inferred.values()
    out["ofo_inferred"] = {"sockets": sum(h["sockets"] for h in held),
                           "rmem_alloc": sum(h["rmem_alloc"] for h in held)}
    return out


def checkpoint(base: Snapshot, snap: Snapshot, connections: int,
               aliases: Mapping[str, list[str]]) -> dict[str, Any]:
    """Everything the result stores for one checkpoint."""
    if snap.aliases is not None:  # the measured kernel's own merges (VMs, remote hosts)
        aliases = snap.aliases
    pages_delta = (_sockstat_pages(snap) - _sockstat_pages(base)) * snap.page_size
    out = {
        "name": snap.name,
        "time": snap.time,
        "connections": connections,
        "collect_seconds": round(snap.seconds, 3),
        "states": {h: dict(s.ss.states) for h, s in snap.hosts.items()},
        "per_connection_bytes": per_connection(base.slab, snap.slab, base.meminfo,
                                               snap.meminfo, connections, aliases, pages_delta,
                                               snap.page_size),
        "buffers": {h: buffers(s.ss, s.sockstat) for h, s in snap.hosts.items()},
        "sockstat": {h: s.sockstat for h, s in snap.hosts.items()},
        "memory": {h: s.memory for h, s in snap.hosts.items() if s.memory is not None},
        "memory_per_connection": cgroup_per_connection(base, snap, connections),
        "counters": counter_deltas(base, snap),
    }
    pcb = out["per_connection_bytes"]
    routed = sum(now.conntrack - (base.hosts[h].conntrack or 0 if h in base.hosts else 0)
                 for h, now in snap.hosts.items() if now.conntrack is not None)
    if routed:  # a NAT router's entries: their extension areas are its cost, not sockets'
        conntrack_extensions(pcb["by_cache"], max(connections, 1), routed)
        pcb.update(category_totals(pcb["by_cache"], max(connections, 1)))
    ext = next((r["cache"] for r in pcb["by_cache"]
                if r["reason"].startswith("conntrack extensions")), None)
    router = router_cost(base, snap, connections, ext)
    if router:
        out["router"] = router
    if snap.kernels:
        out["per_kernel"] = per_kernel(base, snap, connections)
        # Each kernel attributes its own caches (a cache tracks the connections on one side,
        # or on both): the totals are the sums of the kernels' totals, not a re-attribution
        # of the summed counters; by_cache stays the summed view.
        pcb = out["per_connection_bytes"]
        for key in ("total", "objects_total"):
            pcb[key] = round(sum(k["per_connection_bytes"][key]
                                 for k in out["per_kernel"].values()), 1)
        own_kernel_cost(out.get("router") or {}, out["per_kernel"], connections)
    return out


def own_kernel_cost(router: dict[str, Any], kernels: Mapping[str, Any], connections: int) -> None:
    """A router with a kernel of its own (a VM, a machine): everything that kernel's slab
    grew by, per connection, at slab footprints (``kernel_bytes_per_connection``), and its
    conntrack category (``kernel_conntrack_per_connection``): exact for that host, where
    one shared kernel only knows the router's count."""
    n = max(connections, 1)
    for host, cost in router.items():
        own = next((k for k in kernels.values() if list(k["hosts"]) == [host]), None)
        if own is None:
            continue
        pcb = own["per_connection_bytes"]
        cost["own_kernel"] = True
        cost["kernel_bytes_per_connection"] = round(sum(r["bytes"] for r in pcb["by_cache"])
                                                    / n, 1)
        cost["kernel_conntrack_per_connection"] = pcb["conntrack"]


def counter_deltas(base: Snapshot, snap: Snapshot) -> dict[str, dict[str, int]]:
    """Per host: the kernel counters that moved since ``base`` (non-zero deltas only; see
    measure/counters.py). Hosts whose counters could not be read at either end are left
    out rather than shown as unchanged."""
    out = {}
    for host, now in snap.hosts.items():
        then = base.hosts.get(host)
        if now.counters is not None and then is not None and then.counters is not None:
            out[host] = counters.deltas(then.counters, now.counters)
    return out


def router_cost(base: Snapshot, snap: Snapshot, connections: int,
                ext_cache: str | None = None) -> dict[str, Any]:
    """Per router host: its conntrack entries (its own namespace), their growth per
    connection, and what they cost: an nf_conntrack object and, when the run saw them,
    its extension area (``ext_cache``, see conntrack_extensions), at their slab
    footprints. The slab is machine-wide; the router's count says which share it holds."""
    out: dict[str, Any] = {}
    ct = snap.slab.get("nf_conntrack")
    ext = snap.slab.get(ext_cache) if ext_cache else None
    entry = (slab_footprint(ct) + (slab_footprint(ext) if ext else 0)) if ct else None
    n = max(connections, 1)
    for host, now in snap.hosts.items():
        if now.conntrack is None:
            continue
        before = base.hosts.get(host)
        delta = now.conntrack - (before.conntrack or 0 if before else 0)
        out[host] = {"conntrack": now.conntrack,
                     "entries_per_connection": round(delta / n, 4),
                     "entry_bytes": round(entry, 1) if entry else None,
                     "entry_caches": ["nf_conntrack", *([ext_cache] if ext else [])],
                     "bytes_per_connection": round(delta * entry / n, 1) if entry else None}
    return out


def per_connection(base_slab: Mapping[str, SlabLine], slab: Mapping[str, SlabLine],
                   base_meminfo: Mapping[str, int], meminfo: Mapping[str, int],
                   connections: int, aliases: Mapping[str, list[str]],
                   pages_delta: int, page_size: int = PAGE_SIZE,
                   held: int | None = None) -> dict[str, Any]:
    """Per-connection bytes between two slabinfo/meminfo readings of one kernel (or a sum)."""
    n = max(connections, 1)
    rows = cache_deltas(base_slab, slab, connections, aliases, page_size, held)
    slab_delta = meminfo.get("Slab", 0) - base_meminfo.get("Slab", 0)
    return {
        **category_totals(rows, n),
        "by_cache": rows,
        "meminfo_slab": round(slab_delta / n, 1),
        # Memory charged to TCP's limit (sockstat "mem": whole pages, forward-allocated,
        # machine-wide). It covers skb data held in pages, which no slab cache shows, and
        # overlaps the skb heads counted above: shown beside the total, not added to it.
        "tcp_mem_charged": round(pages_delta / n, 1),
    }


def category_totals(rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Per connection: socket memory (slab pages; and objects x objsize: no slab overhead,
    but no page-granularity noise either, as at small N new objects land in partly free
    slabs already counted), conntrack and drift."""
    def bytes_of(category: str) -> float:
        return round(sum(r["bytes"] for r in rows if r["category"] == category) / n, 1)

    return {"total": bytes_of("socket"),
            "objects_total": round(sum(r["objects"] * r["objsize"] for r in rows
                                       if r["category"] == "socket") / n, 1),
            "conntrack": bytes_of("conntrack"), "drift": bytes_of("drift")}


def per_kernel(base: Snapshot, snap: Snapshot, connections: int) -> dict[str, Any]:
    """Per measured kernel (one per VM or remote machine): the same figures, that kernel's
    own, so the server side and the client side are shown apart. A kernel holding a share
    of the connections (one of several clients) is classified against its share."""
    out: dict[str, Any] = {}
    sockets = {label: sum(sum(snap.hosts[h].ss.states.values()) for h in k.hosts
                          if h in snap.hosts) for label, k in snap.kernels.items()}
    most = max(sockets.values(), default=0)
    for label, k in snap.kernels.items():
        b = base.kernels.get(label)
        if b is None:
            continue
        first = k.hosts[0] if k.hosts else None
        pages = 0
        if first and first in snap.hosts and first in base.hosts:
            pages = (snap.hosts[first].sockstat.get("TCP", {}).get("mem", 0)
                     - base.hosts[first].sockstat.get("TCP", {}).get("mem", 0))
        out[label] = {
            "hosts": list(k.hosts),
            "release": k.release,
            "per_connection_bytes": per_connection(
                b.slab, k.slab, b.meminfo, k.meminfo, connections, k.aliases,
                pages * k.page_size, k.page_size,
                round(connections * sockets[label] / most) if sockets[label] else None),
            "objsize": {c: line.objsize for c, line in k.slab.items()},
        }
    return out


def _sockstat_pages(snap: Snapshot) -> int:
    """sockstat TCP mem is machine-wide: every host reports the same; take the first.

    With several kernels, each kernel's own figure (its first host's), added up."""
    if snap.kernels:
        total = 0
        for k in snap.kernels.values():
            first = next((h for h in k.hosts if h in snap.hosts), None)
            if first is not None:
                total += snap.hosts[first].sockstat.get("TCP", {}).get("mem", 0)
        return total
    for host in snap.hosts.values():
        return host.sockstat.get("TCP", {}).get("mem", 0)
    return 0


CGROUP_FIGURES = ("kmem", "sock", "usage")
#: What a container's memory cgroup misses (docker): said wherever cgroup figures are shown.
CGROUP_CAVEAT = ("An accepted socket is charged to no container on this kernel: its tcp_sock "
                 "is allocated in softirq context, outside the listener's cgroup; and cgroup v1 "
                 "does not charge socket buffers (kmem.tcp stays 0). The containers' figures "
                 "miss that part of each connection; the slab figures are the whole truth "
                 "for the machine.")


def cgroup_per_connection(base: Snapshot, snap: Snapshot, connections: int
                          ) -> dict[str, dict[str, float]]:
    """Per host, the growth of its memory cgroup's kmem/sock/usage, per connection.

    Only backends that give each host a cgroup (docker) have it. What it misses is said in
    the report: an accepted socket is allocated in softirq context and charged to no
    container on this kernel; cgroup v1 does not charge socket buffers.
    """
    n = max(connections, 1)
    out: dict[str, dict[str, float]] = {}
    for host, now in snap.hosts.items():
        before = base.hosts.get(host)
        if now.memory is None or before is None or before.memory is None:
            continue
        out[host] = {k: round((now.memory[k] - before.memory[k]) / n, 1) for k in CGROUP_FIGURES
                     if isinstance(now.memory.get(k), int) and isinstance(before.memory.get(k), int)}
    return out


def idle_pair_estimate(slab: Mapping[str, SlabLine], family: str = "ipv4") -> dict[str, int]:
    """What the objects of one idle connection pair (both ends) add up to, by object size.

    Each end: a TCP sock, a socket inode, a file, a dentry (and the LSM blobs of inode
    and file where the kernel has them); the connecting end also holds a bind bucket
    and (6.x) a bind2 bucket per local port.
    """
    parts: dict[str, int] = {}
    sock = "TCPv6" if family == "ipv6" else "TCP"
    for cache, count in ((sock, 2), ("sock_inode_cache", 2), ("filp", 2), ("dentry", 2),
                         ("lsm_inode_cache", 2), ("lsm_file_cache", 2)):
        if cache in slab:
            parts[cache] = count * slab[cache].objsize
    bind = slab.get("tcp_bind_bucket") or slab.get("eventpoll_epi")
    parts["bind buckets"] = 2 * (bind.objsize if bind else 128)
    parts["total"] = sum(parts.values())
    return parts


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line y = slope*x + intercept, with R² (the squared Pearson
    correlation, which for a straight-line fit equals 1 - SS_res/SS_tot).

    Degenerate inputs keep their old meaning: ys all equal fit a flat line exactly
    (R² 1); xs all equal have no slope (0, the mean as intercept, R² 0 unless ys are
    equal too).
    """
    my = statistics.fmean(ys)
    if len(set(ys)) < 2:
        return {"slope": 0.0, "intercept": round(my, 1), "r2": 1.0}
    if len(set(xs)) < 2:
        return {"slope": 0.0, "intercept": round(my, 1), "r2": 0.0}
    slope, intercept = statistics.linear_regression(xs, ys)
    r2 = statistics.correlation(xs, ys) ** 2
    return {"slope": round(slope, 2), "intercept": round(intercept, 1), "r2": round(r2, 5)}


R2_MIN = 0.98


def fit_levels(checkpoints: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Bytes per connection as a slope over the ramp's levels (baseline = 0 connections).

    Uses the ``levelK`` checkpoints and the first checkpoint after them (all N). A
    cache counted as socket memory whose growth does not fit a line (R² < R2_MIN) is
    flagged: its per-connection figure is not to be trusted.
    """
    points = []
    for cp in checkpoints[1:]:
        points.append(cp)
        if not cp["name"].startswith("level"):
            break
    if len(points) < 2:
        return None
    xs = [0.0] + [float(cp["connections"]) for cp in points]
    totals = [0.0] + [cp["per_connection_bytes"]["total"] * cp["connections"] for cp in points]
    last = points[-1]
    caches: dict[str, dict[str, Any]] = {}
    for row in last["per_connection_bytes"]["by_cache"]:
        if row["category"] != "socket":
            continue
        ys = [0.0]
        for cp in points:
            match = next((r for r in cp["per_connection_bytes"]["by_cache"]
                          if r["cache"] == row["cache"]), None)
            ys.append(float(match["bytes"]) if match else 0.0)
        fit = linear_fit(xs, ys)
        fit["delta_per_connection"] = row["bytes_per_connection"]
        fit["fits_line"] = fit["r2"] >= R2_MIN
        caches[row["cache"]] = fit
    total = linear_fit(xs, totals)
    total["delta_per_connection"] = last["per_connection_bytes"]["total"]
    return {"checkpoint": last["name"], "connections": [int(x) for x in xs], "total": total,
            "by_cache": caches, "not_linear": [c for c, f in caches.items() if not f["fits_line"]]}
