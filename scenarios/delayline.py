#!/usr/bin/env python3
"""tcplab delay line: netem's link model for the packets of one NFQUEUE queue.

For kernels without sch_netem. Standard library only, Python >= 3.7. It binds queue Q of
nfnetlink_queue in the network namespace it runs in (an iptables NFQUEUE rule, installed by
the caller, sends packets there), holds each packet for the link's delay and gives the
verdict NF_ACCEPT when it is due:

    due = arrival + delay + jitter                                   (no rate)
    due = max(arrival + delay + jitter, previous due) + wire_bits/R  (--rate-bps R)

which is netem's model (netem_enqueue: with a rate the last queued packet is the reference
point and every packet adds its own transmission time). Jitter is uniform in
[delay - J, delay + J] (netem's default) or normal with sigma J cut at 4 sigma, never below 0;
without a rate, as with netem, jitter reorders packets (--fifo keeps their order).
--limit sets the kernel queue's maximum length: beyond it the kernel drops the packet, as
netem does beyond its limit. --loss drops a packet on arrival (verdict NF_DROP).

Wire bits of a packet: its IP length plus --overhead bytes (14, the Ethernet header netem
counts on a veth) per segment; a GSO packet (queued whole, NFQA_CFG_F_GSO) counts as the
segments it becomes at the incoming device's MTU, each with its own headers.

Signals: SIGUSR1 writes --stats (JSON, atomically); SIGTERM/SIGINT release every held
packet, write --stats and exit 0. --ready is written once the queue is bound.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

# -- nfnetlink_queue: include/uapi/linux/netfilter/{nfnetlink,nfnetlink_queue}.h -------------
NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_IFINDEX_INDEV = 1, 2, 5
NFQA_PAYLOAD, NFQA_CAP_LEN, NFQA_SKB_INFO = 10, 13, 14
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_GSO = 1 << 2
NFQA_SKB_GSO = 1 << 1
NF_DROP, NF_ACCEPT = 0, 1

PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid (host order)
NLMSGHDR_HEAD = struct.Struct("=IH")  # len, type
ATTR = struct.Struct("=HH")  # nla_len, nla_type (host order); payloads are big-endian
U32 = struct.Struct("!I")
COPY_RANGE = 128  # enough for the IP and TCP headers, which give the segment headers' size
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"
NS = 1_000_000_000


def nlmsg(msg: int, queue: int, seq: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    """One nfnetlink message of the queue subsystem: nlmsghdr, nfgenmsg (family AF_UNSPEC,
    version 0, res_id = the queue number, big-endian), attributes."""
    body = struct.pack("!BBH", 0, 0, queue) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg,
                         flags, seq, 0) + body


def nla(kind: int, payload: bytes) -> bytes:
    """A netlink attribute, padded to 4 bytes."""
    return ATTR.pack(ATTR.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def bind_message(queue: int, seq: int, maxlen: int, copy_range: int = COPY_RANGE) -> bytes:
    attrs = (nla(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))
             + nla(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET))
             + nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
    return nlmsg(NFQNL_MSG_CONFIG, queue, seq, attrs, NLM_F_REQUEST | NLM_F_ACK)


def flags_message(queue: int, seq: int, flags: int, mask: int) -> bytes:
    attrs = nla(NFQA_CFG_MASK, struct.pack("!I", mask)) + nla(NFQA_CFG_FLAGS, struct.pack("!I", flags))
    return nlmsg(NFQNL_MSG_CONFIG, queue, seq, attrs, NLM_F_REQUEST | NLM_F_ACK)


def unbind_message(queue: int, seq: int) -> bytes:
    return nlmsg(NFQNL_MSG_CONFIG, queue, seq, nla(NFQA_CFG_CMD, struct.pack(
        "!BBH", NFQNL_CFG_CMD_UNBIND, 0, 0)), NLM_F_REQUEST | NLM_F_ACK)


def verdict_message(queue: int, packet_id: int, verdict: int, batch: bool = False) -> bytes:
    """The verdict on one packet, or (batch) on every queued packet with an id up to this."""
    return nlmsg(NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT, queue, 0,
                 nla(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)))


def split_messages(data: bytes) -> list[tuple[int, int, memoryview]]:
    """The netlink messages in one datagram: (type, flags, body after the nlmsghdr)."""
    out, view, offset = [], memoryview(data), 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            break
        out.append((kind, flags, view[offset + NLMSGHDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def attributes(body: memoryview, start: int = 4) -> dict[int, memoryview]:
    """Attributes after the nfgenmsg header (4 bytes), by type (nested flag bits cleared)."""
    out, offset = {}, start
    while offset + 4 <= len(body):
        length, kind = ATTR.unpack_from(body, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = body[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


def error_code(body: memoryview) -> int:
    """The errno of an NLMSG_ERROR message (0 for an acknowledgement)."""
    return -struct.unpack_from("=i", body, 0)[0]


def header_bytes(head: bytes) -> int:
    """IP plus TCP/UDP header length of a packet's first bytes (what each segment repeats)."""
    if len(head) < 20:
        return 0
    version = head[0] >> 4
    if version == 4:
        ip, proto = (head[0] & 15) * 4, head[9]
    elif version == 6 and len(head) >= 40:
        ip, proto = 40, head[6]
    else:
        return 0
    if proto == 6 and len(head) >= ip + 13:
        return ip + (head[ip + 12] >> 4) * 4
    return ip + 8 if proto == 17 else ip


