"""Pure parsers of /proc files and `ss` output.

No I/O here: every function takes text (or lines) that the caller read from a
lab host and returns plain data. Standard library only. Malformed input raises
:class:`ParseError`, whose message names what was being parsed and quotes the
offending line.

Formats, as checked on kernel 6.18 / iproute2 6.1 (real captures live in
``tests/data/``):

* ``/proc/slabinfo``: only ``slabinfo - version: 2.1``. SLUB merges caches of
  the same size and flags, so one line may count objects of several caches
  (see :func:`slab_alias_groups`).
* ``/proc/meminfo``: ``Key:  value kB`` or ``Key:  value`` (HugePages_*).
* ``/proc/net/sockstat``: ``PROTO: key value key value ...``.
* ``ss -tmni`` / ``ss -tmniH`` (``-a`` to include LISTEN and TIME-WAIT): one
  line per socket starting in column 0, followed by zero or more indented
  continuation lines (tab) holding ``skmem:(...)`` and the ``-i`` info.
  TIME-WAIT and orphaned FIN-WAIT-2 sockets (kernel timewait socks) have no
  continuation line at all, hence no skmem.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from orchestrator.errors import RunError

PAGE_SIZE = 4096

_SNIPPET_CHARS = 120

#: State names as ss prints them (iproute2 ``sstate_name``).
SS_STATES = frozenset({
    "UNKNOWN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
    "TIME-WAIT", "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING",
})
_SS_HEADER_WORDS = frozenset({"State", "Netid"})
_SKMEM_RE = re.compile(r"skmem:\(([^)]*)\)")
_SKMEM_ITEM_RE = re.compile(r"([a-z]+)(\d+)")
_SLABINFO_VERSION_RE = re.compile(r"slabinfo - version: (\S+)")


def _snippet(line: str) -> str:
    line = line.rstrip("\r\n")
    if len(line) > _SNIPPET_CHARS:
        return line[:_SNIPPET_CHARS] + "..."
    return line


class ParseError(RunError):
    """Text read from a lab host does not have the expected format.

    ``what`` names the input (e.g. ``"/proc/slabinfo"``), ``line`` and
    ``lineno`` locate the offending line when there is one.
    """

    def __init__(self, what: str, problem: str, line: str | None = None,
                 lineno: int | None = None) -> None:
        self.what = what
        self.problem = problem
        self.line = line
        self.lineno = lineno
        msg = f"cannot parse {what}: {problem}"
        if line is not None:
            where = f"line {lineno}" if lineno is not None else "line"
            msg += f" ({where}: {_snippet(line)!r})"
        msg += (". The output may be truncated or come from an unsupported kernel or"
                " iproute2 version; save it and add it to tests/data to extend the parser.")
        super().__init__(msg)


# --------------------------------------------------------------------------
# /proc/slabinfo
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class SlabLine:
    """One line of /proc/slabinfo (one cache, or one merged group of caches)."""

    name: str
    active_objs: int
    num_objs: int
    objsize: int
    objperslab: int
    pagesperslab: int
    active_slabs: int
    num_slabs: int

    def bytes(self, page_size: int = PAGE_SIZE) -> int:
        """Memory held in this cache's slab pages (used or not)."""
        return self.num_slabs * self.pagesperslab * page_size


