"""tcplab side script, the worker: one forked process holding a share of a side's
connections, driven by the side's main process (side.py) over a socketpair, one JSON
object per line. Standard library only, Python >= 3.7 (it runs on lab hosts).
"""

from __future__ import annotations

import _socket
import errno
import json
import os
import select
import socket
import struct
import threading
import time

PROGRESS_EVERY = 2000
#: what senders write: slices of a memoryview share its buffer (a slice of the bytes would
#: copy up to 1 MiB for every send(), however little the socket takes: over a slow link,
#: thousands of times a second, a core's worth of copying that starved the checkpoints)
CHUNK = memoryview(b"x" * (1 << 20))
LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {l_onoff 1, l_linger 0}: close resets


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return f"{exc} (file descriptor limit reached; lower the per-worker share)"
    return f"{type(exc).__name__}: {exc}"


def _poll_in(fds: list, timeout: float) -> list:
    """poll() for readable among ``fds``: (fd, events) of those ready within timeout s."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return poller.poll(int(timeout * 1000))


class Goodput:
    """Goodput of one read over a worker's connections: per connection, bytes / seconds
    from the read's start to its last byte (this host's wall clock, so the orchestrator
    can place it beside other hosts'). Kept as sums, minimum and maximum, so workers'
    and hosts' summaries merge exactly (:func:`merge_transfer`)."""

    def __init__(self, per_connection: int) -> None:
        self.bytes = per_connection
        self.started = time.time()
        self.finished = self.started
        self.count = 0
        self.sum = self.sumsq = 0.0
        self.min = self.max = None  # type: float | None

    def done(self) -> None:
        """A connection received its last byte now."""
        self.finished = time.time()
        rate = self.bytes / max(self.finished - self.started, 1e-6)
        self.count += 1
        self.sum += rate
        self.sumsq += rate * rate
        self.min = rate if self.min is None else min(self.min, rate)
        self.max = rate if self.max is None else max(self.max, rate)

    def summary(self) -> dict:
        if not self.count:
            return {}
        return {"connections": self.count, "bytes": self.bytes * self.count,
                "started": self.started, "finished": self.finished, "sum": self.sum,
                "sumsq": self.sumsq, "min": self.min, "max": self.max}


def merge_transfer(a: dict, b: dict) -> dict:
    """Two goodput summaries (workers of a side) as one."""
    if not a or not b:
        return dict(a or b)
    return {"connections": a["connections"] + b["connections"], "bytes": a["bytes"] + b["bytes"],
            "started": min(a["started"], b["started"]),
            "finished": max(a["finished"], b["finished"]), "sum": a["sum"] + b["sum"],
            "sumsq": a["sumsq"] + b["sumsq"], "min": min(a["min"], b["min"]),
            "max": max(a["max"], b["max"])}