def wire_bytes(length: int, head: bytes, gso: bool, mtu: int, overhead: int) -> int:
    """Bytes the packet takes on the wire: segments at ``mtu``, each with its headers and
    ``overhead`` link-layer bytes."""
    if not gso and length <= mtu:
        return length + overhead
    hdr = header_bytes(head)
    if hdr and mtu > hdr:
        segments = max(1, -(-(length - hdr) // (mtu - hdr)))
        return length + (segments - 1) * hdr + segments * overhead
    return length + overhead


class Packet:
    __slots__ = ("id", "length", "wire", "gso", "indev", "head")

    def __init__(self, packet_id: int, length: int, gso: bool, indev: int, head: bytes) -> None:
        self.id, self.length, self.gso, self.indev, self.head = packet_id, length, gso, indev, head
        self.wire = 0


def packet_fields(data: bytes, start: int, end: int) -> tuple[int, int, bool, int, bytes]:
    """(id, IP length, GSO, incoming ifindex, first bytes) of the NFQNL_MSG_PACKET whose
    body is data[start:end]: the per-packet hot path, so a plain walk over the attributes
    (the length is NFQA_CAP_LEN when the copy was cut short, else the copy's)."""
    offset, packet_id, cap, gso, indev, head = start + 4, -1, -1, False, 0, b""
    unpack_attr, unpack_u32 = ATTR.unpack_from, U32.unpack_from
    while offset + 4 <= end:
        length, kind = unpack_attr(data, offset)
        if length < 4:
            break
        kind &= 0x3FFF
        if kind == NFQA_PACKET_HDR:
            packet_id = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_PAYLOAD:
            head = data[offset + 4:offset + length]
        elif kind == NFQA_CAP_LEN:
            cap = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_SKB_INFO:
            gso = bool(unpack_u32(data, offset + 4)[0] & NFQA_SKB_GSO)
        elif kind == NFQA_IFINDEX_INDEV:
            indev = unpack_u32(data, offset + 4)[0]
        offset += (length + 3) & ~3
    return packet_id, cap if cap >= 0 else len(head), gso, indev, head


def parse_packet(body: memoryview) -> Packet | None:
    """An NFQNL_MSG_PACKET body (after the nlmsghdr), or None without a packet header."""
    data = bytes(body)
    packet_id, length, gso, indev, head = packet_fields(data, 0, len(data))
    return Packet(packet_id, length, gso, indev, head) if packet_id >= 0 else None


class LinkModel:
    """Due times of packets on one link (netem's model, see the module docstring)."""

    def __init__(self, delay_ns: int, jitter_ns: int = 0, rate_bps: int = 0, normal: bool = False,
                 fifo: bool = False, rng: random.Random | None = None) -> None:
        self.delay, self.jitter, self.rate, self.normal = delay_ns, jitter_ns, rate_bps, normal
        self.rng = rng or random.Random()
        self.ordered = bool(rate_bps) or fifo or not jitter_ns  # due times never go backwards
        self.last = 0  # due time of the previous packet (ns)

    def one_way(self) -> int:
        if not self.jitter:
            return self.delay
        if self.normal:
            x = max(-4.0, min(4.0, self.rng.gauss(0.0, 1.0)))
            return max(0, int(self.delay + x * self.jitter))
        return max(0, self.delay - self.jitter + int(self.rng.random() * 2 * self.jitter))

    def due(self, arrival_ns: int, wire: int) -> int:
        due = arrival_ns + self.one_way()
        if self.ordered:
            due = max(due, self.last)
        if self.rate:
            due += wire * 8 * NS // self.rate
        self.last = due
        return due


class Lateness:
    """Release time minus due time (µs), kept as a histogram: exact below 1,024 µs, then
    buckets 1/512 wide (0.2%). Adding is O(1) and the summary scans a few thousand
    buckets: written on SIGUSR1 at every checkpoint, it must not hold the packets up
    (sorting a 200,000-sample reservoir stalled this loop ~70 ms at each checkpoint)."""

    EXACT = 1024  # below this, one bucket per µs

    def __init__(self) -> None:
        self.counts: dict = {}
        self.seen, self.total, self.max = 0, 0, 0

    @classmethod
    def bucket(cls, late_us: int) -> int:
        if late_us < cls.EXACT:
            return max(late_us, 0)
        shift = late_us.bit_length() - 10  # keep the 10 leading bits
        return (late_us >> shift) << shift  # the bucket's lower bound

    def add(self, late_us: int) -> None:
        self.seen += 1
        self.total += late_us
        if late_us > self.max:
            self.max = late_us
        key = self.bucket(late_us)
        self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self) -> dict:
        ordered = sorted(self.counts.items())  # a few thousand buckets at most

        def pct(p: float):
            rank, seen = min(self.seen - 1, int(p / 100 * self.seen)), 0
            for value, count in ordered:
                seen += count
                if seen > rank:
                    return value
            return None
        return {"count": self.seen, "mean": round(self.total / self.seen, 1) if self.seen else None,
                "p50": pct(50), "p90": pct(90), "p99": pct(99), "p99_9": pct(99.9),
                "max": self.max if self.seen else None}


def kernel_counters(queue: int, path: str = PROC_QUEUES) -> dict[str, int]:
    """queue_total, queue_dropped (beyond the maximum length), user_dropped (the netlink
    socket was full) and id_sequence of one queue, from /proc (this network namespace)."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and int(fields[0]) == queue:
                    return {"queue_total": int(fields[2]), "queue_dropped": int(fields[5]),
                            "user_dropped": int(fields[6]), "id_sequence": int(fields[7])}
    except (OSError, ValueError):
        pass
    return {}


def write_atomically(path: str, text: str) -> None:
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class SetupError(Exception):
    """The queue cannot be bound: the message says why and what to do."""


class DelayLine:
    """The program: one netlink socket bound to one queue, a clock loop releasing due packets."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.queue = args, args.queue_num
        seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        self.seed = seed
        self.model = LinkModel(args.delay_us * 1000, args.jitter_us * 1000, args.rate_bps,
                               args.jitter_dist == "normal", args.fifo, random.Random(seed))
        self.loss_rng = random.Random(seed + 1)
        self.held = deque() if self.model.ordered else []  # (due, id, bytes) / heap of those
        self.mtus: dict[int, int] = {}
        self.seq = 1
        self.gso = False
        self.stop_signal = 0
        self.dump_requested = False
        self.started = time.time()
        self.lateness = Lateness()
        self.counts = {"packets": 0, "bytes": 0, "wire_bytes": 0, "gso_packets": 0, "released": 0,
                       "lost": 0, "enobufs": 0, "verdict_errors": 0, "max_held": 0,
                       "max_held_bytes": 0}
        self.held_bytes = 0
        self.pending_dues: list[int] = []
        self.scheduling = "other"
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)

    # -- setup ---------------------------------------------------------------------------
    def request(self, message: bytes, what: str) -> int:
        """Send a config request and wait for its acknowledgement: the errno (0 = done)."""
        self.sock.sendto(message, (0, 0))
        seq = struct.unpack_from("=I", message, 8)[0]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for kind, _flags, body in split_messages(self.sock.recv(65536)):
                if kind == NLMSG_ERROR and struct.unpack_from("=I", body, 12)[0] == seq:
                    return error_code(body)
        raise SetupError("no answer from the kernel to %s" % what)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def bind(self) -> None:
        for size in (64 << 20, 16 << 20):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                break
            except OSError:
                continue
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind((0, 0))
        q = self.queue
        code = self.request(bind_message(q, self.next_seq(), self.args.limit), "binding the queue")
        if code == errno.EPERM:  # the kernel's answer to both
            raise SetupError("binding queue %d: permission denied: another process in this network "
                             "namespace holds the queue (stop it or pick another --queue-num), or "
                             "this one lacks CAP_NET_ADMIN (run as root)" % q)
        if code:
            raise SetupError("binding queue %d failed: %s" % (q, os.strerror(code)))
        if not self.args.no_gso:
            self.gso = self.request(flags_message(q, self.next_seq(), NFQA_CFG_F_GSO, NFQA_CFG_F_GSO),
                                    "the GSO flag") == 0
        self.sock.setblocking(False)

    # -- the loop ------------------------------------------------------------------------
    def mtu(self, ifindex: int) -> int:
        mtu = self.mtus.get(ifindex)
        if mtu is None:
            try:
                with open("/sys/class/net/%s/mtu" % socket.if_indextoname(ifindex)) as f:
                    mtu = int(f.read())
            except (OSError, ValueError):
                mtu = 1500
            self.mtus[ifindex] = mtu
        return mtu

    def receive(self, limit: int = 256) -> list[bytes]:
        """Drain up to ``limit`` packet messages; lost, verdict-error ones are answered here."""
        drops, counts = [], self.counts
        for _ in range(limit):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped what it could not deliver
                    counts["enobufs"] += 1
                    continue
                raise
            now = time.monotonic_ns()
            offset, size = 0, len(data)
            while offset + 16 <= size:
                length, kind = NLMSGHDR_HEAD.unpack_from(data, offset)
                if length < 16 or offset + length > size:
                    break
                start, offset = offset + 16, offset + ((length + 3) & ~3)
                if kind != PACKET_TYPE:
                    if kind == NLMSG_ERROR and error_code(memoryview(data)[start:start + 4]):
                        counts["verdict_errors"] += 1
                    continue
                packet_id, ip_len, gso, indev, head = packet_fields(data, start, start + length - 16)
                if packet_id < 0:
                    continue
                counts["packets"] += 1
                counts["bytes"] += ip_len
                counts["gso_packets"] += gso
                if self.args.loss and self.loss_rng.random() < self.args.loss:
                    counts["lost"] += 1
                    drops.append(verdict_message(self.queue, packet_id, NF_DROP))
                    continue
                mtu = self.mtus.get(indev) or self.mtu(indev)
                wire = wire_bytes(ip_len, head, gso, mtu, self.args.overhead)
                counts["wire_bytes"] += wire
                due = self.model.due(now, wire)
                if self.model.ordered:
                    self.held.append((due, packet_id, ip_len))
                else:
                    heapq.heappush(self.held, (due, packet_id, ip_len))
                self.held_bytes += ip_len
                if len(self.held) > counts["max_held"]:
                    counts["max_held"] = len(self.held)
                if self.held_bytes > counts["max_held_bytes"]:
                    counts["max_held_bytes"] = self.held_bytes
        return drops

    def release(self, now: int, everything: bool = False) -> list[bytes]:
        """Verdicts for the packets due by ``now``: one batch message when in order."""
        held, out, dues = self.held, [], []
        if self.model.ordered:
            last = None
            while held and (everything or held[0][0] <= now):
                due, last, length = held.popleft()
                dues.append(due)
                self.held_bytes -= length
            if last is not None:
                out.append(verdict_message(self.queue, last, NF_ACCEPT, batch=True))
        else:
            while held and (everything or held[0][0] <= now):
                due, pid, length = heapq.heappop(held)
                dues.append(due)
                self.held_bytes -= length
                out.append(verdict_message(self.queue, pid, NF_ACCEPT))
        self.pending_dues = dues
        return out

    def send(self, messages: list[bytes]) -> None:
        """Send verdicts, several netlink messages per datagram."""
        for start in range(0, len(messages), 512):
            chunk = b"".join(messages[start:start + 512])
            while True:
                try:
                    self.sock.sendto(chunk, (0, 0))
                    break
                except BlockingIOError:
                    select.select([], [self.sock], [], 0.01)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.counts["enobufs"] += 1

    def run(self, wake: socket.socket) -> None:
        sock, fds = self.sock, [self.sock, wake]
        while not self.stop_signal:
            timeout = None
            if self.held:
                timeout = max(0.0, (self.held[0][0] - time.monotonic_ns()) / NS)
            readable = select.select(fds, [], [], timeout)[0]
            if wake in readable:
                self.on_signals(wake)
            if sock in readable:
                drops = self.receive()
                if drops:
                    self.send(drops)
            now = time.monotonic_ns()
            if self.held and self.held[0][0] <= now:
                self.send(self.release(now))
                sent = time.monotonic_ns()
                for due in self.pending_dues:
                    self.lateness.add((sent - due) // 1000)
                self.counts["released"] += len(self.pending_dues)
            if self.dump_requested:
                self.dump_requested = False
                self.write_stats()

    def on_signals(self, wake: socket.socket) -> None:
        try:
            data = wake.recv(64)
        except OSError:
            return
        for signum in data:
            if signum == signal.SIGUSR1:
                self.dump_requested = True
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.stop_signal = signum

    def finish(self) -> None:
        """Release what is held (a link being taken down lets its packets through), write
        the statistics, unbind."""
        released = self.release(0, everything=True)
        self.counts["released"] += len(self.pending_dues)
        self.counts["released_at_exit"] = len(self.pending_dues)
        self.send(released)
        self.write_stats()
        self.sock.setblocking(True)
        self.sock.settimeout(2)
        try:
            self.request(unbind_message(self.queue, self.next_seq()), "unbinding the queue")
        except (OSError, SetupError):
            pass
        self.sock.close()

    # -- reporting -----------------------------------------------------------------------
    def stats(self) -> dict:
        a, kernel = self.args, kernel_counters(self.queue)
        return dict(self.counts, **{
            "queue": self.queue, "pid": os.getpid(), "elapsed_s": round(time.time() - self.started, 3),
            "config": {"delay_us": a.delay_us, "jitter_us": a.jitter_us, "jitter_dist": a.jitter_dist,
                       "rate_bps": a.rate_bps, "limit": a.limit, "loss": a.loss, "seed": self.seed,
                       "overhead": a.overhead, "gso": self.gso, "scheduling": self.scheduling, "reorders": not self.model.ordered},
            "held_now": len(self.held), "held_bytes_now": self.held_bytes,
            "dropped_by_limit": kernel.get("queue_dropped"),
            "dropped_undelivered": kernel.get("user_dropped"),
            "kernel": kernel, "lateness_us": self.lateness.summary()})

    def write_stats(self) -> None:
        if self.args.stats:
            write_atomically(self.args.stats, json.dumps(self.stats(), indent=1, sort_keys=True) + "\n")


def punctual(priority: int) -> str:
    """Wake on time: 1 µs timer slack (PR_SET_TIMERSLACK) instead of 50 µs and, unless
    ``priority`` is 0, SCHED_FIFO at that priority (a busy machine otherwise delays a
    normal process's wake-ups by milliseconds; the kernel's RT throttling still leaves
    others 5% of each CPU). The scheduling policy in effect."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            return "fifo:%d" % priority
        except (OSError, AttributeError):
            pass
    return "other"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad input: one line on stderr, exit 2, before anything is created."""
        self.exit(2, "delayline.py: error: %s\n" % message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="delayline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--queue-num", type=int, required=True, help="NFQUEUE queue number (0..65535)")
    p.add_argument("--delay-us", type=int, required=True, help="one-way delay, microseconds")
    p.add_argument("--jitter-us", type=int, default=0, help="jitter, microseconds (see --jitter-dist)")
    p.add_argument("--jitter-dist", choices=("uniform", "normal"), default="uniform",
                   help="uniform in delay +- J (netem's default) or normal with sigma J")
    p.add_argument("--fifo", action="store_true", help="keep packet order under jitter")
    p.add_argument("--rate-bps", type=int, default=0, help="link rate, bit/s (0: unlimited)")
    p.add_argument("--overhead", type=int, default=14, help="link-layer bytes per segment (14)")
    p.add_argument("--limit", type=int, default=1000, help="packets held at most (netem's 1000)")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability, 0..1")
    p.add_argument("--seed", type=int, help="seed of loss and jitter draws")
    p.add_argument("--no-gso", action="store_true", help="have the kernel segment GSO packets")
    p.add_argument("--rt-priority", type=int, default=10,
                   help="SCHED_FIFO priority, 1..99 (10); 0: normal scheduling")
    p.add_argument("--stats", help="JSON statistics, written on SIGUSR1 and at exit")
    p.add_argument("--ready", help="file written once the queue is bound")
    a = p.parse_args(argv)
    checks = [(0 <= a.queue_num <= 65535, "--queue-num: expected 0..65535, got %d" % a.queue_num),
              (a.delay_us >= 0, "--delay-us: expected >= 0, got %d" % a.delay_us),
              (a.jitter_us >= 0, "--jitter-us: expected >= 0, got %d" % a.jitter_us),
              (a.rate_bps >= 0, "--rate-bps: expected >= 0 (0: unlimited), got %d" % a.rate_bps),
              (0 <= a.rt_priority <= 99, "--rt-priority: expected 0..99, got %d" % a.rt_priority),
              (a.overhead >= 0, "--overhead: expected >= 0, got %d" % a.overhead),
              (1 <= a.limit <= 1 << 31, "--limit: expected 1..2147483648 packets, got %d" % a.limit),
              (0.0 <= a.loss <= 1.0, "--loss: expected a probability 0..1 (0.01 is 1%%), got %s" % a.loss)]
    for ok, message in checks:
        if not ok:
            p.error(message)
    for option, path in (("--stats", a.stats), ("--ready", a.ready)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            p.error("%s: no directory %s: create it first" % (option, os.path.dirname(os.path.abspath(path))))
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.ready and os.path.exists(args.ready):
        os.unlink(args.ready)  # a stale one would say "bound" too early
    wake, wake_write = socket.socketpair()
    wake.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, lambda *_: None)
    line = DelayLine(args)
    line.scheduling = punctual(args.rt_priority)
    try:
        line.bind()
    except (SetupError, OSError) as exc:
        print("delayline.py: error: %s" % exc, file=sys.stderr)
        return 1
    if args.ready:
        write_atomically(args.ready, json.dumps({"pid": os.getpid(), "queue": args.queue_num,
                                                 "gso": line.gso}) + "\n")
    try:
        line.run(wake)
    finally:
        line.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