def parse_slabinfo(text: str) -> dict[str, SlabLine]:
    """Parse /proc/slabinfo (version 2.1 only) into ``{cache name: SlabLine}``.

    A data line is ``name active_objs num_objs objsize objperslab
    pagesperslab : tunables l b s : slabdata active_slabs num_slabs
    sharedavail``. If a name appears twice with the same geometry the counts
    are added; with a different geometry it is an error.
    """
    what = "/proc/slabinfo"
    result: dict[str, SlabLine] = {}
    seen_version = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not seen_version:
            m = _SLABINFO_VERSION_RE.fullmatch(line.strip())
            if m is None:
                raise ParseError(what, "first line is not 'slabinfo - version: 2.1'",
                                 line, lineno)
            if m.group(1) != "2.1":
                raise ParseError(what, f"unsupported slabinfo version {m.group(1)!r}"
                                 " (only 2.1 is understood)", line, lineno)
            seen_version = True
            continue
        if line.startswith("#"):
            continue
        tokens = line.split()
        if (len(tokens) != 16 or tokens[6] != ":" or tokens[7] != "tunables"
                or tokens[11] != ":" or tokens[12] != "slabdata"):
            raise ParseError(what, "expected 'name <5 numbers> : tunables <3 numbers>"
                             " : slabdata <3 numbers>'", line, lineno)
        try:
            nums = [int(t) for t in (*tokens[1:6], tokens[13], tokens[14])]
        except ValueError:
            raise ParseError(what, "a count is not an integer", line, lineno) from None
        if any(n < 0 for n in nums):
            raise ParseError(what, "negative count", line, lineno)
        slab = SlabLine(tokens[0], *nums)
        old = result.get(slab.name)
        if old is not None:
            if (old.objsize, old.objperslab, old.pagesperslab) != (
                    slab.objsize, slab.objperslab, slab.pagesperslab):
                raise ParseError(what, f"cache {slab.name!r} appears twice with different"
                                 " object sizes", line, lineno)
            slab = SlabLine(slab.name, old.active_objs + slab.active_objs,
                            old.num_objs + slab.num_objs, slab.objsize, slab.objperslab,
                            slab.pagesperslab, old.active_slabs + slab.active_slabs,
                            old.num_slabs + slab.num_slabs)
        result[slab.name] = slab
    if not seen_version:
        raise ParseError(what, "empty input")
    if not result:
        raise ParseError(what, "no cache lines after the header")
    return result


# --------------------------------------------------------------------------
# /proc/meminfo
# --------------------------------------------------------------------------

def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo. ``kB`` values are returned in bytes (x 1024);
    unit-less values (``HugePages_Total`` ...) are returned as plain counts."""
    what = "/proc/meminfo"
    result: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep or not key or key != key.strip() or " " in key:
            raise ParseError(what, "expected 'Key: value [kB]'", line, lineno)
        parts = rest.split()
        try:
            if len(parts) == 1:
                value = int(parts[0])
            elif len(parts) == 2 and parts[1] == "kB":
                value = int(parts[0]) * 1024
            else:
                raise ParseError(what, "expected 'Key: value [kB]'", line, lineno)
        except ValueError:
            raise ParseError(what, "value is not an integer", line, lineno) from None
        if key in result:
            raise ParseError(what, f"duplicate key {key!r}", line, lineno)
        result[key] = value
    if not result:
        raise ParseError(what, "empty input")
    return result


# --------------------------------------------------------------------------
# /proc/net/sockstat (and sockstat6)
# --------------------------------------------------------------------------

def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/sockstat into ``{"TCP": {"inuse": 1, ...}, ...}``.

    Remember: ``inuse`` and ``tw`` are per network namespace, ``alloc``,
    ``orphan`` and ``mem`` (pages) are global.
    """
    what = "/proc/net/sockstat"
    result: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        proto, sep, rest = line.partition(":")
        tokens = rest.split()
        if not sep or not proto or " " in proto or not tokens or len(tokens) % 2:
            raise ParseError(what, "expected 'NAME: key value [key value ...]'", line, lineno)
        fields: dict[str, int] = {}
        for key, value in zip(tokens[::2], tokens[1::2], strict=False):
            try:
                fields[key] = int(value)
            except ValueError:
                raise ParseError(what, f"value of {key!r} is not an integer",
                                 line, lineno) from None
        if proto in result:
            raise ParseError(what, f"duplicate line {proto!r}", line, lineno)
        result[proto] = fields
    if not result:
        raise ParseError(what, "empty input")
    return result


# --------------------------------------------------------------------------
# ss -tmni
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class SsSocket:
    """One socket of ``ss -tmni`` output."""

    state: str
    recv_q: int
    send_q: int
    local: str
    peer: str
    #: skmem fields as ss prints them (r, rb, t, tb, f, w, o, bl, d); empty
    #: when ss printed no skmem for this socket (TIME-WAIT, timewait FIN-WAIT-2).
    skmem: dict[str, int] = field(default_factory=dict)


def _parse_skmem(body: str, line: str, lineno: int) -> dict[str, int]:
    skmem: dict[str, int] = {}
    for item in body.split(","):
        m = _SKMEM_ITEM_RE.fullmatch(item.strip())
        if m is None:
            raise ParseError("ss output", f"bad skmem item {item!r}", line, lineno)
        skmem[m.group(1)] = int(m.group(2))
    return skmem


