#!/usr/bin/env python3
"""Summarise every TCP socket of this network namespace through netlink sock_diag.

Standard library only: it runs on lab hosts (``python3 -c``, or as a file). Prints one
JSON object with the same shape as ``orchestrator.measure.parsers.SsSummary.to_dict()``:
socket counts by state (ss's names), per state the sums of each skmem field and of the
queues, and their medians, aggregated while the dump streams in, so memory stays bounded
at a million sockets and nothing like ``ss`` text is produced or parsed.

    python3 sockdiag.py [--no-mem] [--skip-port PORT --keep-peer ADDR[,ADDR...]]

--no-mem: states and queues only (cheaper). --skip-port/--keep-peer: leave out sockets
whose local port is PORT unless their peer is one of the ADDRs (the SSH control
connection of a remote lab host is not lab traffic; a lab connection to the same port
is; a server has one peer per client host).

The orchestrator also loads this file as a module and feeds parsed ``ss -tmni`` text to
:class:`Summary` (``add_socket``), so captured ss output and live dumps are summarised by
the same code.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections import Counter

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_SKMEMINFO = 7
SKMEM_KEYS = ("r", "rb", "t", "tb", "f", "w", "o", "bl", "d")  # as ss -m prints them
STATES = {1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
          6: "TIME-WAIT", 7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
          11: "CLOSING", 12: "SYN-RECV"}
ALL_STATES = 0xFFFFFFFF


def request(family: int, with_mem: bool, seq: int) -> bytes:
    ext = 1 << (INET_DIAG_SKMEMINFO - 1) if with_mem else 0
    body = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, ext, ALL_STATES) + b"\0" * 48
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY,
                       NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class Summary:
    """Aggregates sockets as they stream in.

    ``ofo_inferred`` (per state): the sockets whose Recv-Q is 0 while their rmem_alloc is
    not, and that rmem_alloc summed. rmem_alloc (skmem ``r``) is the truesize of the skbs
    in the receive queue and in the out-of-order queue; Recv-Q (rcv_nxt - copied_seq) is
    the in-order bytes not yet read. With nothing in order left to read, what the socket
    still holds can only be out-of-order data.

    Each socket is reduced to a key (state, queues, skmem words) counted in one Counter:
    sockets in the same situation share a key, so memory stays small. A sock_diag socket's
    key is a slice of the netlink message (one slice and one dictionary increment per
    socket); a socket parsed from ``ss`` text (:meth:`add_socket`) is keyed by a tuple.
    """

    def __init__(self, with_mem: bool) -> None:
        self.with_mem = with_mem
        self.keys: Counter = Counter()

    def add_socket(self, state: str, recv_q: int, send_q: int, skmem: dict) -> None:
        """One socket as ``ss -tmni`` printed it (skmem: the fields it printed, maybe none)."""
        self.keys[(state, recv_q, send_q, tuple(skmem.items()))] += 1

    @staticmethod
    def _decode(key) -> tuple:
        """(state name, {field: value}, whether skmem was read) of a key."""
        if isinstance(key, tuple):
            state, rqueue, wqueue, skmem = key
            fields = {"recv_q": rqueue, "send_q": wqueue}
            fields.update(skmem)
            return state, fields, bool(skmem)
        rqueue, wqueue = struct.unpack_from("=II", key, 1)
        fields = {"recv_q": rqueue, "send_q": wqueue}
        has_mem = len(key) >= 9 + 36
        if has_mem:
            fields.update(zip(SKMEM_KEYS, struct.unpack_from("=9I", key, 9)))
        return STATES.get(key[0], str(key[0])), fields, has_mem

    def to_dict(self, exclude=("LISTEN",)) -> dict:
        states: Counter = Counter()
        skmem_sockets: Counter = Counter()
        values: dict = {}
        ofo: dict = {}
        for key, count in self.keys.items():
            state, fields, has_mem = self._decode(key)
            if state in exclude:
                continue
            states[state] += count
            skmem_sockets[state] += count if has_mem else 0
            if has_mem and fields["recv_q"] == 0 and fields.get("r", 0) > 0:
                held = ofo.setdefault(state, {"sockets": 0, "rmem_alloc": 0})
                held["sockets"] += count
                held["rmem_alloc"] += fields["r"] * count
            for name, value in fields.items():
                values.setdefault(state, {}).setdefault(name, Counter())[value] += count
        return {
            "states": dict(states),
            "sums": {s: {k: sum(v * n for v, n in c.items()) for k, c in f.items()}
                     for s, f in values.items()},
            "medians": {s: {k: median(c) for k, c in f.items()} for s, f in values.items()},
            "skmem_sockets": dict(skmem_sockets),
            "ofo_inferred": ofo,
        }


def median(counts: Counter) -> float:
    total = sum(counts.values())
    if not total:
        return 0.0
    ordered = sorted(counts.items())
    lo_rank, hi_rank = (total - 1) // 2, total // 2
    seen, lo = 0, None
    for value, n in ordered:
        if lo is None and seen + n > lo_rank:
            lo = value
        if seen + n > hi_rank:
            return (lo + value) / 2
        seen += n
    return float(ordered[-1][0])


def dump(family: int, summary: Summary, seq: int, skip_port: int = 0,
         keep_peers: tuple = ()) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.sendto(request(family, summary.with_mem, seq), (0, 0))
        unpack_hdr = struct.Struct("=IHHII").unpack_from
        unpack_attr = struct.Struct("=HH").unpack_from
        counts = summary.keys
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, _, _ = unpack_hdr(data, off)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise OSError(-code, f"sock_diag dump failed for family {family}")
                    return
                msg = off + 16
                if skip_port and (data[msg + 4] << 8 | data[msg + 5]) == skip_port \
                        and not any(data[msg + 24:msg + 24 + len(p)] == p for p in keep_peers):
                    off += (length + 3) & ~3  # e.g. the SSH control connection
                    continue
                # key: state byte + idiag_rqueue/wqueue (8 bytes) [+ 9 skmem words]
                key = data[msg + 1:msg + 2] + data[msg + 56:msg + 64]
                attr, end = msg + 72, off + length
                while attr + 4 <= end:
                    alen, atype = unpack_attr(data, attr)
                    if alen < 4:
                        break
                    if atype == INET_DIAG_SKMEMINFO:
                        key += data[attr + 4:attr + 40]
                        break
                    attr += (alen + 3) & ~3
                counts[key] += 1
                off += (length + 3) & ~3
    finally:
        sock.close()


def summarize(with_mem: bool = True, skip_port: int = 0, keep_peer: str = "") -> dict:
    summary = Summary(with_mem)
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
        peers = tuple(socket.inet_pton(family, a) for a in keep_peer.split(",")
                      if a and (":" in a) == (family == socket.AF_INET6))
        dump(family, summary, seq, skip_port, peers)
    return summary.to_dict()


def _option(args: list, name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(summarize(with_mem="--no-mem" not in args,
                               skip_port=int(_option(args, "--skip-port", "0")),
                               keep_peer=_option(args, "--keep-peer"))))
