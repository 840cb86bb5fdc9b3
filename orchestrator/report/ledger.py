"""The ledger's part of the reports (``--ledger`` runs): per host totals, call sites and
skb data pages per connection, and the cross-check against slabinfo. Read from each
checkpoint's ``ledger`` section; a run without it shows nothing."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..results.model import Checkpoint, Result

TOP_SITES = 8  # call-site rows per host and checkpoint in the reports
CAVEAT = ("host = the namespace of the task that allocated, or in the receive softirq of the "
          "device the packet arrived on (skbs queued to a socket move to the receiving host); "
          "skb data pages stay with the host that allocated them (docs/ledger.md)")


def section(cp: Checkpoint) -> dict[str, Any] | None:
    """The checkpoint's ledger, if it has one of this shape (a later one is ignored)."""
    led = cp.raw.get("ledger")
    return led if isinstance(led, dict) and "hosts" in led and "crosscheck" in led else None


def ledgered(result: Result) -> list[Checkpoint]:
    return [cp for cp in result.measured() if section(cp)]


def missed(cp: Checkpoint) -> int:
    return int((section(cp) or {}).get("missed_events") or 0)


def crosscheck_line(name: str, check: dict[str, Any], missed_events: int = 0) -> str:
    pct = check.get("difference_pct")
    lab = check.get("lab_caches_difference_pct")
    apart = [f"{c['cache']} {c['ledger'] - c['slabinfo']:+,.0f}" for c in check["by_cache"]
             if abs(c["ledger"] - c["slabinfo"]) >= 1]
    return (f"{name}: ledger {check['ledger_per_connection']:,.0f} vs slabinfo "
            f"{check['slabinfo_per_connection']:,.0f} B/connection in the socket caches"
            + (f" ({pct:+.1f}%" + (f"; {lab:+.1f}% on the caches the lab allocated in)"
                                    if lab is not None and lab != pct else ")")
               if pct is not None else "")
            + (f"; apart: {', '.join(apart)}" if apart else "")
            + (f"; {missed_events:,} tracepoint events missed since the start (BPF programs "
               "do not nest on a CPU): the ledger may lack or keep that many objects"
               if missed_events else ""))


def totals_rows(result: Result) -> list[list[Any]]:
    rows = []
    for cp in ledgered(result):
        led = section(cp)
        assert led is not None
        n = max(cp.connections, 1)
        for host, h in led["hosts"].items():
            rows.append([cp.name, host, f"{h['objects'] / n:,.2f}",
                         f"{h['slab_bytes'] / n:,.0f}", f"{h['page_bytes'] / n:,.0f}",
                         f"{h['bytes_per_connection']:,.0f}"])
        rows.append([cp.name, "all hosts", "", f"{led['slab_bytes'] / n:,.0f}",
                     f"{led['page_bytes'] / n:,.0f}", f"{led['bytes_per_connection']:,.0f}"])
    return rows


TOTALS_HEAD = ["checkpoint", "host", "objects", "slab", "pages", "total"]
SITES_HEAD = ["host", "cache", "call site", "objects", "bytes"]


def site_rows(cp: Checkpoint, limit: int = TOP_SITES) -> list[list[Any]]:
    led = section(cp)
    rows: list[list[Any]] = []
    if not led:
        return rows
    for host, h in led["hosts"].items():
        for r in h["by_site"][:limit] + h["pages"]:
            rows.append([host, r["cache"], r["site"], f"{r['objects_per_connection']:,.3f}",
                         f"{r['bytes_per_connection']:,.1f}"])
    return rows


def ledger_text(result: Result, fmt: str = "simple") -> list[str]:
    """The terminal report's ledger lines (empty without --ledger)."""
    cps = ledgered(result)
    if not cps:
        return []
    parts = ["Allocation ledger (bpftrace: live objects the lab's hosts allocated since the "
             "baseline), per connection",
             tabulate(totals_rows(result), TOTALS_HEAD, tablefmt=fmt), CAVEAT, ""]
    for cp in cps:
        parts += [f"Ledger at {cp.name}: top call sites per host, per connection",
                  tabulate(site_rows(cp), SITES_HEAD, tablefmt=fmt), ""]
    parts += ["Cross-check (ledger vs slabinfo objects x objsize):"]
    parts += [crosscheck_line(cp.name, section(cp)["crosscheck"], missed(cp)) for cp in cps]  # type: ignore[index]
    overhead = overhead_line(result)
    if overhead:
        parts.append(overhead)
    return parts + [""]


def overhead_line(result: Result) -> str:
    cps = ledgered(result)
    dumps = [section(cp)["dump_seconds"] for cp in cps]  # type: ignore[index]
    if not dumps:
        return ""
    start = section(cps[0])["start_seconds"]  # type: ignore[index]
    return (f"ledger overhead: bpftrace attached in {start:.1f} s, dumps took "
            f"{min(dumps):.1f}-{max(dumps):.1f} s per checkpoint (docs/performance.md)")


HEADER_NOTE = ("ledger on: bpftrace traced every slab allocation during this run; the ramp "
               "ran at about half its rate without it and each checkpoint took a few seconds "
               "more (docs/performance.md): compare rates only with runs that had it too")


def header_note(result: Result) -> list[str]:
    """The header line a --ledger run gets: its overhead is not small."""
    return [HEADER_NOTE] if ledgered(result) else []


def ledger_context(result: Result) -> dict[str, Any] | None:
    """What the HTML template shows (None without --ledger)."""
    cps = ledgered(result)
    if not cps:
        return None
    return {
        "head": TOTALS_HEAD, "totals": totals_rows(result), "caveat": CAVEAT,
        "sites_head": SITES_HEAD,
        "sites": [{"name": cp.name, "rows": site_rows(cp)} for cp in cps],
        "crosscheck": [crosscheck_line(cp.name, section(cp)["crosscheck"],  # type: ignore[index]
                                       missed(cp)) for cp in cps],
        "overhead": overhead_line(result),
        "header_note": HEADER_NOTE,
    }
