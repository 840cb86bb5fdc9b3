"""Kernel counters of a lab host: /proc/net/netstat and /proc/net/snmp, parsed and diffed.

Both files are pairs of lines, a header and its values, per section::

    TcpExt: SyncookiesSent SyncookiesRecv ... ListenOverflows ...
    TcpExt: 0 0 ... 36 ...

Counters are named as iproute2's ``nstat`` names them: section and counter joined
(``TcpExtListenOverflows``, ``TcpRetransSegs``, ``IpExtInOctets``), so a name is unique
across sections (``Tcp`` and ``IpExt`` both have ``InCsumErrors``) and is the one people
search for. Kept: the sections of :data:`SECTIONS`. Pure: no I/O (the text comes from the
host's own network namespace, see :mod:`.probes`); tested on captures in ``tests/data/``.

On one kernel these counters are per network namespace (checked on 6.18 with two
namespaces by ``tests/data/capture_counters.py``: a ListenOverflows storm in one left the
other's counters unchanged), so each host's reading is its own, on every backend.
"""

from __future__ import annotations

from collections.abc import Mapping

from .parsers import ParseError

#: The sections kept: TCP's own, TCP's extended counters, and IP's (octets, for bytes moved).
SECTIONS = ("Tcp", "TcpExt", "IpExt")
#: What ``cat`` reads on a host, in one command.
FILES = ("/proc/net/netstat", "/proc/net/snmp")
#: Counters the reports name first when they moved: memory pressure and its consequences,
#: drops and retransmissions (the rest follow by name).
NOTABLE = (
    "TcpExtTCPMemoryPressures", "TcpExtTCPMemoryPressuresChrono", "TcpExtPruneCalled",
    "TcpExtRcvPruned", "TcpExtOfoPruned", "TcpExtTCPRcvCollapsed", "TcpExtTCPAbortOnMemory",
    "TcpExtTCPRcvQDrop", "TcpExtTCPOFOQueue", "TcpExtTCPOFODrop", "TcpRetransSegs",
    "TcpExtTCPLostRetransmit", "TcpExtTCPTimeWaitOverflow", "TcpExtListenOverflows",
    "TcpExtListenDrops", "TcpExtTCPBacklogDrop",
)


def parse_counters(text: str, sections: tuple[str, ...] = SECTIONS) -> dict[str, int]:
    """``{nstat name: value}`` of the ``sections`` in netstat/snmp text (either file, or
    both concatenated). Other sections (``Ip``, ``Udp``, ``MPTcpExt``...) are skipped."""
    what = "/proc/net/netstat"
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) % 2:
        lineno, line = lines[-1]
        raise ParseError(what, "a header line without its values line", line, lineno)
    out: dict[str, int] = {}
    for (lineno, names), (vlineno, values) in zip(lines[::2], lines[1::2], strict=True):
        section, _, keys = names.partition(":")
        vsection, _, nums = values.partition(":")
        if not keys or section != vsection or " " in section:
            raise ParseError(what, "expected a 'Section: names' line and a 'Section: values' "
                             "line", names if section == vsection else values,
                             lineno if section == vsection else vlineno)
        if section not in sections:
            continue
        keys_l, nums_l = keys.split(), nums.split()
        if len(keys_l) != len(nums_l):
            raise ParseError(what, f"{section}: {len(keys_l)} names but {len(nums_l)} values",
                             values, vlineno)
        for key, num in zip(keys_l, nums_l, strict=True):
            try:
                out[section + key] = int(num)
            except ValueError:
                raise ParseError(what, f"{section}: value of {key!r} is not an integer",
                                 values, vlineno) from None
    return out


def deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The counters that moved from ``before`` to ``after``: name -> change, non-zero only,
    sorted by name. A counter missing from ``before`` counts from 0 (it appeared)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after)
            if after[k] != before.get(k, 0)}


def ordered(moved: Mapping[str, int]) -> list[tuple[str, int]]:
    """The moved counters, notable ones first (in :data:`NOTABLE` order), then by name."""
    first = [(k, moved[k]) for k in NOTABLE if k in moved]
    return first + [(k, v) for k, v in sorted(moved.items()) if k not in NOTABLE]