def _parse_ss_main(line: str, lineno: int) -> tuple[str, int, int, str, str]:
    tokens = line.split()
    if tokens[0] in SS_STATES:
        start = 0
    elif len(tokens) > 1 and tokens[1] in SS_STATES:
        start = 1  # a Netid column (ss with several socket types)
    else:
        raise ParseError("ss output", f"unknown socket state {tokens[0]!r}", line, lineno)
    fields = tokens[start:start + 5]
    if len(fields) < 5:
        raise ParseError("ss output", "expected 'State Recv-Q Send-Q Local Peer'",
                         line, lineno)
    state, recv_q, send_q, local, peer = fields
    try:
        return state, int(recv_q), int(send_q), local, peer
    except ValueError:
        raise ParseError("ss output", "Recv-Q/Send-Q is not an integer",
                         line, lineno) from None


def iter_ss(lines: Iterable[str]) -> Iterator[SsSocket]:
    """Parse ``ss -tmni`` output (with or without ``-H``) one socket at a time.

    A socket starts with a line in column 0 (``State Recv-Q Send-Q Local
    Peer [Process]``, optionally preceded by a Netid column); the indented
    lines that follow belong to it. ``skmem:(...)`` is taken from any of the
    socket's lines. Header lines (``State ...``/``Netid ...``) are skipped
    wherever they appear, so concatenated captures work. Only the socket being
    read is held in memory.
    """
    head: tuple[str, int, int, str, str] | None = None
    skmem: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line[0] in " \t":
            if head is None:
                raise ParseError("ss output", "indented line before any socket line",
                                 line, lineno)
        else:
            if head is not None:
                yield SsSocket(*head, skmem=skmem)
                head, skmem = None, {}
            if line.split()[0] in _SS_HEADER_WORDS:
                continue
            head = _parse_ss_main(line, lineno)
        m = _SKMEM_RE.search(line)
        if m is not None:
            skmem = _parse_skmem(m.group(1), line, lineno)
    if head is not None:
        yield SsSocket(*head, skmem=skmem)


def parse_ss(text: str) -> list[SsSocket]:
    """Parse a whole ``ss -tmni`` capture; see :func:`iter_ss`."""
    return list(iter_ss(text.splitlines()))


@dataclass
class SsSummary:
    """Per-state counts, sums and medians of ``ss -tmni`` sockets.

    ``sums``/``medians`` hold, per state, ``recv_q``, ``send_q`` and every
    skmem field. skmem fields are taken over the sockets of that state that
    printed skmem; ``skmem_sockets`` says how many did (TIME-WAIT: none).
    ``ofo_inferred``: per state, ``sockets`` whose Recv-Q is 0 while their rmem_alloc is
    not, and that ``rmem_alloc`` summed: bytes only the out-of-order queue can hold
    (scenarios/sockdiag.py ``Summary``).
    """

    states: dict[str, int]
    sums: dict[str, dict[str, int]]
    medians: dict[str, dict[str, float]]
    skmem_sockets: dict[str, int] = field(default_factory=dict)
    ofo_inferred: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "states": dict(self.states),
            "sums": {s: dict(v) for s, v in self.sums.items()},
            "medians": {s: dict(v) for s, v in self.medians.items()},
            "skmem_sockets": dict(self.skmem_sockets),
            "ofo_inferred": {s: dict(v) for s, v in self.ofo_inferred.items()},
        }


# --------------------------------------------------------------------------
# /sys/kernel/slab aliases (SLUB cache merging)
# --------------------------------------------------------------------------

def slab_alias_groups(links: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Which caches SLUB merged together.

    ``links`` maps every entry of /sys/kernel/slab to its symlink target
    (``"tcp_bind_bucket": ":A-0000128"``) or None for a real directory.
    Returns, for every name in a merged group (two or more names linking to
    the same target), the sorted list of the other names in the group. The
    target directory itself (``:A-0000128``) is not a member, and names with
    no partner are absent. /proc/slabinfo prints one line per group, under one
    of its names, counting the objects of all of them.
    """
    groups: dict[str, list[str]] = {}
    for name, target in links.items():
        if target is None:
            continue
        key = posixpath.basename(target.rstrip("/")) or target
        groups.setdefault(key, []).append(name)
    result: dict[str, list[str]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for name in members:
            result[name] = sorted(m for m in members if m != name)
    return result
