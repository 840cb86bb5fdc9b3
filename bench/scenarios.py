#!/usr/bin/env python3
"""Measure the scenarios beyond the article and print the figures docs/scenarios.md quotes.

    sudo .venv/bin/python bench/scenarios.py [N]      # default N=10,000 (bulk: 4)
Runs each through the CLI on the netns backend, reads the saved results, prints markdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(results: Path, scenario: str, *args: str) -> dict:
    before = set(results.iterdir()) if results.exists() else set()
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "--scenario", scenario,
                    "--backend", "netns", "--results", str(results), *args],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TCPLAB_LOCK_WAIT": "900"})
    (new,) = set(results.iterdir()) - before
    return json.loads((new / "result.json").read_text())


def cp(result: dict, name: str) -> dict:
    return next(c for c in result["checkpoints"] if c["name"] == name)


def objs(c: dict, cache: str) -> float:
    row = next((r for r in c["per_connection_bytes"]["by_cache"] if r["cache"] == cache), None)
    return row["objects_per_connection"] if row else 0.0


def line(label: str, c: dict, *caches: str) -> str:
    pcb = c["per_connection_bytes"]
    detail = ", ".join(f"{k} {objs(c, k):.2f}" for k in caches)
    return (f"| {label} | {pcb['objects_total']:,.0f} | {pcb['total']:,.0f} | "
            f"{pcb['tcp_mem_charged']:,.0f} | {detail} |")


def main() -> None:
    n = sys.argv[1] if len(sys.argv) > 1 else "10000"
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp)
        rows = ["| situation | objects B/conn | slab pages B/conn | TCP mem charged B/conn | objects per connection |",
                "|---|---:|---:|---:|---|"]
        v4 = run(res, "idle", "-n", n)
        v6 = run(res, "idle", "-n", n, "--family", "ipv6")
        rows.append(line("idle pair, IPv4", cp(v4, "established"), "TCP", "sock_inode_cache"))
        rows.append(line("idle pair, IPv6", cp(v6, "established"), "TCPv6", "sock_inode_cache"))
        ep = run(res, "idle", "-n", n, "--server", "epoll")
        rows.append(line("idle pair, epoll server", cp(ep, "established"), "eventpoll_epi", "ep_head"))
        bl = run(res, "backlog", "-n", n)
        rows.append(line("accept-queued (not accepted)", cp(bl, "queued"), "TCP", "sock_inode_cache", "filp"))
        rows.append(line("accepted", cp(bl, "accepted"), "TCP", "sock_inode_cache", "filp"))
        sr = run(res, "synrecv", "-n", n)
        rows.append(line("half-open: client ESTAB + server SYN_RECV", cp(sr, "syn_recv"), "request_sock_TCP", "TCP"))
        orph = run(res, "orphan", "-n", str(min(int(n), 2000)))
        rows.append(line(f"orphan holding {orph['scenario']['bytes']:,} B (+ its ESTAB peer)",
                         cp(orph, "orphaned"), "TCP", "sock_inode_cache"))
        print("\n".join(rows))
        print()
        print("| bulk (4 connections, 256 MiB each, reader at 32 MiB/s) | profile | "
              "receiver rmem_alloc + Recv-Q per conn | sender wmem_queued per conn | TCP mem charged per conn "
              "| timeline peak of TCP mem per conn |")
        print("|---|---|---:|---:|---:|---:|")
        for profile in ("default", "large-buffers"):
            bulk = run(res, "bulk", "--profile", profile)
            t = cp(bulk, "transferring")
            cli, srv = t["buffers"]["client"], t["buffers"]["server"]
            mem = bulk["timeline"]["columns"].get("client.mem", [0])
            peak = (max(mem) - mem[0]) * 4096 / 4
            print(f"| transferring | {profile} | {(cli['rmem_alloc']['sum']) / 4:,.0f} "
                  f"(Recv-Q {cli['recv_q'] / 4:,.0f}) | {srv['wmem_queued']['sum'] / 4:,.0f} | "
                  f"{t['per_connection_bytes']['tcp_mem_charged']:,.0f} | {peak:,.0f} |")
        print(f"\nkernel {v4['metadata']['kernel']['release']}, N={int(n):,}")


if __name__ == "__main__":
    main()
