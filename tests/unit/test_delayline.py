"""scenarios/delayline.py's pure parts: nfnetlink_queue messages against the bytes this
kernel sent (tests/data/nfqueue, made by its capture.py), the release-time model (netem's),
the statistics, and every bad input."""

from __future__ import annotations

import errno
import importlib.util
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("delayline", ROOT / "scenarios" / "delayline.py")
dl = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(dl)  # type: ignore[union-attr]

DATA = ROOT / "tests" / "data" / "nfqueue"
CAPTURED = json.loads((DATA / "messages.json").read_text())["messages"]
MS = 1_000_000


def captured(name: str) -> bytes:
    return bytes.fromhex(CAPTURED[name]["hex"])


def only_message(name: str) -> tuple[int, memoryview]:
    (kind, _flags, body), = dl.split_messages(captured(name))
    return kind, body


# -- messages -------------------------------------------------------------------------------

def test_a_refused_bind_echoes_exactly_the_bind_message_built_here() -> None:
    kind, body = only_message("bind_refused")
    assert kind == dl.NLMSG_ERROR
    assert dl.error_code(body) == errno.EPERM
    assert bytes(body[4:]) == dl.bind_message(3, 13, 500)


def test_a_verdict_on_an_unknown_id_echoes_the_verdict_message_built_here() -> None:
    kind, body = only_message("verdict_unknown_id")
    assert kind == dl.NLMSG_ERROR
    assert dl.error_code(body) == errno.ENOENT
    assert bytes(body[4:]) == dl.verdict_message(3, 999999, dl.NF_ACCEPT)


@pytest.mark.parametrize(("name", "seq"), [("bind_ack", 11), ("flags_ack", 12)])
def test_acknowledgements_carry_error_zero_and_the_request_sequence(name: str, seq: int) -> None:
    kind, body = only_message(name)
    assert kind == dl.NLMSG_ERROR
    assert dl.error_code(body) == 0
    assert struct.unpack_from("=I", body, 12)[0] == seq


def test_message_layout() -> None:
    msg = dl.verdict_message(7, 42, dl.NF_DROP, batch=True)
    length, kind, flags, seq, pid = dl.NLMSGHDR.unpack_from(msg)
    assert (length, kind, flags, seq, pid) == (len(msg), 0x0303, dl.NLM_F_REQUEST, 0, 0)
    assert msg[16:20] == b"\x00\x00\x00\x07"  # AF_UNSPEC, version 0, queue 7 big-endian
    assert dl.attributes(memoryview(msg[16:]))[dl.NFQA_VERDICT_HDR].tobytes() == struct.pack("!II", 0, 42)
    assert len(dl.nla(1, b"abcde")) == 12  # 4 header + 5 + 3 padding


def test_several_messages_in_one_datagram_split_apart() -> None:
    data = dl.verdict_message(3, 1, dl.NF_ACCEPT) + dl.verdict_message(3, 2, dl.NF_DROP)
    ids = [struct.unpack("!II", dl.attributes(body)[dl.NFQA_VERDICT_HDR])[1]
           for _kind, _flags, body in dl.split_messages(data)]
    assert ids == [1, 2]
    assert len(data) == 64
    assert [m[:2] for m in dl.split_messages(data[:40])] == [(0x0301, dl.NLM_F_REQUEST)]  # cut: left out


def test_a_udp_packet_copied_whole() -> None:
    kind, body = only_message("packet_udp")
    assert kind == dl.PACKET_TYPE
    pkt = dl.parse_packet(body)
    assert (pkt.length, pkt.gso, pkt.indev, len(pkt.head)) == (44, False, 2, 44)
    assert pkt.head.endswith(b"tcplab-udp-probe")
    assert dl.header_bytes(pkt.head) == 28
    assert dl.wire_bytes(pkt.length, pkt.head, pkt.gso, 1500, 14) == 58


