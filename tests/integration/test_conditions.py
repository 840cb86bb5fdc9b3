"""Link conditions for real (netns; this kernel has no netem, so the delay line): physics.

* 4 connections share R = 40 Mbit/s at RTT 50 ms: the sender's unacknowledged bytes in
  flight, summed over the connections (the run's own ``ss -i`` text, median of three
  checkpoints while transferring), lie between 0.75 x R x RTT (the link kept busy) and
  R x RTT plus the bottleneck's queue (what the path can hold: the queue asked for plus
  the emulator's 16 packets of headroom);
* what a sender holds grows with the RTT at a fixed rate (RTT 10 ms against 100 ms);
* with 1% loss the sender retransmits, the receiver gets out-of-order segments and, at
  some checkpoint, holds data in its out-of-order queue (with BBR: see that test);
* nothing is left behind: namespaces, links, delay line processes (the autouse fixture
  checks the host's sysctls and rulesets); SIGTERM stops a run's delay lines, and
  ``tcplab wipe`` those a SIGKILLed run left.

The scenario (tests/integration/scenarios/link-bulk.yaml) reads as fast as it can, so
the link is the bottleneck; the profile tests/integration/profiles/reno.yaml pins Reno in
the lab's namespaces (this machine's default, bbr, keeps 2 x BDP in flight and overflows a
one-BDP queue by design; a namespace may only choose from tcp_allowed_congestion_control,
"reno bbr" here). Each run takes about 40 s plus any wait for the machine lock.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from .test_topologies import assert_clean as topology_clean

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).parent / "scenarios" / "link-bulk.yaml"
PROFILE = Path(__file__).parent / "profiles" / "reno.yaml"
BBR = Path(__file__).parent / "profiles" / "bbr.yaml"
TRANSFERRING = ("transferring1", "transferring2", "transferring3")
PACKET = 1500
RATE = 40_000_000

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root")]


def run(tmp_path: Path, name: str, link: str, *extra: str, backend: str = "netns",
        profile: Path = PROFILE) -> tuple[dict, Path]:
    results, state = tmp_path / name / "results", tmp_path / name / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state),
           "TCPLAB_LOCK_WAIT": os.environ.get("TCPLAB_LOCK_WAIT", "1800")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-s", str(SCENARIO),
                           "-b", backend, "-p", str(profile), "--link", link, *extra, "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert_clean(run_dir.name, state, backend)
    return result, run_dir


def assert_clean(run_id: str, state: Path, backend: str) -> None:
    """The topology tests' checks (namespaces, links, journal, containers), and no delay
    line of the run left running (each runs from the run's state directory)."""
    topology_clean(backend, run_id, state)
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(state) not in ps, "a delay line of the run is still running"


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - no daemon, no SDK: the docker case is skipped
        return False


def sockets(run_dir: Path, host: str, checkpoint: str) -> list[dict[str, int]]:
    """The ESTAB sockets of a host with their tcp_info counters, from the raw ``ss -tanmiH``
    text the run saved at the checkpoint."""
    with gzip.open(run_dir / "raw" / checkpoint / f"{host}-ss.txt.gz", "rt") as fh:
        text = fh.read()
    out = []
    for block in re.split(r"\n(?=\S)", text):
        if not block.startswith("ESTAB"):
            continue
        info = {k: int(v) for k, v in re.findall(
            r"\b(bytes_sent|bytes_acked|bytes_retrans|rcv_ooopack|bytes_received|unacked|sacked|"
            r"lost|mss):(\d+)", block)}
        retrans = re.search(r"\bretrans:(\d+)/(\d+)", block)
        info["retrans_now"] = int(retrans.group(1)) if retrans else 0
        info["retrans_total"] = int(retrans.group(2)) if retrans else 0
        out.append(info)
    return out


def unacked(sock: dict[str, int]) -> int:
    """snd_nxt - snd_una: first transmissions sent, minus what was acknowledged (SACKed
    segments above a hole count too)."""
    return sock.get("bytes_sent", 0) - sock.get("bytes_retrans", 0) - sock.get("bytes_acked", 0)


def in_flight(sock: dict[str, int]) -> int:
    """The unacknowledged bytes still on the path, as the kernel counts them
    (tcp_packets_in_flight: unacked - SACKed - lost + retransmitted, in segments of MSS)."""
    segments = (sock.get("unacked", 0) - sock.get("sacked", 0) - sock.get("lost", 0)
                + sock.get("retrans_now", 0))
    return segments * sock.get("mss", 0)


def senders(run_dir: Path, checkpoint: str) -> list[dict[str, int]]:
    return [s for s in sockets(run_dir, "server", checkpoint) if s.get("bytes_sent")]


def median_in_flight(run_dir: Path) -> tuple[float, list[int]]:
    """The sum over the connections of what is in flight, at each checkpoint while
    transferring (one snapshot is one instant of a sawtooth), and its median."""
    totals = [sum(in_flight(s) for s in senders(run_dir, cp)) for cp in TRANSFERRING]
    return statistics.median(totals), totals


@pytest.mark.parametrize("backend", ["netns", "docker"])
def test_unacked_bytes_are_rate_times_rtt_plus_the_queue(tmp_path: Path, backend: str) -> None:
    if backend == "docker" and not docker_answers():
        pytest.skip("no Docker daemon answers")
    result, run_dir = run(tmp_path, "bdp", "delay=25ms rate=40mbit", backend=backend)
    link = result["metadata"]["link"]
    assert link["engine"] in ("fallback", "netem")
    queue = link["link"]["queue"]
    assert link["link"]["queue_sized"] and queue == 167  # one BDP: 250,000 B / 1,500
    bdp = RATE * 0.050 / 8
    # the bottleneck holds the queue asked for plus the emulator's headroom: its limit
    # minus the packets on the wire during the one-way delay (267 - 84 = 183 packets)
    held = link["hold_limit"] - math.ceil(RATE * 0.025 / 8 / PACKET)
    assert held == queue + 16
    low, high = 0.75 * bdp, bdp + held * PACKET
    assert all(len(senders(run_dir, cp)) == 4 for cp in TRANSFERRING)
    total, totals = median_in_flight(run_dir)
    raw = [sum(unacked(s) for s in senders(run_dir, cp)) for cp in TRANSFERRING]
    print(f"\nR x RTT = {bdp:,.0f} B; bottleneck queue {queue} packets asked, {held} held "
          f"= {held * PACKET:,} B; "
          f"in flight over the 4 connections at the three checkpoints: "
          f"{', '.join(f'{t:,}' for t in totals)} B (median {total:,.0f}; snd_nxt - snd_una "
          f"{', '.join(f'{t:,}' for t in raw)}); bounds {low:,.0f} .. {high:,.0f} B")
    assert low <= total <= high
    counters = [c["link"] for c in result["checkpoints"] if c["name"] in TRANSFERRING]
    assert all(set(h) == {"server ingress", "client ingress"} for h in counters)
    assert max(h["client ingress"]["held_packets"] for h in counters) > 0  # data to the reader
    text = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "link: delay 25 ms each way (RTT 50 ms), rate 40 Mbit/s, queue 167 packets" in text


def test_memory_per_connection_grows_with_the_rtt(tmp_path: Path) -> None:
    held = {}
    for delay in (5, 50):
        result, run_dir = run(tmp_path, f"rtt{2 * delay}", f"delay={delay}ms rate=40mbit",
                              "--bytes", str(10 * 2**20))  # 8.4 s at 10 Mbit/s each (checkpoints 3-5 s in)
        wmem = statistics.median(c["buffers"]["server"]["wmem_queued"]["median"]
                                 for c in result["checkpoints"] if c["name"] in TRANSFERRING)
        flight = median_in_flight(run_dir)[0] / 4
        held[2 * delay] = (wmem, flight)
        print(f"\nRTT {2 * delay} ms: sender wmem_queued median {wmem:,.0f} B, in flight "
              f"{flight:,.0f} B per connection")
    assert held[100][1] > 4 * held[10][1]  # in flight: rate x RTT, 10 times the RTT
    assert held[100][0] > 2 * held[10][0]  # and the send buffer that holds it


def test_loss_brings_retransmissions_and_an_out_of_order_queue(tmp_path: Path) -> None:
    """1% loss: the senders retransmit, the readers receive segments out of order, and at
    some checkpoint a reader's socket holds data in its out-of-order queue (the result's
    ``buffers.client.ofo_inferred``: Recv-Q 0 while rmem_alloc > 0).

    The out-of-order queue is non-empty from a loss until its retransmission arrives,
    about one round trip, so how often a checkpoint finds it non-empty is about loss x
    packets in flight. Reno at 1% loss keeps a dozen packets in flight per connection
    (Mathis) and is out of order about an eighth of the time: four connections at three
    checkpoints found none in one run of five. BBR does not back off on random loss and
    keeps the bandwidth-delay product in flight (100 Mbit/s x 50 ms: 417 packets, about
    four losses per round trip), so some reader holds out-of-order data at almost any
    moment."""
    result, run_dir = run(tmp_path, "loss", "delay=25ms rate=100mbit loss=1%", "--bytes",
                          str(32 * 2**20), "--stall", "120", profile=BBR)
    assert result["metadata"]["link"]["link"]["loss_pct"] == 1.0
    last = TRANSFERRING[-1]
    sent = senders(run_dir, last)
    received = [s for s in sockets(run_dir, "client", last) if s.get("bytes_received")]
    retrans = sum(s["retrans_total"] for s in sent)
    ooo = sum(s.get("rcv_ooopack", 0) for s in received)
    link = next(c["link"] for c in result["checkpoints"] if c["name"] == last)
    dropped = sum(d.get("lost", 0) for d in link.values())
    held = {c["name"]: c["buffers"]["client"]["ofo_inferred"] for c in result["checkpoints"]
            if c["name"] in TRANSFERRING}
    print(f"\nloss 1%: {retrans} retransmissions, {ooo} out-of-order packets received, "
          f"{dropped} packets dropped by the link, at {last}; receiver sockets holding "
          "out-of-order data: " + ", ".join(f"{cp} {h['sockets']} ({h['rmem_alloc']:,} B)"
                                           for cp, h in held.items()))
    assert retrans > 0 and ooo > 0
    assert any(h["sockets"] > 0 and h["rmem_alloc"] > 0 for h in held.values())
    text = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "Receiver sockets holding out-of-order data" in text


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_the_delay_lines_stop_on_sigterm_and_with_wipe(tmp_path: Path, signal_name: str) -> None:
    """SIGTERM: the run's teardown stops its delay lines. SIGKILL: they outlive it, and
    ``tcplab wipe`` stops them (each was journalled with its start time)."""
    import signal
    import time

    state = tmp_path / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state),
           "TCPLAB_LOCK_WAIT": os.environ.get("TCPLAB_LOCK_WAIT", "1800")}
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "-s",
                                 str(SCENARIO), "-b", "netns", "-p", str(PROFILE), "--link",
                                 "delay=25ms rate=40mbit", "--results", str(tmp_path / "r")],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 1800

    def lines() -> int:
        ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        return sum(1 for a in ps.splitlines() if str(state) in a and "delayline.py" in a)

    while "established" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert lines() >= 2  # one per direction
    proc.send_signal(getattr(signal, signal_name))
    code = proc.wait(timeout=120)
    if signal_name == "SIGTERM":
        assert code == 143, log.read_text()[-2000:]
    else:
        assert lines() >= 2  # nothing ran the teardown
        wipe = subprocess.run([sys.executable, "-m", "orchestrator.cli", "wipe"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert "cleaned" in wipe.stdout + wipe.stderr, wipe.stdout + wipe.stderr
    time.sleep(0.5)
    assert lines() == 0
    assert not (state / "runs").exists() or not list((state / "runs").iterdir())
