#!/usr/bin/env python3
"""tcplab side script: holds one side (server or client) of the lab's connections.

Runs on a lab host with nothing but python3 (standard library only). It is driven
by the orchestrator over stdin/stdout, one JSON object per line:

    stdin, first line: {"role": "server"|"client", "address": ..., "peer": ...,
                        "shards": [[port, count], ...], "stall": seconds}
    then operations:   {"op": "prepare"} {"op": "connect"} {"op": "send", "bytes": B}
                       {"op": "read", "bytes": B} {"op": "close"} {"op": "exit"}
    stdout:            {"hello": {...}} once, then for each operation any number of
                       {"progress": done, "op": ...} and one {"ok": true|false, ...}

Connections are sharded over forked worker processes, each below the per-process
file descriptor limit, so one side can hold more sockets than one process may.
A worker exits when its parent goes away; the side exits when stdin closes.
"""

from __future__ import annotations

import _socket
import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import sys
import threading
import time

PROGRESS_EVERY = 2000
CHUNK = b"x" * (1 << 20)  # what senders write, sliced: no per-connection payload copies
FD_MARGIN = 64  # descriptors a worker keeps for itself (pipes, stdio, listeners)
SPLIT_FROM = 2000  # from this many connections a side ramps with one worker per CPU


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when our parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_share(shards: list) -> int:
    """Connections per worker when the lab does not say: an even share per CPU.

    One blocking connect loop leaves the other CPUs idle while CPython's per-call cost
    adds to the kernel's; a loop per CPU keeps the ramp at the kernel's pace (measured
    against a C loop by bench/ramp_vs_c.py). Small runs keep one worker.
    """
    total = sum(count for _, count in shards)
    if total < SPLIT_FROM:
        return total or 1
    return -(-total // cpus())


def split_shards(shards: list, cap: int) -> list:
    """Split [[port, count], ...] into per-worker lists, each totalling at most cap."""
    workers, current, room = [], [], cap
    for port, count in shards:
        while count > 0:
            take = min(count, room)
            current.append([port, take])
            count -= take
            room -= take
            if room == 0:
                workers.append(current)
                current, room = [], cap
    if current:
        workers.append(current)
    return workers


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

    def op_close(self, msg: dict) -> dict:
        count = len(self.fds)
        self.pending.clear()
        for s in self.socks:
            s.close()
        self.fds, self._socks = [], None
        return {"closed": count}


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return f"{exc} (file descriptor limit reached; lower the per-worker share)"
    return f"{type(exc).__name__}: {exc}"


SAMPLE_KEYS = ("inuse", "tw", "orphan", "mem")
MAX_SAMPLES = 200_000  # about 5.5 hours at 10 Hz: older samples are dropped beyond it


class Timeline:
    """Samples this host's own kernel: /proc/net/sockstat's TCP line (this network
    namespace) and meminfo Slab, every ``interval`` s, in a thread of the side process.

    Used where the orchestrator cannot read the host's /proc itself (VMs, remote
    hosts). Times are this host's wall clock; the reply to the ``timeline`` operation
    carries the clock's reading (``now``) so the orchestrator can shift them onto its own.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.columns: dict = {"t": [], "slab_kb": [], **{k: [] for k in SAMPLE_KEYS}}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        with open("/proc/net/sockstat") as fh:
            tcp = next((line.split()[1:] for line in fh if line.startswith("TCP:")), [])
        values = dict(zip(tcp[::2], (int(v) for v in tcp[1::2])))
        with open("/proc/meminfo") as fh:
            slab = next((int(line.split()[1]) for line in fh if line.startswith("Slab:")), 0)
        cols = self.columns
        if len(cols["t"]) >= MAX_SAMPLES:
            for column in cols.values():
                del column[0]
        cols["t"].append(round(time.time(), 3))
        cols["slab_kb"].append(slab)
        for key in SAMPLE_KEYS:
            cols[key].append(values.get(key, 0))

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.sample()
            except (OSError, ValueError):
                pass

    def reply(self) -> dict:
        return {"now": time.time(), "interval": self.interval,
                "columns": {k: list(v) for k, v in self.columns.items()}}


class Side:
    """The side's main process: owns listeners, forks workers, relays operations."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.workers: list = []  # (pid, chan, reader)
        self.listeners: dict = {}
        interval = float(cfg.get("sample") or 0)
        self.timeline = Timeline(interval) if interval > 0 else None

    def emit(self, obj: dict) -> None:
        if "ok" in obj:  # a reply: stamped, so the orchestrator can read this host's clock
            obj = dict(obj, clock=time.time())
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def prepare(self) -> dict:
        hard = raise_nofile()
        # Each worker also holds every listener and stdio: keep room for them.
        margin = FD_MARGIN + len(self.cfg["shards"])
        cap = int(self.cfg.get("per_worker") or 0) or default_share(self.cfg["shards"])
        cap = max(1, min(cap, hard - margin))
        shares = split_shards(self.cfg["shards"], cap)
        self.room = []  # per worker: {port: connections it may still make or accept}
        for share in shares:
            room: dict = {}
            for port, count in share:
                room[port] = room.get(port, 0) + count
            self.room.append(room)
        if self.cfg["role"] == "server":
            backlog = int(open("/proc/sys/net/core/somaxconn").read())
            addr = self.cfg["address"]
            for port, _ in self.cfg["shards"]:
                lsock = socket.socket(family_of(addr), socket.SOCK_STREAM)
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lsock.bind((addr, port))
                lsock.listen(backlog)
                self.listeners[port] = lsock
        for share in shares:
            parent, child = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                parent.close()
                for _, other, _ in self.workers:  # siblings' channels: not ours to hold
                    other.close()
                die_with_parent()
                code = 0
                try:
                    Worker(self.cfg, share, self.listeners, child).serve()
                except BaseException:
                    code = 1
                os._exit(code)
            child.close()
            self.workers.append((pid, parent, None))
        return {"workers": len(self.workers), "per_worker": cap, "nofile": hard,
                "pids": [w[0] for w in self.workers]}

    def plan_connect(self, ports: dict) -> list:
        """Split {port: count} over the workers within what each still has room for.

        Both sides get the same per-port counts, so every accept has its connect even
        when a ramp is taken in levels.
        """
        plans = [[] for _ in self.workers]
        for port, count in sorted((int(p), c) for p, c in ports.items()):
            for i, room in enumerate(self.room):
                take = min(count, room.get(port, 0))
                if take:
                    plans[i].append([port, take])
                    room[port] -= take
                    count -= take
            if count:
                raise ValueError(f"port {port}: {count} connections beyond this side's shards")
        return plans

    def relay(self, msg: dict) -> dict:
        op = msg["op"]
        plans = self.plan_connect(msg["ports"]) if op == "connect" and "ports" in msg else None
        for i, (_, chan, _) in enumerate(self.workers):
            out = dict(msg, plan=plans[i]) if plans is not None else msg
            chan.sendall((json.dumps(out) + "\n").encode())
        replies, errors = [], []
        waiting = {w[1].fileno(): w for w in self.workers}
        buffers = {fd: b"" for fd in waiting}
        while waiting:
            ready, _, _ = select.select(list(waiting), [], [])
            for fd in ready:
                pid, chan, _ = waiting[fd]
                data = chan.recv(65536)
                if not data:
                    errors.append(f"worker {pid} died during {op}")
                    del waiting[fd]
                    continue
                buffers[fd] += data
                *lines, buffers[fd] = buffers[fd].split(b"\n")
                for line in lines:
                    reply = json.loads(line)
                    if "progress" in reply:
                        self.emit(reply)
                    elif reply.get("ok"):
                        replies.append(reply)
                        del waiting[fd]
                    else:
                        errors.append(f"worker {pid}: {reply['error']}")
                        del waiting[fd]
        if errors:
            return {"ok": False, "op": op, "error": "; ".join(errors[:3])}
        merged: dict = {"ok": True, "op": op}
        for reply in replies:
            for key, value in reply.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    merged[key] = merged.get(key, 0) + value
        spans = [r["span"] for r in replies if r.get("span")]
        if spans:  # from the first worker's first connect to the last one's last
            merged["span"] = [min(s[0] for s in spans), max(s[1] for s in spans)]
        return merged

    def shutdown(self) -> None:
        for _, chan, _ in self.workers:
            try:
                chan.sendall(b'{"op": "exit"}\n')
            except OSError:
                pass
        for pid, _, _ in self.workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.workers = []

    def run(self) -> None:
        for line in sys.stdin:
            msg = json.loads(line)
            op = msg.get("op")
            if op == "exit":
                break
            try:
                if op == "prepare":
                    reply = {"ok": True, "op": op, **self.prepare()}
                elif op == "timeline":
                    if self.timeline is None:
                        raise ValueError("this side was started without sampling")
                    reply = {"ok": True, "op": op, **self.timeline.reply()}
                else:
                    reply = self.relay(msg)
            except Exception as exc:
                reply = {"ok": False, "op": op, "error": describe(exc)}
            self.emit(reply)
        self.shutdown()


def main() -> int:
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    first = sys.stdin.readline()
    if not first:
        return 1
    cfg = json.loads(first)
    side = Side(cfg)
    side.emit({"hello": {"pid": os.getpid(), "role": cfg["role"], "kernel": os.uname().release,
                         "python": sys.version.split()[0]}})
    try:
        side.run()
    finally:
        side.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
