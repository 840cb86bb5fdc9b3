"""Turn a dump of live allocations into a checkpoint's ``ledger`` section. Pure.

Per host (network namespace): live objects and bytes by cache and by call site, each also
per connection; skb data pages as their own rows (slabinfo never shows them); totals per
host that add up to the lab's. The cross-check compares the ledger's bytes in the caches
slabinfo counts as socket memory with slabinfo's objects figure of the same checkpoint.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from .parse import KIND_PAGE, SLAB_PAGE, Live, Symbols

TOP_SITES = 25  # call-site rows kept per host (the rest summed as "other")


def _rows(groups: Mapping[tuple[str, str], list[int]], n: int) -> list[dict[str, Any]]:
    rows = [{"cache": cache, "site": site, "objects": len(sizes), "bytes": sum(sizes),
             "objects_per_connection": round(len(sizes) / n, 3),
             "bytes_per_connection": round(sum(sizes) / n, 1)}
            for (cache, site), sizes in groups.items()]
    rows.sort(key=lambda r: (-r["bytes"], r["cache"], r["site"]))
    return rows


def host_ledger(allocs: list[Live], symbols: Symbols, n: int) -> dict[str, Any]:
    """One host's live allocations, grouped."""
    by_cache: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_site: dict[tuple[str, str], list[int]] = defaultdict(list)
    pages: dict[tuple[str, str], list[int]] = defaultdict(list)
    slab_pages = [a.bytes for a in allocs if a.kind == KIND_PAGE and a.cache == SLAB_PAGE]
    allocs = [a for a in allocs if a.kind != KIND_PAGE or a.cache != SLAB_PAGE]
    for a in allocs:
        if a.kind == KIND_PAGE:
            pages[("pages", a.cache)].append(a.bytes)
            continue
        by_cache[(a.cache, "")].append(a.bytes)
        by_site[(a.cache, symbols.name(a.site))].append(a.bytes)
    sites = _rows(by_site, n)
    if len(sites) > TOP_SITES:
        rest = sites[TOP_SITES:]
        sites = sites[:TOP_SITES] + [{
            "cache": "", "site": f"other ({len(rest)} rows)",
            "objects": sum(r["objects"] for r in rest), "bytes": sum(r["bytes"] for r in rest),
            "objects_per_connection": round(sum(r["objects"] for r in rest) / n, 3),
            "bytes_per_connection": round(sum(r["bytes"] for r in rest) / n, 1)}]
    slab = sum(a.bytes for a in allocs if a.kind != KIND_PAGE)
    page_bytes = sum(a.bytes for a in allocs if a.kind == KIND_PAGE)
    return {
        "objects": sum(1 for a in allocs if a.kind != KIND_PAGE),
        "slab_bytes": slab,
        "page_bytes": page_bytes,
        "bytes": slab + page_bytes,
        "bytes_per_connection": round((slab + page_bytes) / n, 1),
        "by_cache": [{k: v for k, v in r.items() if k != "site"} for r in _rows(by_cache, n)],
        "by_site": sites,
        "pages": _rows(pages, n),
        # new slabs' pages: the objects in them are the rows above; not added again
        "slab_pages_bytes": sum(slab_pages),
    }


def ledger_section(live: Mapping[int, Live], hosts: Mapping[int, str], symbols: Symbols,
                   connections: int, socket_caches: Mapping[str, float]) -> dict[str, Any]:
    """The checkpoint's ledger. ``hosts``: netns inode -> host name; ``socket_caches``:
    cache -> slabinfo objects x objsize per connection, for the caches slabinfo counts as
    socket memory at this checkpoint."""
    n = max(connections, 1)
    per_host: dict[str, list[Live]] = {name: [] for name in hosts.values()}
    for a in live.values():
        if a.netns in hosts:
            per_host[hosts[a.netns]].append(a)
    out_hosts = {name: host_ledger(allocs, symbols, n) for name, allocs in per_host.items()}
    total = sum(h["bytes"] for h in out_hosts.values())
    return {
        "hosts": out_hosts,
        "bytes": total,
        "slab_bytes": sum(h["slab_bytes"] for h in out_hosts.values()),
        "page_bytes": sum(h["page_bytes"] for h in out_hosts.values()),
        "bytes_per_connection": round(total / n, 1),
        "crosscheck": crosscheck(per_host, n, socket_caches),
    }


def crosscheck(per_host: Mapping[str, list[Live]], n: int,
               socket_caches: Mapping[str, float]) -> dict[str, Any]:
    """Ledger vs slabinfo on the caches slabinfo counts as socket memory, per connection."""
    ledger: dict[str, int] = defaultdict(int)
    for allocs in per_host.values():
        for a in allocs:
            if a.kind != KIND_PAGE and a.cache in socket_caches:
                ledger[a.cache] += a.bytes
    ledger_pc = sum(ledger.values()) / n
    slab_pc = sum(socket_caches.values())
    diff = ledger_pc - slab_pc
    # the caches the lab allocated in: slabinfo's growth of the others is other processes'
    lab_slab = sum(v for c, v in socket_caches.items() if ledger.get(c))
    return {
        "lab_caches_difference_pct":
            round(100 * (ledger_pc - lab_slab) / lab_slab, 2) if lab_slab > 0 else None,
        "ledger_per_connection": round(ledger_pc, 1),
        "slabinfo_per_connection": round(slab_pc, 1),
        "difference": round(diff, 1),
        "difference_pct": round(100 * diff / slab_pc, 2) if slab_pc > 0 else None,
        "by_cache": [{"cache": c, "ledger": round(ledger.get(c, 0) / n, 1),
                      "slabinfo": round(v, 1)} for c, v in sorted(socket_caches.items())],
    }


def socket_caches(record: Mapping[str, Any]) -> dict[str, float]:
    """cache -> objects x objsize per connection of a checkpoint record's socket rows."""
    pcb = record.get("per_connection_bytes") or {}
    n = max(int(record.get("connections") or 0), 1)
    return {r["cache"]: r["objects"] * r["objsize"] / n for r in pcb.get("by_cache", [])
            if r.get("category") == "socket"}
