"""The report's link section: the conditions asked, how and where they were applied, and
what the emulated link held at each checkpoint (from the result alone)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..results.model import Result


def link_of(result: Result) -> dict[str, Any] | None:
    """``metadata.link`` (None: a perfect link, or a result from before link conditions)."""
    link = result.metadata.get("link")
    return link if isinstance(link, dict) and link.get("link") else None


def summary(result: Result) -> str:
    """One line: ``delay 25 ms each way (RTT 50 ms), rate 40 Mbit/s, queue 167 packets (one
    bandwidth-delay product)``; ``none`` without conditions. What ``compare`` diffs."""
    link = link_of(result)
    if link is None:
        return "none"
    return str(link["link"].get("description", "?"))


def header_lines(result: Result) -> list[str]:
    """Lines under the report's header: the link, the engine and where (empty: none)."""
    link = link_of(result)
    if link is None:
        return []
    engine = link.get("engine", "?")
    what = {"netem": "netem", "fallback": "fallback (the delay line)"}.get(engine, engine)
    lines = [f"link: {summary(result)}",
             f"      engine {what}: {link.get('engine_why', '')}; limit "
             f"{link.get('hold_limit', 0):,} packets per direction",
             f"      {link.get('where', 'not applied: the run stopped first')}"]
    for entry in link.get("applied") or []:
        lines.append(f"      {entry['direction']}: {entry['host']} {entry['dev']}: {entry['how']}")
    return lines


def held_rows(result: Result) -> list[list[str]]:
    """Per checkpoint and direction: packets and bytes held by the emulated link, dropped."""
    rows = []
    for cp in result.checkpoints:
        for where, s in (cp.raw.get("link") or {}).items():
            rows.append([cp.name, where, _n(s.get("held_packets")), _n(s.get("held_bytes")),
                         _n(s.get("dropped"))])
    return rows


def held_text(result: Result, fmt: str = "simple") -> list[str]:
    rows = held_rows(result)
    if not rows:
        return []
    return ["Link emulation at each checkpoint (packets held are skbs in the measured kernel "
            "when the link runs on it: discount them)",
            tabulate(rows, ["checkpoint", "direction at", "held packets", "held bytes",
                            "dropped so far"], tablefmt=fmt, disable_numparse=True,
                     colalign=("left", "left", "right", "right", "right")), ""]


def _n(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"
