#!/usr/bin/env python3
"""Connection ramp of the side script against a minimal C connect/accept loop.

Both run in the same lab namespaces (made by tcplab's own netns backend, so cleanup is
the journal's), alternating, ROUNDS times each; each round uses a fresh server port so
TIME_WAIT from an earlier round never gets in the way. Prints rates and the ratio.

    sudo .venv/bin/python bench/ramp_vs_c.py [N] [ROUNDS] [PER_WORKER]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.backends.netns import NetnsBackend  # noqa: E402
from orchestrator.config import load_lab  # noqa: E402
from orchestrator.journal import Journal  # noqa: E402


def build_c(tmp: Path) -> Path:
    exe = tmp / "connect_loop"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench" / "connect_loop.c")], check=True)
    return exe


def c_round(exe: Path, ns: dict[str, str], addr: str, port: int, n: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", ns["server"], str(exe), "server", addr, str(port),
                            str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "listening"
    cli = subprocess.Popen(["ip", "netns", "exec", ns["client"], str(exe), "client", addr, str(port),
                            str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seconds, rate = cli.stdout.readline().split()
    srv.stdout.readline()
    for p in (cli, srv):
        p.stdin.close()
        p.wait(timeout=30)
    return float(rate)


def side_round(backend: NetnsBackend, hosts: dict, addr: str, port: int, n: int,
               per_worker: int = 0) -> tuple[float, float]:
    chans = {}
    for role in ("server", "client"):
        host = next(h for h in hosts.values() if h.role == role)
        ch = backend.start_side(host)
        ch.send({"role": role, "address": host.address, "peer": addr, "shards": [[port, n]],
                 "stall": 30, "per_worker": per_worker})
        assert "hello" in ch.receive(10)
        chans[role] = ch
    for ch in chans.values():
        ch.send({"op": "prepare"})
    for ch in chans.values():
        assert ch.receive(30)["ok"]
    start = time.monotonic()
    chans["server"].send({"op": "connect"})
    chans["client"].send({"op": "connect"})
    done: dict = {}
    while len(done) < 2:
        for role, ch in chans.items():
            msg = ch.receive(0.01) if role not in done else None
            if msg and "ok" in msg:
                assert msg["ok"], msg
                done[role] = msg
    end_to_end = n / (time.monotonic() - start)
    first, last = done["client"]["span"]
    for ch in chans.values():
        ch.send({"op": "exit"})
        ch.close()
    return n / (last - first), end_to_end


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    per_worker = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # 0: the side's default
    lab = load_lab(ROOT / "lab" / "default.yaml")
    run_id = f"bench-ramp-{int(time.time())}"
    journal = Journal.create(run_id)
    backend = NetnsBackend(lab, run_id, journal, ROOT, print)
    try:
        hosts = backend.up({h.name: dict(h.sysctls) for h in lab.hosts})
        ns = {h.role: h.info["netns"] for h in hosts.values()}
        addr = lab.host("server").address
        with tempfile.TemporaryDirectory() as tmp:
            exe = build_c(Path(tmp))
            c_rates, side_rates, e2e_rates = [], [], []
            for r in range(rounds):
                c_rates.append(c_round(exe, ns, addr, 6000 + 2 * r, n))
                loop, e2e = side_round(backend, hosts, addr, 6001 + 2 * r, n, per_worker)
                side_rates.append(loop)
                e2e_rates.append(e2e)
    finally:
        backend.down()
    c_med, s_med = statistics.median(c_rates), statistics.median(side_rates)
    e_med = statistics.median(e2e_rates)
    print(f"N={n:,} rounds={rounds} per_worker={per_worker or 'default'}")
    print(f"C loop      : {', '.join(f'{r:,.0f}' for r in c_rates)} conn/s (median {c_med:,.0f})")
    print(f"side script : {', '.join(f'{r:,.0f}' for r in side_rates)} conn/s (median {s_med:,.0f})"
          " -- its connect loop, timed like the C loop's")
    print(f"  end to end: {', '.join(f'{r:,.0f}' for r in e2e_rates)} conn/s (median {e_med:,.0f})"
          " -- from the orchestrator's `connect` to both sides' replies")
    print(f"ratio       : {s_med / c_med:.1%} of the C loop (end to end {e_med / c_med:.1%})")


if __name__ == "__main__":
    main()
