"""scenarios/delayline.py for real: two namespaces joined by a veth (delaylab.py), the delay
line bound on PREROUTING of a veth, physics asserted (about 60 s, plus any wait for the
machine lock, which keeps lab runs from disturbing the timing).

- delay: UDP round trips (a python "ping": an echo server, one probe at a time) take at
  least the configured delay, never less, and their median at most TOL_MS_PER_END more
  per delay line (10% of the 20 ms: the machine's own wake-up latency is part of it);
- rate: a TCP bulk transfer of a few seconds gets goodput within 10% of R, at 10 and
  100 Mbit/s (expected: R x 1448/1514, the TCP payload share of a full Ethernet frame);
- loss: --loss 0.01 drops within the binomial 4.5-sigma bounds of 20,000 datagrams, and
  exactly the datagrams its statistics say it lost are missing;
- limit: a burst into --limit 50 behind a 2 s delay: while held, SIGUSR1's statistics show
  the 50 held; 50 pass, the kernel drops the rest (queue_dropped);
- Python 3.7 (when installed): jitter and loss, round trips within delay +- jitter.
Everything the test creates lives in its two namespaces (rules included) and goes with them.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from orchestrator.journal import HostLock

from ..unit.test_side_python37 import oldest_python
from .delaylab import LinkLab, result, wait_listening

QUEUE_PROC = Path("/proc/net/netfilter/nfnetlink_queue")
#: median round trip at most this much above the configured delay, per delay line passed:
#: 10% of its 20 ms. Its releases are late by the machine's wake-up latency and more; on
#: this VM that grew from 30-90 us (2026-11) to 350 us at the median (2026-12-02, a plain
#: 2 ms sleep at SCHED_FIFO woke 77 us late at the median, 330 us at p90), and a
#: 1.5 ms bound on the two-line total failed: 42.79 ms for 40.
TOL_MS_PER_END = 2.0
_tags = count()

pytestmark = [
    pytest.mark.root, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root"),
    pytest.mark.skipif(not QUEUE_PROC.exists(), reason="nfnetlink_queue is absent from this kernel "
                       "(CONFIG_NETFILTER_NETLINK_QUEUE): the delay line cannot run here"),
]


@pytest.fixture
def machine_lock() -> Iterator[None]:
    """Taken after the autouse host-state fixture's snapshot (which waits for the lock)."""
    lock = HostLock("tests/integration/test_delayline.py")
    lock.acquire()
    yield
    lock.release()


@pytest.fixture
def lab(machine_lock: None) -> Iterator[LinkLab]:
    with LinkLab(f"tldl{os.getpid() % 10000}{next(_tags)}") as made:
        yield made
    assert made.ns["a"] not in os.popen("ip netns list").read()


def round_trips(lab: LinkLab, count_: int = 100, lost_ok: bool = False) -> list[float]:
    lab.tool("b", "echo", 7000, rt=True)
    wait_listening(lab, "b", 7000, udp=True)
    out = result(lab.tool("a", "ping", lab.B_ADDR, 7000, count_, 0.01, rt=True), timeout=300)
    assert lost_ok or out["lost"] == []
    return out["rtt_ms"]


@pytest.mark.parametrize("ends", [1, 2])
def test_round_trip_is_the_configured_delay(lab: LinkLab, tmp_path: Path, ends: int) -> None:
    delay_ms = 20
    lines = [lab.delay_line(side, tmp_path, "--delay-us", str(delay_ms * 1000))
             for side in ("b", "a")[:ends]]
    rtts = round_trips(lab)
    expected = delay_ms * ends
    print(f"{ends} end(s) x {delay_ms} ms: round trip min {min(rtts):.3f} median "
          f"{statistics.median(rtts):.3f} max {max(rtts):.3f} ms (expected {expected})")
    late = []
    for line in lines:
        stats = line.stop()
        late.append(stats["lateness_us"])
        assert stats["packets"] == stats["released"] == 100
        assert stats["held_now"] == 0 and stats["lost"] == 0 and stats["enobufs"] == 0
    print("releases late (us), per line: " + "; ".join(
        f"p50 {x['p50']} p90 {x['p90']} max {x['max']}" for x in late))
    assert min(rtts) >= expected
    assert statistics.median(rtts) <= expected + ends * TOL_MS_PER_END


