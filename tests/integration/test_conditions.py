"""Link conditions for real (netns; this kernel has no netem, so the delay line): physics.

* 4 connections share R = 40 Mbit/s at RTT 50 ms: the sender's unacknowledged bytes, summed
  over the connections at the ``transferring`` checkpoint (the run's own ``ss -i`` text),
  lie between 0.75 x R x RTT (the link kept busy) and R x RTT plus the bottleneck queue;
* what a sender holds grows with the RTT at a fixed rate (RTT 10 ms against 100 ms);
* with 1% loss the sender retransmits and the receiver gets out-of-order segments;
* nothing is left behind: namespaces, links, delay line processes (the autouse fixture
  checks the host's sysctls and rulesets).

The scenario (tests/integration/scenarios/link-bulk.yaml) reads as fast as it can, so
the link is the bottleneck. Each run takes about 15 s plus any wait for the machine lock.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.common import short_id

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).parent / "scenarios" / "link-bulk.yaml"
PACKET = 1500
RATE = 40_000_000

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root")]


def run(tmp_path: Path, name: str, link: str, *extra: str) -> tuple[dict, Path]:
    results, state = tmp_path / name / "results", tmp_path / name / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state),
           "TCPLAB_LOCK_WAIT": os.environ.get("TCPLAB_LOCK_WAIT", "1800")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-s", str(SCENARIO),
                           "-b", "netns", "--link", link, *extra, "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert_clean(run_dir.name, state)
    return result, run_dir


def assert_clean(run_id: str, state: Path) -> None:
    sid = short_id(run_id)
    assert f"tcplab-{sid}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                  text=True).stdout
    assert f"tl{sid}" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                            text=True).stdout
    assert not (state / "runs").exists() or not list((state / "runs").iterdir())
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(state) not in ps, "a delay line of the run is still running"


def sockets(run_dir: Path, host: str, checkpoint: str) -> list[dict[str, int]]:
    """The ESTAB sockets of a host with their tcp_info counters, from the raw ``ss -tanmiH``
    text the run saved at the checkpoint."""
    with gzip.open(run_dir / "raw" / checkpoint / f"{host}-ss.txt.gz", "rt") as fh:
        text = fh.read()
    out = []
    for block in re.split(r"\n(?=\S)", text):
        if not block.startswith("ESTAB"):
            continue
        info = {k: int(v) for k, v in re.findall(r"\b(bytes_sent|bytes_acked|bytes_retrans|"
                                                  r"rcv_ooopack|bytes_received):(\d+)", block)}
        retrans = re.search(r"\bretrans:\d+/(\d+)", block)
        info["retrans_total"] = int(retrans.group(1)) if retrans else 0
        out.append(info)
    return out


def unacked(sock: dict[str, int]) -> int:
    """snd_nxt - snd_una: first transmissions sent, minus what was acknowledged."""
    return sock.get("bytes_sent", 0) - sock.get("bytes_retrans", 0) - sock.get("bytes_acked", 0)


def senders(run_dir: Path, checkpoint: str = "transferring") -> list[dict[str, int]]:
    return [s for s in sockets(run_dir, "server", checkpoint) if s.get("bytes_sent")]


def test_unacked_bytes_are_rate_times_rtt_plus_the_queue(tmp_path: Path) -> None:
    result, run_dir = run(tmp_path, "bdp", "delay=25ms rate=40mbit")
    link = result["metadata"]["link"]
    assert link["engine"] in ("fallback", "netem")
    queue = link["link"]["queue"]
    assert link["link"]["queue_sized"] and queue == 167  # one BDP: 250,000 B / 1,500
    bdp = RATE * 0.050 / 8
    low, high = 0.75 * bdp, bdp + queue * PACKET
    socks = senders(run_dir)
    assert len(socks) == 4
    total = sum(unacked(s) for s in socks)
    print(f"\nR x RTT = {bdp:,.0f} B; bottleneck queue {queue} packets = {queue * PACKET:,} B; "
          f"unacked at 'transferring': {total:,} B in all "
          f"({', '.join(f'{unacked(s):,}' for s in socks)} per connection); "
          f"bounds {low:,.0f} .. {high:,.0f} B")
    assert low <= total <= high
    held = result["checkpoints"][2]["link"]  # what the link held at that checkpoint
    assert set(held) == {"server ingress", "client ingress"}
    assert held["client ingress"]["held_packets"] > 0  # data in flight to the reader
    text = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "link: delay 25 ms each way (RTT 50 ms), rate 40 Mbit/s, queue 167 packets" in text


def test_memory_per_connection_grows_with_the_rtt(tmp_path: Path) -> None:
    held = {}
    for delay in (5, 50):
        result, run_dir = run(tmp_path, f"rtt{2 * delay}", f"delay={delay}ms rate=40mbit")
        cp = next(c for c in result["checkpoints"] if c["name"] == "transferring")
        wmem = cp["buffers"]["server"]["wmem_queued"]["median"]
        flight = sum(unacked(s) for s in senders(run_dir)) / 4
        held[2 * delay] = (wmem, flight)
        print(f"\nRTT {2 * delay} ms: sender wmem_queued median {wmem:,.0f} B, unacked "
              f"{flight:,.0f} B per connection")
    assert held[100][1] > 4 * held[10][1]  # in flight: rate x RTT, 10 times the RTT
    assert held[100][0] > 2 * held[10][0]  # and the send buffer that holds it


def test_loss_brings_retransmissions_and_out_of_order_segments(tmp_path: Path) -> None:
    result, run_dir = run(tmp_path, "loss", "delay=10ms rate=40mbit loss=1%")
    assert result["metadata"]["link"]["link"]["loss_pct"] == 1.0
    sent = senders(run_dir)
    received = [s for s in sockets(run_dir, "client", "transferring") if s.get("bytes_received")]
    retrans = sum(s["retrans_total"] for s in sent)
    ooo = sum(s.get("rcv_ooopack", 0) for s in received)
    dropped = sum(d.get("lost", 0) for d in result["checkpoints"][2]["link"].values())
    print(f"\nloss 1%: {retrans} retransmissions, {ooo} out-of-order packets received, "
          f"{dropped} packets dropped by the link at 'transferring'")
    assert retrans > 0 and ooo > 0
