#!/usr/bin/env python3
"""Capture real /proc and `ss` output for the parser tests of tcplab.

Run as root on the kernel you want test data for:

    python3 tests/data/capture.py --out tests/data -k 2000

Standard library only. It creates two network namespaces (a server and a
client) joined by a veth pair with addresses from the benchmarking range
198.18.0.0/15, runs one small helper process in each (this same file, with
the hidden sub-commands ``_serve`` and ``_connect``), drives them through
the connection states and saves what the kernel reports at each step:

  run 1  idle:       baseline -> K ESTABLISHED -> client closes (client
                     FIN-WAIT-2, server CLOSE-WAIT) -> server closes
                     (client TIME-WAIT)
  run 2  unread-13:  K connections, the client writes 13 bytes on each, the
                     server never reads them
  run 3  sendq:      a few connections, the client writes until its send
                     buffer is full, the server never reads

Every run uses its own pair of namespaces, so TIME-WAIT sockets of run 1 do
not leak into run 2. Everything it creates (namespaces, the veth pair, the
helper processes) is removed on exit, also after an error or Ctrl-C; it
never touches anything it did not create.

`ss` runs as ``ss -tmnia`` (one file ``ss -tmniaH``): without ``-a`` ss
hides LISTEN, SYN-RECV and TIME-WAIT sockets. The file names keep the
shorter ``ss-tmni-`` prefix. Its captures are trimmed to the first --keep
sockets (LISTEN sockets are always kept); the counts before trimming
(sockets per state, and sockets per skmem ``r`` value per state) go to
manifest.json. slabinfo and meminfo are saved whole.

Things to know when reading the data:
  * /proc/slabinfo and /proc/meminfo are global: they include everything
    else running on the host.
  * /proc/net/sockstat is read inside each namespace: inuse/tw are per
    namespace, alloc/orphan/mem are global.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
SERVER_ADDR = "198.18.0.1"
CLIENT_ADDR = "198.18.0.2"
PREFIX = 30
PORT = 5001
SS_STATES = {
    "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT",
    "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "UNKNOWN",
}


# --------------------------------------------------------------------------
# helpers run inside the namespaces; line protocol on stdin/stdout
# --------------------------------------------------------------------------

def _reply(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def serve(port: int) -> None:
    """Listen on *port*; commands: ``accept K``, ``close``, ``exit``."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(4096)
    conns: list[socket.socket] = []
    _reply("listening")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "accept":
            for _ in range(int(cmd[1])):
                conn, _addr = lsock.accept()
                conns.append(conn)
            _reply(f"accepted {len(conns)}")
        elif cmd[0] == "close":
            for conn in conns:
                conn.close()
            conns.clear()
            _reply("closed")
        elif cmd[0] == "exit":
            break
        else:
            _reply(f"error unknown command {cmd[0]}")
    for conn in conns:
        conn.close()
    lsock.close()


def connect(addr: str, port: int) -> None:
    """Commands: ``connect K B`` (K connections, write up to B bytes on each
    without blocking), ``close``, ``exit``."""
    socks: list[socket.socket] = []
    _reply("ready")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "connect":
            count, nbytes = int(cmd[1]), int(cmd[2])
            payload = b"x" * nbytes
            queued = 0
            for _ in range(count):
                s = socket.create_connection((addr, port))
                socks.append(s)
                if nbytes:
                    s.setblocking(False)
                    view = memoryview(payload)
                    while view:
                        try:
                            sent = s.send(view)
                        except BlockingIOError:
                            break
                        queued += sent
                        view = view[sent:]
                    s.setblocking(True)
            _reply(f"connected {len(socks)} queued {queued}")
        elif cmd[0] == "close":
            for s in socks:
                s.close()
            socks.clear()
            _reply("closed")
        elif cmd[0] == "exit":
            break
        else:
            _reply(f"error unknown command {cmd[0]}")
    for s in socks:
        s.close()


# --------------------------------------------------------------------------
# controller
# --------------------------------------------------------------------------