class Worker:
    """One process holding a share of the connections."""

    def __init__(self, cfg: dict, share: list, listeners: dict, chan: socket.socket) -> None:
        self.cfg = cfg
        self.share = share
        self.listeners = listeners
        self.chan = chan
        self.out = chan.makefile("w", buffering=1)
        self.fds: list = []  # connected sockets, as raw descriptors during the ramp
        self._socks: list | None = None
        self.pending: dict = {}  # socket -> number of bytes still to write
        self.flusher: threading.Thread | None = None
        self.reader: threading.Thread | None = None
        self.background_error: str | None = None
        self.transfer: dict | None = None  # the last read's goodput, until replied
        self.deferred: list = []  # connect with accept=false: [[port, count]] to accept later
        self.epoll = select.epoll() if cfg.get("server_model") == "epoll" else None
        self.stall = float(cfg.get("stall", 30))
        self.beat_at = 0.0  # when a foreground transfer last said it is alive

    def emit(self, obj: dict) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def beat(self, op: str) -> None:
        """Say "alive" (a progress line of 0) every third of the stall time while a
        foreground transfer lasts: one that still moves data however slowly (a sender
        whose congestion control came out of memory pressure pacing at a few KB/s) is not
        a stalled side; the transfer itself fails after ``stall`` s with no data at all."""
        now = time.monotonic()
        if now - self.beat_at >= max(0.1, self.stall / 3):
            self.beat_at = now
            self.emit({"progress": 0, "op": op})

    def serve(self) -> None:
        for line in self.chan.makefile("r"):
            msg = json.loads(line)
            op = msg["op"]
            if op == "exit":
                break
            fault = self.cfg.get("fault") or {}
            if fault.get("op") == op:  # test hook (orchestrator/faults.py)
                if fault.get("kind") == "crash":
                    os._exit(3)
                time.sleep(3600)
            try:
                reply = getattr(self, "op_" + op)(msg)
                self.emit({"ok": True, "op": op, **reply})
            except Exception as exc:  # reported to the orchestrator, which aborts the run
                self.emit({"ok": False, "op": op, "error": describe(exc)})

    @property
    def socks(self) -> list:
        """Socket objects, made on first use: the ramp keeps only descriptors (faster)."""
        if self._socks is None or len(self._socks) != len(self.fds):
            self._socks = [socket.socket(fileno=fd) for fd in self.fds]
        return self._socks

    def op_connect(self, msg: dict) -> dict:
        """Connect (client) or accept (server) msg["plan"]: [[port, count], ...]."""
        plan = msg.get("plan", self.share)
        if self.cfg["role"] == "server":
            if msg.get("accept") is False:  # leave them in the accept queue
                self.deferred += plan
                return {"connections": 0, "deferred": sum(c for _, c in plan)}
            return self._accept(plan)
        peer = self.cfg["peer"]
        fam = family_of(peer)
        src = self.cfg.get("address")
        done = 0
        # The hot loop of the ramp: raw _socket objects and local names keep Python's share
        # of each connect small next to the kernel's (see bench/ramp_vs_c.py).
        new_socket, stream, append = _socket.socket, socket.SOCK_STREAM, self.fds.append
        every = PROGRESS_EVERY
        started = time.monotonic()
        for port, count in plan:
            target = (peer, port)
            for _ in range(count):
                s = new_socket(fam, stream)
                try:
                    s.connect(target)  # blocking: a stall is caught by the orchestrator
                except OSError as exc:
                    s.close()
                    raise OSError(exc.errno, f"connect to {peer}:{port} from {src} "
                                  f"(after {done} connections): {exc.strerror or exc}") from None
                append(s.detach())
                done += 1
                if done % every == 0:
                    self.emit({"progress": every, "op": "connect"})
        self.emit({"progress": done % every, "op": "connect"})
        # CLOCK_MONOTONIC is one clock for every process on this kernel: the side merges
        # its workers' spans into one (bench/ramp_vs_c.py compares it with a C loop's).
        return {"connections": done, **({"span": [started, time.monotonic()]} if done else {})}

    def _accept(self, plan: list) -> dict:
        done = 0
        append, every = self.fds.append, PROGRESS_EVERY
        register = self.epoll.register if self.epoll is not None else None
        for port, count in plan:
            accept = self.listeners[port]._accept  # (fd, address): no socket object per call
            for _ in range(count):
                fd = accept()[0]
                append(fd)
                if register is not None:  # SERVER=epoll: one epitem per socket, as real servers
                    register(fd, select.EPOLLIN)
                done += 1
                if done % every == 0:
                    self.emit({"progress": every, "op": "connect"})
        self.emit({"progress": done % every, "op": "connect"})
        return {"connections": done}

    def op_accept(self, msg: dict) -> dict:
        """Accept the connections a `connect` with accept=false left in the accept queue."""
        plan, self.deferred = self.deferred, []
        return self._accept(plan)

    def op_send(self, msg: dict) -> dict:
        """Write msg["bytes"] on every connection.

        What the kernel will not take yet stays pending here and is written as room opens
        (the peer reads), by a background thread. With "background", return at once.
        """
        nbytes = int(msg["bytes"])
        first_sent = time.time()  # the first write follows at once: every socket is writable
        for s in self.socks:
            s.setblocking(False)
            self.pending[s] = self.pending.get(s, 0) + nbytes
        if not msg.get("background"):
            self._flush(idle=0.5)
        left = sum(self.pending.values())
        if left and (self.flusher is None or not self.flusher.is_alive()):
            self.flusher = threading.Thread(target=self._guard, args=(self._flush,), daemon=True)
            self.flusher.start()
        return {"written": nbytes * len(self.fds) - left, "pending": left,
                **({"first_sent": first_sent} if self.fds else {})}

    def _flush(self, idle: float | None = None) -> None:
        """Write pending bytes; stop when done, or after `idle` s without progress."""
        self.beat_at = time.monotonic()
        poller = select.poll()
        fds = {}
        for s in list(self.pending):
            fds[s.fileno()] = s
            poller.register(s, select.POLLOUT)
        last = time.monotonic()
        while self.pending:
            progressed = False
            for fd, _ in poller.poll(100):
                s = fds.get(fd)
                left = self.pending.get(s)
                if left is None:
                    continue
                try:
                    sent = s.send(CHUNK[:min(left, len(CHUNK))])
                except BlockingIOError:
                    continue
                except OSError:
                    self.pending.pop(s, None)  # closed under us (close step): nothing to send
                    continue
                progressed = progressed or sent > 0
                if sent == left:
                    del self.pending[s]
                    poller.unregister(fd)
                else:
                    self.pending[s] = left - sent
            if progressed:
                last = time.monotonic()
            elif idle is not None and time.monotonic() - last > idle:
                return
            if idle is not None:  # the foreground send: the orchestrator waits on it
                self.beat("send")

    def op_read(self, msg: dict) -> dict:
        """Read msg["bytes"] from every connection; "rate" limits bytes/s per connection.

        The reply (or, for a background read, the next join's) carries "transfer": the
        goodput of each connection, from this read's start to its last byte (see
        :class:`Goodput`)."""
        want, rate = int(msg["bytes"]), float(msg.get("rate") or 0)
        if msg.get("background"):
            self.reader = threading.Thread(target=self._guard, args=(self._read, want, rate),
                                           daemon=True)
            self.reader.start()
            return {"reading": want * len(self.fds)}
        return {"read": self._read(want, rate, beat=True), **self._transfer()}

    def _transfer(self) -> dict:
        done, self.transfer = self.transfer, None
        return {"transfer": done} if done else {}

    def _read(self, want: int, rate: float, beat: bool = False) -> int:
        """Read ``want`` bytes from every connection; ``beat``: a foreground read, which
        says it is alive while it lasts (a background one has the join say so)."""
        self.beat_at = time.monotonic()
        remaining = {}
        for s in self.socks:
            s.setblocking(False)
            remaining[s.fileno()] = [s, want]
        goodput = Goodput(want)
        if rate and remaining:
            total = self._read_paced(remaining, rate, goodput, beat)
        else:
            total = self._read_all(remaining, goodput, beat)
        self.transfer = goodput.summary()
        return total

    def _receive(self, entry: list, size: int, goodput: "Goodput") -> int:
        """One recv of at most size bytes (0: nothing there yet); the last byte is timed."""
        try:
            data = entry[0].recv(size)
        except BlockingIOError:
            return 0
        if not data:
            raise ConnectionError(f"peer closed a connection with {entry[1]} bytes unread")
        entry[1] -= len(data)
        if entry[1] == 0:
            goodput.done()
        return len(data)

    def _read_all(self, remaining: dict, goodput: "Goodput", beat: bool = False) -> int:
        poller = select.poll()
        for fd in remaining:
            poller.register(fd, select.POLLIN)
        total, last = 0, time.monotonic()
        while remaining:
            for fd, _ in poller.poll(200):
                entry = remaining.get(fd)
                if entry is None:
                    continue
                got = self._receive(entry, min(entry[1], 1 << 20), goodput)
                total += got
                if got:
                    last = time.monotonic()
                if entry[1] == 0:
                    del remaining[fd]
                    poller.unregister(fd)
            if beat:
                self.beat("read")
            if time.monotonic() - last > self.stall:
                raise TimeoutError(f"{len(remaining)} connections delivered no data for "
                                   f"{self.stall:.0f} s (read {total} bytes)")
        return total

    def _read_paced(self, remaining: dict, rate: float, goodput: "Goodput",
                    beat: bool = False) -> int:
        """Each connection read at ``rate`` bytes/s from the start: by time t it has read
        at most rate * t. Reads come in chunks of 20 ms' worth (at least 4 KiB; 20 us per
        connection's worth with many connections, so a pass over them all stays cheap next
        to its period): a fast rate costs few system calls and a slow one keeps its pace."""
        chunk = max(4096, int(rate * max(0.02, len(remaining) * 2e-5)))
        done = dict.fromkeys(remaining, 0)  # bytes read per connection
        total, start = 0, time.monotonic()
        last = start
        while remaining:
            elapsed = time.monotonic() - start
            due = [fd for fd in remaining
                   if rate * elapsed - done[fd] >= min(chunk, remaining[fd][1])]
            if not due:  # the next connection's chunk is due when the slowest one's is
                behind = min(done[fd] for fd in remaining)
                time.sleep(min(max(0.001, (behind + chunk) / rate - elapsed), self.stall / 3))
                last = time.monotonic()
                if beat:
                    self.beat("read")
                continue
            ready = {fd for fd, _ in _poll_in(due, 0.02)}
            for fd in due:
                if fd not in ready:
                    continue
                entry = remaining[fd]
                size = min(entry[1], int(rate * elapsed) - done[fd], 1 << 20)
                got = self._receive(entry, max(1, size), goodput)
                done[fd] += got
                total += got
                if got:
                    last = time.monotonic()
                if entry[1] == 0:
                    del remaining[fd]
            if beat:
                self.beat("read")
            if time.monotonic() - last > self.stall:
                raise TimeoutError(f"{len(remaining)} connections delivered no data for "
                                   f"{self.stall:.0f} s (read {total} bytes)")
        return total

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # reported by the next join
            self.background_error = describe(exc)

    def op_join(self, msg: dict) -> dict:
        """Wait for background sends and reads to finish.

        A transfer over a slow link outlasts the orchestrator's stall timer (--stall): while
        waiting, say so every third of it (a "progress" line of 0), so only a side that is
        silent is taken for stalled. The transfers watch themselves: a read that gets no
        data for ``stall`` s fails, a send stops, and the join ends."""
        beat = max(0.1, self.stall / 3)
        for thread in (self.flusher, self.reader):
            while thread is not None and thread.is_alive():
                thread.join(beat)
                if thread.is_alive():
                    self.emit({"progress": 0, "op": "join"})
        self.flusher = self.reader = None
        if self.background_error:
            error, self.background_error = self.background_error, None
            raise RuntimeError(error)
        return {"pending": sum(self.pending.values()), **self._transfer()}

    def op_abort(self, msg: dict) -> dict:
        """Close every connection with a reset (SO_LINGER 0): no FIN, no TIME-WAIT."""
        for s in self.socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        return self.op_close(msg)

    def op_close(self, msg: dict) -> dict:
        count = len(self.fds)
        self.pending.clear()
        for s in self.socks:
            s.close()
        self.fds, self._socks = [], None
        return {"closed": count}
