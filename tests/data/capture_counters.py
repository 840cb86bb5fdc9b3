#!/usr/bin/env python3
"""Capture /proc/net/netstat and /proc/net/snmp for the counter parser tests, and check
that their TCP counters are per network namespace on this kernel.

Run as root:

    python3 tests/data/capture_counters.py --out tests/data

Standard library only. It creates two network namespaces, ``tcplab-capture-<pid>-a`` and
``-b`` (loopback only: no traffic leaves them), saves both files in each, then provokes
ListenOverflows in namespace ``a`` (a listener with backlog 1 that never accepts, 20
connects) and saves the files again in both. Namespace ``b`` saw no traffic: its counters
must not have moved. Both namespaces are deleted on exit, also after an error.

Files written (``cat /proc/net/netstat /proc/net/snmp``, one file each time):
``counters-fresh-a.txt`` (a new namespace), ``counters-overflow-a.txt`` (after the
overflow), ``counters-overflow-b.txt`` (the other namespace meanwhile).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()
PORT = 5001

HELPER = f"""
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", {PORT})); l.listen(1)
held = []
for _ in range(20):
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", {PORT}))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(1.5)
"""


def ns_run(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, text=True,
                          capture_output=True).stdout


def counters(ns: str) -> str:
    return ns_run(ns, "cat", "/proc/net/netstat", "/proc/net/snmp")


def pairs(text: str) -> dict[str, int]:
    lines = text.splitlines()
    out = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        section = names.split(":")[0]
        for k, v in zip(names.split()[1:], values.split()[1:], strict=False):
            out[f"{section}.{k}"] = int(v)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    a, b = f"tcplab-capture-{os.getpid()}-a", f"tcplab-capture-{os.getpid()}-b"
    made = []
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            ns_run(ns, "ip", "link", "set", "lo", "up")
        fresh_a, fresh_b = counters(a), counters(b)
        (args.out / "counters-fresh-a.txt").write_text(fresh_a)
        ns_run(a, sys.executable, "-c", HELPER)
        after_a, after_b = counters(a), counters(b)
        (args.out / "counters-overflow-a.txt").write_text(after_a)
        (args.out / "counters-overflow-b.txt").write_text(after_b)
        moved_a = {k: v - pairs(fresh_a).get(k, 0) for k, v in pairs(after_a).items()
                   if v != pairs(fresh_a).get(k, 0)}
        moved_b = {k: v - pairs(fresh_b).get(k, 0) for k, v in pairs(after_b).items()
                   if v != pairs(fresh_b).get(k, 0)}
        print(f"kernel {os.uname().release}")
        print(f"namespace a moved: {moved_a}")
        print(f"namespace b moved: {moved_b or 'nothing'}")
        return 0 if moved_a.get("TcpExt.ListenOverflows") and not moved_b else 1
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    sys.exit(main())