def test_a_gso_packet_counts_as_the_segments_it_becomes() -> None:
    pkt = dl.parse_packet(only_message("packet_gso")[1])
    assert (pkt.length, pkt.gso, len(pkt.head)) == (7292, True, dl.COPY_RANGE)
    assert dl.header_bytes(pkt.head) == 52  # IPv4 20 + TCP 32 (timestamps)
    # (7292 - 52) / (1500 - 52) = 5 segments: 4 more headers, 5 Ethernet headers
    assert dl.wire_bytes(pkt.length, pkt.head, pkt.gso, 1500, 14) == 7292 + 4 * 52 + 5 * 14


def test_header_bytes_of_ipv6_and_garbage() -> None:
    v6_tcp = bytes([0x60]) + bytes(5) + bytes([6, 64]) + bytes(32) + bytes(12) + bytes([0x50]) + bytes(7)
    assert dl.header_bytes(v6_tcp) == 60
    assert dl.header_bytes(b"\x45" + bytes(5)) == 0
    assert dl.wire_bytes(100, b"", True, 1500, 14) == 114  # no headers known: one segment


def test_kernel_counters_from_the_captured_proc_file() -> None:
    counters = dl.kernel_counters(3, str(DATA / "nfnetlink_queue.txt"))
    assert counters == {"queue_total": 0, "queue_dropped": 0, "user_dropped": 0, "id_sequence": 43}
    assert dl.kernel_counters(4, str(DATA / "nfnetlink_queue.txt")) == {}
    assert dl.kernel_counters(3, "/nonexistent") == {}


# -- the release-time model -------------------------------------------------------------------

def test_delay_only_shifts_every_packet() -> None:
    model = dl.LinkModel(10 * MS)
    assert [model.due(t, 1514) for t in (0, 1, 5 * MS)] == [10 * MS, 10 * MS + 1, 15 * MS]
    assert model.ordered


def test_rate_serialises_like_netem() -> None:
    """1514 wire bytes at 12.112 Mbit/s take 1 ms; a burst of three leaves 1 ms apart, each
    after its own transmission time, on top of the delay."""
    model = dl.LinkModel(5 * MS, rate_bps=12_112_000)
    assert [model.due(0, 1514) for _ in range(3)] == [6 * MS, 7 * MS, 8 * MS]
    assert model.due(100 * MS, 1514) == 106 * MS  # an idle link: delay + its own time


def test_uniform_jitter_stays_in_bounds_and_reorders() -> None:
    model = dl.LinkModel(10 * MS, jitter_ns=2 * MS, rng=random.Random(1))
    delays = [model.due(t * 10_000, 100) - t * 10_000 for t in range(20_000)]
    assert min(delays) >= 8 * MS and max(delays) < 12 * MS
    assert abs(sum(delays) / len(delays) - 10 * MS) < 0.02 * MS
    assert not model.ordered
    dues = [d + t * 10_000 for t, d in enumerate(delays)]
    assert dues != sorted(dues)


