#!/usr/bin/env python3
"""tcplab side script: holds one side (server or client) of the lab's connections.

Runs on a lab host with nothing but python3 (standard library only). It is driven
by the orchestrator over stdin/stdout, one JSON object per line:

    stdin, first line: {"role": "server"|"client", "address": ..., "peer": ...,
                        "shards": [[port, count], ...], "stall": seconds}
    then operations:   {"op": "prepare"} {"op": "connect"} {"op": "send", "bytes": B}
                       {"op": "read", "bytes": B} {"op": "close"} {"op": "abort"}
                       {"op": "exit"}
    stdout:            {"hello": {...}} once, then for each operation any number of
                       {"progress": done, "op": ...} and one {"ok": true|false, ...}

Modules: side_worker.py (one worker process: connect, send, read, close), side_timeline.py
(the host's own sockstat/Slab samples); this file is the main process (listeners, workers,
relaying operations).

Connections are sharded over forked worker processes, each below the per-process
file descriptor limit, so one side can hold more sockets than one process may.
A worker exits when its parent goes away; the side exits when stdin closes.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import time

# Helper modules beside this file: found through sys.path[0] when run from a checkout, and
# defined in sys.modules by the one program lab hosts get (orchestrator/resources.py).
from side_timeline import Timeline
from side_worker import Worker, describe, family_of, merge_transfer

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
        transfer: dict = {}
        for reply in replies:
            transfer = merge_transfer(transfer, reply.get("transfer") or {})
        if transfer:
            merged["transfer"] = transfer
        sent = [r["first_sent"] for r in replies if r.get("first_sent")]
        if sent:
            merged["first_sent"] = min(sent)
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
                         "python": sys.version.split()[0],
                         "page_size": os.sysconf("SC_PAGE_SIZE")}})
    try:
        side.run()
    finally:
        side.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