@pytest.mark.parametrize("rate_mbit", [10, 100])
def test_rate_gives_goodput_within_ten_percent(lab: LinkLab, tmp_path: Path, rate_mbit: int) -> None:
    rate = rate_mbit * 1_000_000
    line = lab.delay_line("b", tmp_path, "--delay-us", "5000", "--rate-bps", str(rate))
    sink = lab.tool("b", "sink", 5001)
    wait_listening(lab, "b", 5001)
    sent = result(lab.tool("a", "send", lab.B_ADDR, 5001, 4))
    samples = result(sink)["samples"]
    start = next(s for s in samples if s[0] >= 1.0)  # after slow start
    end = samples[-2]  # the last before the close
    goodput = (end[1] - start[1]) * 8 / (end[0] - start[0])
    stats = line.stop()
    print(f"rate {rate_mbit} Mbit/s: goodput {goodput / 1e6:.2f} Mbit/s ({goodput / rate:.3f} R; "
          f"{1448 / 1514:.3f} expected), {stats['packets']} packets ({stats['gso_packets']} GSO), "
          f"{sent['bytes']} bytes sent, lateness {stats['lateness_us']}")
    assert abs(goodput - rate) <= 0.10 * rate
    assert stats["verdict_errors"] == 0 and stats["enobufs"] == 0


def test_loss_is_binomial_and_counted(lab: LinkLab, tmp_path: Path) -> None:
    n, p = 20_000, 0.01
    line = lab.delay_line("b", tmp_path, "--delay-us", "1000", "--loss", str(p), "--seed", "7")
    meter = lab.tool("b", "meter", 9000, 30)
    wait_listening(lab, "b", 9000, udp=True)
    sent = result(lab.tool("a", "flood", lab.B_ADDR, 9000, 5000, 100, n / 5000))["sent"]
    received = result(meter)["received"]
    stats = line.stop()
    sigma = math.sqrt(n * p * (1 - p))
    low, high = n * p - 4.5 * sigma, n * p + 4.5 * sigma
    print(f"sent {sent}, received {received}, lost {stats['lost']} (bounds {low:.0f}..{high:.0f})")
    assert sent == n
    assert low <= stats["lost"] <= high
    assert received == sent - stats["lost"]


def test_limit_drops_beyond_it_in_the_kernel(lab: LinkLab, tmp_path: Path) -> None:
    line = lab.delay_line("b", tmp_path, "--delay-us", "2000000", "--limit", "50")
    meter = lab.tool("b", "meter", 9000, 30)
    wait_listening(lab, "b", 9000, udp=True)
    sent = result(lab.tool("a", "flood", lab.B_ADDR, 9000, 20_000, 100, 0.025))["sent"]
    holding = line.stats()  # SIGUSR1, within the 2 s the burst is held
    received = result(meter)["received"]
    stats = line.stop()
    print(f"burst of {sent}: received {received}, dropped by the kernel "
          f"{stats['dropped_by_limit']}, held at most {stats['max_held']}")
    assert sent == 500
    assert (holding["held_now"], holding["held_bytes_now"], holding["released"]) == (50, 5000, 0)
    assert received == stats["max_held"] == 50
    assert stats["dropped_by_limit"] == sent - received
    assert stats["held_now"] == 0 and stats["released"] == 50


@pytest.mark.skipif(oldest_python() is None, reason="no Python 3.7 on this machine "
                    "(set TCPLAB_OLDEST_PYTHON)")
def test_runs_under_python_37_with_jitter_and_loss(tmp_path: Path, machine_lock: None) -> None:
    with LinkLab(f"tldl{os.getpid() % 10000}{next(_tags)}", python=oldest_python()) as lab:
        line = lab.delay_line("b", tmp_path, "--delay-us", "10000", "--jitter-us", "2000",
                              "--loss", "0.1", "--seed", "3")
        rtts = round_trips(lab, 50, lost_ok=True)
        stats = line.stop()
    assert stats["lost"] > 0 and len(rtts) == 50 - stats["lost"]
    assert 8 <= min(rtts) and max(rtts) < 12 + 10
    assert stats["config"]["reorders"] and stats["config"]["scheduling"] == "fifo:10"
