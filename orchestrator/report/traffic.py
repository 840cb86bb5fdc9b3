"""Bytes moved and what the kernel counted: each transfer's goodput, and the TCP/IP
counters that moved, per host and checkpoint. Rows are plain lists shared by the text and
HTML reports (and the ones of other helpers: sweeps, conditions)."""

from __future__ import annotations

from tabulate import tabulate

from ..measure.counters import ordered
from ..results.model import Result
from ..results.transfers import Goodput, Transfer

COUNTERS_NOTE = ("change since the baseline of each host's own counters (/proc/net/netstat and "
                 "/proc/net/snmp of its namespace, container or machine; nstat names); "
                 "counters that did not move are omitted, the ones about memory pressure, "
                 "drops and retransmissions first")
GOODPUT_NOTE = ("goodput: bytes delivered / seconds, per connection from the read's start to "
                "its last byte, in total to the last connection's; MiB/s")


def rate_text(bytes_per_second: float | None) -> str:
    """A goodput for people: MiB/s (KiB/s below 1 MiB/s)."""
    if bytes_per_second is None:
        return "-"
    if bytes_per_second >= 1 << 20:
        return f"{bytes_per_second / (1 << 20):,.1f} MiB/s"
    return f"{bytes_per_second / 1024:,.1f} KiB/s"


def _spread(g: Goodput) -> str:
    """Mean (sd; min..max), in the mean's unit: ``32.0 (sd 0.1; 31.9..32.1) MiB/s``."""
    unit, scale = ("MiB/s", 1 << 20) if g.mean >= 1 << 20 else ("KiB/s", 1024)
    return (f"{g.mean / scale:,.1f} (sd {g.sd / scale:,.1f}; {g.min / scale:,.1f}.."
            f"{g.max / scale:,.1f}) {unit}")


GOODPUT_HEAD = ["transfer", "reader", "connections", "bytes", "seconds", "goodput (all)",
                "per connection: mean (sd; min..max)", "read pace"]


def goodput_rows(result: Result) -> list[list[str]]:
    """One row per transfer, and one per reading host when a role has several."""
    rows = []

    def row(t: Transfer, who: str, g: Goodput) -> list[str]:
        return [t.label, who, f"{g.connections:,}", f"{g.bytes:,}", f"{g.seconds:,.3f}",
                rate_text(g.goodput), _spread(g), rate_text(t.rate) if t.rate else "unpaced"]

    for t in result.transfers:
        rows.append(row(t, str(t.receiver), t.total))
        rows += [row(t, host, g) for host, g in t.hosts.items()]
    return rows


def counter_table(result: Result) -> tuple[list[str], list[list[str]]]:
    """(head, rows): per host, one row per counter that moved at some checkpoint; a column
    per measured checkpoint (its change since the baseline)."""
    cps = [cp for cp in result.measured() if cp.counters]
    head = ["host", "counter", *[cp.name for cp in cps]]
    hosts: list[str] = []
    for cp in cps:
        hosts += [h for h in cp.counters if h not in hosts]
    rows = []
    for host in hosts:
        moved: dict[str, int] = {}
        for cp in cps:
            for name, delta in cp.counters.get(host, {}).items():
                moved.setdefault(name, delta)
        for name, _ in ordered(moved):
            rows.append([host, name, *[f"{cp.counters.get(host, {}).get(name, 0):,}"
                                       for cp in cps]])
    return head, rows


def traffic_text(result: Result, fmt: str = "simple") -> list[str]:
    """The report's sections for bytes moved and kernel counters (none when absent)."""
    parts: list[str] = []
    if result.transfers:
        parts += ["Bytes moved (goodput of each transfer)",
                  tabulate(goodput_rows(result), GOODPUT_HEAD, tablefmt=fmt,
                           disable_numparse=True,
                           colalign=("left", "left") + ("right",) * (len(GOODPUT_HEAD) - 2)),
                  GOODPUT_NOTE, ""]
    head, rows = counter_table(result)
    if rows:
        parts += ["Kernel counters per host (change since the baseline)",
                  tabulate(rows, head, tablefmt=fmt,
                           colalign=("left", "left") + ("right",) * (len(head) - 2)),
                  COUNTERS_NOTE, ""]
    elif any(cp.counters for cp in result.checkpoints):
        parts += ["Kernel counters per host: none moved since the baseline", ""]
    return parts


def html_context(result: Result) -> dict[str, object]:
    """What the HTML report's "Bytes moved and kernel counters" section shows."""
    head, rows = counter_table(result)
    return {"goodput_head": GOODPUT_HEAD, "goodput": goodput_rows(result),
            "goodput_note": GOODPUT_NOTE, "counter_head": head, "counters": rows,
            "counters_note": COUNTERS_NOTE,
            "counters_read": any(cp.counters for cp in result.checkpoints)}
