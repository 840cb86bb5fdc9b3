"""Two network namespaces joined by a veth, with scenarios/delayline.py on either end: the
lab of tests/integration/test_delayline.py and bench/delayline.py.

Also the traffic tools they run inside the namespaces (standard library only, so the file
runs as a script there: ``python3 delaylab.py TOOL ARGS``, each prints one JSON line):

    echo PORT                         UDP echo server (until killed)
    ping ADDR PORT COUNT INTERVAL     UDP round trips: {"rtt_ms": [...], "lost": n}
    sink PORT                         TCP receiver: {"samples": [[t, bytes], ...]} every 50 ms
    send ADDR PORT SECONDS            TCP bulk sender
    flood ADDR PORT PPS SIZE SECONDS  UDP datagrams carrying (seq, CLOCK_MONOTONIC send time)
    meter PORT SECONDS                UDP receiver of flood: counts, one-way delay percentiles

CLOCK_MONOTONIC is one clock for every network namespace, so one-way delays are exact.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DELAYLINE = ROOT / "scenarios" / "delayline.py"
IPTABLES = os.environ.get("DELAYLAB_IPTABLES", "iptables")
PROBE = struct.Struct("!QQ")  # sequence number, send time (ns)


class LinkLab:
    """Namespaces ``<tag>a`` (198.18.254.1) and ``<tag>b`` (198.18.254.2) joined by a veth;
    everything is removed by close(), rules included (they live in the namespaces).
    ``python`` runs the delay line (the traffic tools run with this interpreter)."""

    A_ADDR, B_ADDR = "198.18.254.1", "198.18.254.2"

    def __init__(self, tag: str, python: str = sys.executable) -> None:
        self.tag, self.python = tag, python
        self.ns = {"a": tag + "a", "b": tag + "b"}
        self.dev = {"a": tag + "va", "b": tag + "vb"}
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> LinkLab:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> None:
        a, b = self.ns["a"], self.ns["b"]
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", self.dev["a"], "netns", a, "type", "veth", "peer", "name",
           self.dev["b"], "netns", b)
        for side, addr in (("a", self.A_ADDR), ("b", self.B_ADDR)):
            ns = self.ns[side]
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", self.dev[side])
            sh("ip", "-n", ns, "link", "set", self.dev[side], "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec(self, side: str, *argv: str, **popen: object) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[side], *argv], **popen)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def delay_line(self, side: str, tmp: Path, *options: str, queue: int = 3,
                   rule: bool = True) -> DelayLineProcess:
        """Start delayline.py in ``side``'s namespace on PREROUTING of its veth; return once
        it has bound the queue (its --ready file)."""
        ready, stats = tmp / ("ready-" + side), tmp / ("stats-" + side + ".json")
        for old in (ready, stats):
            if old.exists():
                old.unlink()
        proc = self.exec(side, self.python, str(DELAYLINE), "--queue-num", str(queue), *options,
                         "--ready", str(ready), "--stats", str(stats),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"delayline.py exited {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("delayline.py did not bind its queue within 30 s")
            time.sleep(0.02)
        if rule:
            sh("ip", "netns", "exec", self.ns[side], IPTABLES, "-t", "mangle", "-A", "PREROUTING",
               "-i", self.dev[side], "-j", "NFQUEUE", "--queue-num", str(queue))
        return DelayLineProcess(proc, stats)

    def tool(self, side: str, *args: object, rt: bool = False) -> subprocess.Popen:
        """Start one of this file's traffic tools in ``side``'s namespace; ``rt``: at
        SCHED_FIFO priority 5, below the delay line's 10, so that a busy machine does not
        delay its time stamps (only for tools that mostly sleep)."""
        chrt = ["chrt", "-f", "5"] if rt else []
        return self.exec(side, *chrt, sys.executable, __file__, *map(str, args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class DelayLineProcess:
    def __init__(self, proc: subprocess.Popen, stats: Path) -> None:
        self.proc, self.stats_path = proc, stats

    def stats(self) -> dict:
        """Ask for the statistics (SIGUSR1) and read them once rewritten."""
        before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.stats_path.exists() and self.stats_path.stat().st_mtime_ns != before:
                return json.loads(self.stats_path.read_text())
            time.sleep(0.01)
        raise RuntimeError("delayline.py wrote no statistics within 10 s of SIGUSR1")

    def stop(self) -> dict:
        """SIGTERM; the exit code must be 0; the final statistics."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        if self.proc.returncode != 0:
            raise RuntimeError(f"delayline.py exited {self.proc.returncode}: {err}")
        return json.loads(self.stats_path.read_text())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sh(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError("{} failed: {}".format(" ".join(argv), proc.stderr.strip()))


def result(proc: subprocess.Popen, timeout: float = 60) -> dict:
    """The JSON line a traffic tool printed; it must have exited 0."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"traffic tool exited {proc.returncode}: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def wait_listening(lab: LinkLab, side: str, port: int, udp: bool = False) -> None:
    """Until a server started with lab.tool listens (ss inside the namespace)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", lab.ns[side], "ss", "-Hln" + ("u" if udp else "t"),
                              f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {lab.ns[side]}")


# -- traffic tools (run inside a namespace) -------------------------------------------------

def echo(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def ping(addr: str, port: int, count: int, interval: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    rtts, lost = [], []
    for seq in range(count):
        sent = time.monotonic_ns()
        sock.sendto(PROBE.pack(seq, sent), (addr, port))
        try:
            while True:
                got, _ = PROBE.unpack(sock.recv(64))
                if got == seq:
                    break
            rtts.append((time.monotonic_ns() - sent) / 1e6)
        except TimeoutError:
            lost.append(seq)
        time.sleep(interval)
    return {"rtt_ms": rtts, "lost": lost}


def sink(port: int) -> dict:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    conn, _ = server.accept()
    start, total, samples, next_sample = time.monotonic(), 0, [], 0.0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        total += len(data)
        now = time.monotonic() - start
        if now >= next_sample:
            samples.append([round(now, 4), total])
            next_sample = now + 0.05
    samples.append([round(time.monotonic() - start, 4), total])
    return {"samples": samples, "bytes": total}


def send(addr: str, port: int, seconds: float) -> dict:
    sock = socket.create_connection((addr, port))
    chunk, total, end = b"x" * 65536, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        total += sock.send(chunk)
    sock.close()
    return {"bytes": total}


def flood(addr: str, port: int, pps: float, size: int, seconds: float) -> dict:
    """Datagrams at ``pps`` (paced in bursts of 1 ms), each (seq, send time) + padding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad, seq, start = b"\0" * max(0, size - 28 - PROBE.size), 0, time.monotonic_ns()
    total = int(pps * seconds)
    while seq < total:
        target = int((time.monotonic_ns() - start) / 1e9 * pps) + 1
        while seq < min(target, total):
            try:
                sock.sendto(PROBE.pack(seq, time.monotonic_ns()) + pad, (addr, port))
                seq += 1
            except BlockingIOError:
                break
        time.sleep(0.001)
    return {"sent": seq, "seconds": (time.monotonic_ns() - start) / 1e9}


def meter(port: int, seconds: float) -> dict:
    """Receive a flood for ``seconds`` (then 1 s of quiet ends it): one-way delays (µs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(seconds)
    delays, reordered, highest, first = [], 0, -1, None
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        now = time.monotonic_ns()
        seq, sent = PROBE.unpack_from(data)
        delays.append((now - sent) // 1000)
        first = first or now
        reordered += seq < highest
        highest = max(highest, seq)
        sock.settimeout(1.0)
    delays.sort()
    n = len(delays)

    def pct(p: float) -> int | None:
        return delays[min(n - 1, int(p / 100 * n))] if n else None
    return {"received": n, "reordered": reordered, "min_us": delays[0] if n else None,
            "p50_us": pct(50), "p99_us": pct(99), "p99_9_us": pct(99.9),
            "max_us": delays[-1] if n else None}


TOOLS = {"echo": (echo, (int,)), "ping": (ping, (str, int, int, float)), "sink": (sink, (int,)),
         "send": (send, (str, int, float)), "flood": (flood, (str, int, float, int, float)),
         "meter": (meter, (int, float))}

if __name__ == "__main__":
    func, types = TOOLS[sys.argv[1]]
    print(json.dumps(func(*(t(v) for t, v in zip(types, sys.argv[2:], strict=False)))), flush=True)