def test_normal_jitter_is_cut_at_four_sigma_and_never_negative() -> None:
    model = dl.LinkModel(MS, jitter_ns=MS, normal=True, rng=random.Random(2))
    delays = [model.due(0, 100) for _ in range(20_000)]
    assert min(delays) == 0 and max(delays) <= 5 * MS
    spread = sorted(delays)[int(0.8413 * len(delays))] - sorted(delays)[len(delays) // 2]
    assert 0.9 * MS < spread < 1.1 * MS  # one sigma


@pytest.mark.parametrize("options", [{"rate_bps": 10**9}, {"fifo": True}])
def test_jitter_with_a_rate_or_fifo_keeps_order(options: dict) -> None:
    model = dl.LinkModel(10 * MS, jitter_ns=5 * MS, rng=random.Random(3), **options)
    dues = [model.due(t * 1000, 1514) for t in range(5000)]
    assert model.ordered and dues == sorted(dues)


def test_lateness_percentiles_from_the_histogram() -> None:
    """Exact below 1,024 µs, within 0.2% above; the summary (written at every checkpoint,
    inside the packet loop) stays cheap however many packets went through."""
    import time

    late = dl.Lateness()
    for value in range(10_000):
        late.add(value)
    summary = late.summary()
    assert (summary["count"], summary["max"], summary["mean"]) == (10_000, 9999, 4999.5)
    assert summary["p50"] == 5000 and 8990 <= summary["p90"] <= 9000
    assert 9980 <= summary["p99_9"] <= 9990
    small = dl.Lateness()
    for value in (3, 1, 2, 700, 5):
        small.add(value)
    assert (small.summary()["p50"], small.summary()["p99"]) == (3, 700)  # exact
    assert dl.Lateness().summary()["p99"] is None
    many = dl.Lateness()
    values = [i % 5000 + (40_000 if i % 997 == 0 else 0) for i in range(300_000)]
    for value in values:
        many.add(value)
    start = time.perf_counter()
    assert many.summary()["max"] == max(values)
    took = time.perf_counter() - start
    reservoir = values[:200_000]
    random.Random(1).shuffle(reservoir)
    start = time.perf_counter()
    sorted(reservoir)  # what the old 200,000-sample reservoir did at each dump (~70 ms here)
    assert took < (time.perf_counter() - start) / 4
    assert len(many.counts) < 3000


# -- the release step (no kernel needed: the socket is never used) ------------------------------

def line(*argv: str) -> dl.DelayLine:
    return dl.DelayLine(dl.parse_args(["--queue-num", "3", "--delay-us", "0", *argv]))


def test_in_order_releases_are_one_batch_verdict_up_to_the_last_due_id() -> None:
    d = line()
    d.held.extend([(10, 1, 100), (20, 2, 100), (30, 5, 100)])
    d.held_bytes = 300
    (msg,) = d.release(25)
    (kind, _flags, body), = dl.split_messages(msg)
    assert kind == (3 << 8) | dl.NFQNL_MSG_VERDICT_BATCH
    assert struct.unpack("!II", dl.attributes(body)[dl.NFQA_VERDICT_HDR]) == (dl.NF_ACCEPT, 2)
    assert (d.pending_dues, d.held_bytes, len(d.held)) == ([10, 20], 100, 1)
    d.sock.close()


def test_reordering_releases_are_one_verdict_per_packet_in_due_order() -> None:
    d = line("--jitter-us", "100")
    for item in [(30, 1, 10), (10, 2, 10), (20, 3, 10)]:
        dl.heapq.heappush(d.held, item)
    d.held_bytes = 30
    ids = [struct.unpack("!II", dl.attributes(dl.split_messages(m)[0][2])[dl.NFQA_VERDICT_HDR])[1]
           for m in d.release(0, everything=True)]
    assert ids == [2, 3, 1] and d.held_bytes == 0
    d.sock.close()


# -- bad input: one line, exit 2, nothing bound ---------------------------------------------------

BAD = [
    (["--delay-us", "5"], "the following arguments are required: --queue-num"),
    (["--queue-num", "70000", "--delay-us", "5"], "--queue-num: expected 0..65535, got 70000"),
    (["--queue-num", "1", "--delay-us", "-5"], "--delay-us: expected >= 0, got -5"),
    (["--queue-num", "1", "--delay-us", "5", "--jitter-us", "-1"], "--jitter-us: expected >= 0, got -1"),
    (["--queue-num", "1", "--delay-us", "5", "--rate-bps", "-8"],
     "--rate-bps: expected >= 0 (0: unlimited), got -8"),
    (["--queue-num", "1", "--delay-us", "5", "--limit", "0"],
     "--limit: expected 1..2147483648 packets, got 0"),
    (["--queue-num", "1", "--delay-us", "5", "--loss", "5"],
     "--loss: expected a probability 0..1 (0.01 is 1%), got 5.0"),
    (["--queue-num", "1", "--delay-us", "5", "--rt-priority", "100"], "--rt-priority: expected 0..99, got 100"),
    (["--queue-num", "1", "--delay-us", "5", "--overhead", "-1"], "--overhead: expected >= 0, got -1"),
    (["--queue-num", "1", "--delay-us", "5ms"], "argument --delay-us: invalid int value: '5ms'"),
    (["--queue-num", "1", "--delay-us", "5", "--stats", "/nonexistent/s.json"],
     "--stats: no directory /nonexistent: create it first"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[m.split(":")[0] for _a, m in BAD])
def test_bad_input(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scenarios" / "delayline.py"), *argv],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == f"delayline.py: error: {message}\n"
