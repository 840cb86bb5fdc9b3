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
CHUNK = b"x" * (1 << 20)  # what senders write, sliced: no per-connection payload copies
LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {l_onoff 1, l_linger 0}: close resets


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return f"{exc} (file descriptor limit reached; lower the per-worker share)"
    return f"{type(exc).__name__}: {exc}"


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
        self.deferred: list = []  # connect with accept=false: [[port, count]] to accept later
        self.epoll = select.epoll() if cfg.get("server_model") == "epoll" else None
        self.stall = float(cfg.get("stall", 30))

    def emit(self, obj: dict) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

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
        for s in self.socks:
            s.setblocking(False)
            self.pending[s] = self.pending.get(s, 0) + nbytes
        if not msg.get("background"):
            self._flush(idle=0.5)
        left = sum(self.pending.values())
        if left and (self.flusher is None or not self.flusher.is_alive()):
            self.flusher = threading.Thread(target=self._guard, args=(self._flush,), daemon=True)
            self.flusher.start()
        return {"written": nbytes * len(self.fds) - left, "pending": left}

    def _flush(self, idle: float | None = None) -> None:
        """Write pending bytes; stop when done, or after `idle` s without progress."""
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

    def op_read(self, msg: dict) -> dict:
        """Read msg["bytes"] from every connection; "rate" limits bytes/s per connection."""
        want, rate = int(msg["bytes"]), float(msg.get("rate") or 0)
        if msg.get("background"):
            self.reader = threading.Thread(target=self._guard, args=(self._read, want, rate),
                                           daemon=True)
            self.reader.start()
            return {"reading": want * len(self.fds)}
        return {"read": self._read(want, rate)}

    def _read(self, want: int, rate: float) -> int:
        remaining = {}
        poller = select.poll()
        for s in self.socks:
            s.setblocking(False)
            remaining[s.fileno()] = [s, want]
            poller.register(s, select.POLLIN)
        total, start = 0, time.monotonic()
        last = start
        budget = rate * len(remaining) if rate else 0.0  # bytes/s for the whole worker
        while remaining:
            if budget:
                allowed = budget * (time.monotonic() - start) - total
                if allowed < 4096:
                    time.sleep(min(0.05, (4096 - allowed) / budget))
                    last = time.monotonic()
                    continue
            for fd, _ in poller.poll(200):
                entry = remaining.get(fd)
                if entry is None:
                    continue
                size = min(entry[1], 1 << 20)
                if budget:
                    size = max(1, min(size, int(budget * (time.monotonic() - start) - total)))
                try:
                    data = entry[0].recv(size)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError(f"peer closed a connection with {entry[1]} bytes unread")
                entry[1] -= len(data)
                total += len(data)
                last = time.monotonic()
                if entry[1] == 0:
                    del remaining[fd]
                    poller.unregister(fd)
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
        """Wait for background sends and reads to finish."""
        for thread in (self.flusher, self.reader):
            if thread is not None:
                thread.join()
        self.flusher = self.reader = None
        if self.background_error:
            error, self.background_error = self.background_error, None
            raise RuntimeError(error)
        return {"pending": sum(self.pending.values())}

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