def run(cmd: list[str], check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Helper:
    """One helper process inside a namespace, driven line by line."""

    def __init__(self, netns: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float = 120.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"helper {self.proc.args} did not answer within {timeout}s")
        line = self.proc.stdout.readline().strip()
        if not line.startswith(word):
            raise RuntimeError(f"helper {self.proc.args}: expected {word!r}, got {line!r}")
        return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()  # our own child, by its pid
                self.proc.wait()


class NetnsPair:
    """Two namespaces joined by a veth pair; removed again by close()."""

    def __init__(self, tag: str) -> None:
        pid = os.getpid()
        self.server = f"tcplab-cap-{tag}-s-{pid}"
        self.client = f"tcplab-cap-{tag}-c-{pid}"
        self.created: list[str] = []
        self.veth_s = f"tcs{pid % 100000}"
        self.veth_c = f"tcc{pid % 100000}"

    def open(self) -> NetnsPair:
        for ns in (self.server, self.client):
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
        # create the pair directly inside the namespaces: nothing appears on the host
        run(["ip", "-n", self.server, "link", "add", self.veth_s, "type", "veth",
             "peer", "name", self.veth_c, "netns", self.client])
        for ns, dev, addr in ((self.server, self.veth_s, SERVER_ADDR),
                              (self.client, self.veth_c, CLIENT_ADDR)):
            run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return self

    def close(self) -> None:
        for ns in reversed(self.created):
            run(["ip", "netns", "del", ns], check=False)
        self.created.clear()


def read_proc(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def trim_ss(text: str, keep: int) -> tuple[str, dict]:
    """Keep the header, every LISTEN socket and the first *keep* other sockets."""
    header: list[str] = []
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            blocks[-1].append(line)
        elif not blocks and line.split()[0] not in SS_STATES:
            header.append(line)
        else:
            blocks.append([line])
    states: dict[str, int] = {}
    r_values: dict[str, dict[str, int]] = {}  # state -> skmem r value -> sockets
    out = list(header)
    kept = 0
    for block in blocks:
        state = block[0].split()[0]
        states[state] = states.get(state, 0) + 1
        m = re.search(r"skmem:\(r(\d+),", "\n".join(block))
        r = m.group(1) if m else "none"
        per_state = r_values.setdefault(state, {})
        per_state[r] = per_state.get(r, 0) + 1
        if state == "LISTEN" or kept < keep:
            out.extend(block)
            kept += state != "LISTEN"
    meta = {"sockets_total": len(blocks), "states_total": states,
            "skmem_r_total": r_values,
            "sockets_kept": kept + states.get("LISTEN", 0)}
    return "\n".join(out) + "\n", meta


class Capture:
    def __init__(self, out: Path, keep: int) -> None:
        self.out = out
        self.keep = keep
        self.manifest: dict = {
            "kernel": platform.release(),
            "ss_version": run(["ss", "-V"]).strip(),
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {},
        }

    def save(self, name: str, text: str, **meta: object) -> None:
        (self.out / name).write_text(text)
        self.manifest["files"][name] = meta
        print(f"  wrote {name}", file=sys.stderr)

    def global_files(self, tag: str, **meta: object) -> None:
        self.save(f"slabinfo-{tag}.txt", read_proc("/proc/slabinfo"), **meta)
        self.save(f"meminfo-{tag}.txt", read_proc("/proc/meminfo"), **meta)

    def sockstat(self, tag: str, ns: str, side: str, **meta: object) -> None:
        text = run(["ip", "netns", "exec", ns, "cat", "/proc/net/sockstat"])
        self.save(f"sockstat-{tag}-{side}.txt", text, side=side, **meta)

    def ss(self, name: str, ns: str, side: str, header: bool = True, **meta: object) -> None:
        # -a: without it ss hides LISTEN, SYN-RECV and TIME-WAIT sockets
        flags = "-tmnia" if header else "-tmniaH"
        text = run(["ip", "netns", "exec", ns, "ss", flags])
        trimmed, counts = trim_ss(text, self.keep)
        self.save(name, trimmed, side=side, command=f"ss {flags}", **counts, **meta)

    def slab_aliases(self) -> None:
        base = "/sys/kernel/slab"
        links: dict[str, str | None] = {}
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            links[name] = os.readlink(path) if os.path.islink(path) else None
        self.save("slab-aliases.json", json.dumps(links, indent=1, sort_keys=True) + "\n")


def settle(seconds: float) -> None:
    time.sleep(seconds)


def run_idle(cap: Capture, k: int) -> None:
    pair = NetnsPair("idle")
    helpers: list[Helper] = []
    try:
        pair.open()
        srv = Helper(pair.server, ["_serve", "--port", str(PORT)])
        helpers.append(srv)
        srv.expect("listening")
        cli = Helper(pair.client, ["_connect", "--addr", SERVER_ADDR, "--port", str(PORT)])
        helpers.append(cli)
        cli.expect("ready")
        settle(2)
        cap.global_files("baseline", connections=0)
        cap.sockstat("baseline", pair.server, "server", connections=0)
        cap.sockstat("baseline", pair.client, "client", connections=0)

        srv.send(f"accept {k}")
        cli.send(f"connect {k} 0")
        cli.expect("connected")
        srv.expect("accepted")
        settle(2)
        tag = f"established-{k}"
        cap.global_files(tag, connections=k)
        cap.sockstat(tag, pair.server, "server", connections=k)
        cap.sockstat(tag, pair.client, "client", connections=k)
        cap.ss("ss-tmni-established.txt", pair.server, "server", connections=k)
        cap.ss("ss-tmniH-established-client.txt", pair.client, "client", header=False,
               connections=k)

        cli.send("close")
        cli.expect("closed")
        settle(2)
        tag = f"closewait-{k}"
        cap.global_files(tag, connections=k)
        cap.sockstat(tag, pair.server, "server", connections=k)
        cap.sockstat(tag, pair.client, "client", connections=k)
        cap.ss("ss-tmni-closewait.txt", pair.server, "server", connections=k)
        cap.ss("ss-tmni-finwait2.txt", pair.client, "client", connections=k)

        srv.send("close")
        srv.expect("closed")
        settle(2)
        tag = f"timewait-{k}"
        cap.global_files(tag, connections=k)
        cap.sockstat(tag, pair.server, "server", connections=k)
        cap.sockstat(tag, pair.client, "client", connections=k)
        cap.ss("ss-tmni-timewait.txt", pair.client, "client", connections=k)
    finally:
        for h in helpers:
            h.stop()
        pair.close()


def run_unread(cap: Capture, k: int, nbytes: int) -> None:
    pair = NetnsPair("unrd")
    helpers: list[Helper] = []
    try:
        pair.open()
        srv = Helper(pair.server, ["_serve", "--port", str(PORT)])
        helpers.append(srv)
        srv.expect("listening")
        cli = Helper(pair.client, ["_connect", "--addr", SERVER_ADDR, "--port", str(PORT)])
        helpers.append(cli)
        cli.expect("ready")
        settle(2)
        cap.global_files(f"baseline-unread-{nbytes}", connections=0)

        srv.send(f"accept {k}")
        cli.send(f"connect {k} {nbytes}")
        reply = cli.expect("connected")
        srv.expect("accepted")
        settle(2)
        tag = f"unread-{nbytes}-{k}"
        cap.global_files(tag, connections=k, unread_bytes=nbytes, client_reply=reply)
        cap.sockstat(tag, pair.server, "server", connections=k, unread_bytes=nbytes)
        cap.sockstat(tag, pair.client, "client", connections=k, unread_bytes=nbytes)
        cap.ss(f"ss-tmni-unread-{nbytes}.txt", pair.server, "server", connections=k,
               unread_bytes=nbytes)
    finally:
        for h in helpers:
            h.stop()
        pair.close()


def run_sendq(cap: Capture, k: int, nbytes: int) -> None:
    pair = NetnsPair("sndq")
    helpers: list[Helper] = []
    try:
        pair.open()
        srv = Helper(pair.server, ["_serve", "--port", str(PORT)])
        helpers.append(srv)
        srv.expect("listening")
        cli = Helper(pair.client, ["_connect", "--addr", SERVER_ADDR, "--port", str(PORT)])
        helpers.append(cli)
        cli.expect("ready")

        srv.send(f"accept {k}")
        cli.send(f"connect {k} {nbytes}")
        reply = cli.expect("connected")
        srv.expect("accepted")
        settle(2)
        tag = f"sendq-{k}"
        cap.sockstat(tag, pair.server, "server", connections=k, client_reply=reply)
        cap.sockstat(tag, pair.client, "client", connections=k, client_reply=reply)
        cap.ss("ss-tmni-sendq.txt", pair.client, "client", connections=k,
               bytes_offered=nbytes, client_reply=reply)
        cap.ss("ss-tmni-sendq-server.txt", pair.server, "server", connections=k,
               bytes_offered=nbytes, client_reply=reply)
    finally:
        for h in helpers:
            h.stop()
        pair.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("_serve")
    p_serve.add_argument("--port", type=int, required=True)
    p_conn = sub.add_parser("_connect")
    p_conn.add_argument("--addr", required=True)
    p_conn.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, default=SCRIPT.parent)
    parser.add_argument("-k", type=int, default=2000, help="connections per run")
    parser.add_argument("--unread-bytes", type=int, default=13)
    parser.add_argument("--sendq-connections", type=int, default=4)
    parser.add_argument("--sendq-bytes", type=int, default=8 << 20)
    parser.add_argument("--keep", type=int, default=300, help="sockets kept per ss file")
    args = parser.parse_args(argv)

    if args.cmd == "_serve":
        serve(args.port)
        return 0
    if args.cmd == "_connect":
        connect(args.addr, args.port)
        return 0

    if os.geteuid() != 0:
        print("capture.py needs root (network namespaces, /proc/slabinfo)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cap = Capture(args.out, args.keep)
    cap.manifest["k"] = args.k
    print("run 1: idle / close-wait / time-wait", file=sys.stderr)
    run_idle(cap, args.k)
    settle(3)  # namespace teardown is asynchronous
    print(f"run 2: {args.unread_bytes} unread bytes", file=sys.stderr)
    run_unread(cap, args.k, args.unread_bytes)
    settle(3)
    print("run 3: send queue", file=sys.stderr)
    run_sendq(cap, args.sendq_connections, args.sendq_bytes)
    cap.slab_aliases()
    (args.out / "manifest.json").write_text(json.dumps(cap.manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
