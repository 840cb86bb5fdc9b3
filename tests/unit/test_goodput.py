"""Goodput: the side worker's timing of each connection (on real local sockets), the
merge of its summaries over workers and hosts, the result's record and accessor, and the
reports' tables."""

from __future__ import annotations

import socket
import time

import pytest

from orchestrator.report.compare import compare
from orchestrator.report.compare_render import render
from orchestrator.report.text import render as render_text
from orchestrator.results.model import Result
from orchestrator.run.transfers import Transfers, figures, merge
from orchestrator.scenario import Step

from .sidescript import side
from .test_result_model import stored

side_worker = side.sys.modules["side_worker"]
S2C = "20261126-012656-s2c-default"  # a saved run


def minimal() -> dict:
    return stored(S2C)
KIB, MIB = 1 << 10, 1 << 20


def pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    made = [socket.socketpair() for _ in range(n)]
    return [a for a, _ in made], [b for _, b in made]


def reader(socks: list[socket.socket]) -> object:
    worker = side_worker.Worker({"role": "client", "stall": 5}, [], {}, socket.socketpair()[0])
    worker.fds = [s.detach() for s in socks]
    return worker


def test_a_paced_read_keeps_each_connection_at_its_rate() -> None:
    """Two connections, 256 KiB each already queued, read at 512 KiB/s each: each
    connection's goodput is 512 KiB/s (within 10%), not the worker's total."""
    ends, socks = pairs(2)
    want, rate = 256 * KIB, 512 * KIB
    for end in ends:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        end.sendall(b"x" * want)
    worker = reader(socks)
    started = time.monotonic()
    assert worker._read(want, rate) == 2 * want
    took = time.monotonic() - started
    t = worker._transfer()["transfer"]
    assert t["connections"] == 2 and t["bytes"] == 2 * want
    assert 0.9 * rate <= t["min"] <= t["max"] <= 1.1 * rate, t
    assert 0.9 * want / rate <= took <= 1.2 * want / rate
    assert worker._transfer() == {}  # replied once


def test_an_unpaced_read_times_each_connection_from_the_reads_start() -> None:
    ends, socks = pairs(3)
    for end in ends:
        end.sendall(b"y" * (64 * KIB))
    worker = reader(socks)
    worker._read(64 * KIB, 0)
    t = worker.transfer
    assert t["connections"] == 3 and t["bytes"] == 3 * 64 * KIB
    span = t["finished"] - t["started"]
    assert t["min"] >= 64 * KIB / span * 0.999  # the last connection took the whole span
    assert t["min"] <= t["sum"] / 3 <= t["max"]


def summary(n: int, nbytes: int, started: float, finished: float, rates: list[float]) -> dict:
    return {"connections": n, "bytes": nbytes, "started": started, "finished": finished,
            "sum": sum(rates), "sumsq": sum(r * r for r in rates), "min": min(rates),
            "max": max(rates)}


def test_summaries_merge_exactly_in_the_side_and_the_orchestrator() -> None:
    a = summary(2, 200, 10.0, 12.0, [100.0, 50.0])
    b = summary(1, 100, 10.5, 11.0, [200.0])
    for merged in (merge(a, b), side_worker.merge_transfer(a, b)):
        assert merged == summary(3, 300, 10.0, 12.0, [100.0, 50.0, 200.0])
    assert merge({}, b) == b
    fig = figures(merge(a, b))
    assert fig["goodput"] == 150.0 and fig["seconds"] == 2.0
    assert fig["per_connection"] == {"mean": pytest.approx(116.7, abs=0.1),
                                     "sd": pytest.approx(62.4, abs=0.1), "min": 50.0,
                                     "max": 200.0}


def test_a_transfer_is_recorded_at_the_join_on_our_clock() -> None:
    """Two client hosts read in the background; each side's clock is off by its own
    offset: the record places both on this machine's clock, per host and in total."""
    offsets = {"server": 0.0, "client1": 100.0, "client2": -50.0}
    roles = {"server": "server", "client1": "client", "client2": "client"}
    moved = Transfers(offsets, roles)
    moved.send("server", 1000.0, {"server": {"ok": True, "first_sent": 1000.5}})
    step = Step("read", side="client", background=True, rate=1000)
    moved.read(5, step, "server", 2000, {"client1": {"reading": 2000}, "client2": {}})
    assert moved.records == []
    moved.join({"server": {"pending": 0},
                "client1": {"transfer": summary(1, 2000, 901.0, 903.0, [1000.0])},
                "client2": {"transfer": summary(1, 2000, 1051.0, 1054.0, [666.7])}})
    (rec,) = moved.records
    assert rec["step"] == 5 and rec["rate"] == 1000 and rec["bytes"] == 4000
    assert rec["seconds"] == 3.0  # 1001 .. 1004 on our clock
    assert rec["from_first_sent_seconds"] == 3.5
    assert set(rec["hosts"]) == {"client1", "client2"}
    assert rec["hosts"]["client1"]["goodput"] == 1000.0
    result = Result.from_dict({**minimal(), "transfers": [rec]})
    assert result.goodput().goodput == pytest.approx(4000 / 3, abs=0.1)
    assert result.goodput(5).mean == pytest.approx(833.4, abs=0.1)
    assert result.goodput(4) is None
    assert result.transfers[0].hosts["client2"].max == 666.7


def test_reports_and_compare_show_bytes_moved_and_counters() -> None:
    rec = {"step": 4, "sender": "server", "receiver": "client", "background": False,
           "rate": None, "bytes_per_connection": 1000, "connections": 2, "bytes": 2000,
           "seconds": 0.5, "goodput": 4000.0,
           "per_connection": {"mean": 2100.0, "sd": 100.0, "min": 2000.0, "max": 2200.0}}
    doc = minimal()
    doc["transfers"] = [rec]
    for cp in doc["checkpoints"]:
        cp["counters"] = {"server": {"TcpRetransSegs": 3, "TcpExtDelayedACKs": 1}, "client": {}}
    result = Result.from_dict(doc)
    text = render_text(result)
    assert "Bytes moved (goodput of each transfer)" in text
    assert "server→client (step 4)" in text and "3.9 KiB/s" in text
    assert "Kernel counters per host (change since the baseline)" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["server", "TcpRetransSegs", "3"] in [line[:3] for line in lines]
    faster = Result.from_dict({**doc, "run_id": "b", "transfers": [dict(rec, goodput=8000.0)],
                               "profile": {"name": "other"}})
    table = render(compare([result, faster]))
    assert "Bytes moved (goodput, bytes/s)" in table
    row = next(line for line in table.splitlines() if "goodput (all)" in line)
    assert row.split()[-3:] == ["8,000", "+4,000", "2.00×"]
    assert "Kernel counters at" not in table  # the counters are the same in both


def test_the_html_report_has_the_moved_section_only_when_there_is_something() -> None:
    from orchestrator.report.html import render_html

    doc = minimal()
    assert 'id="moved"' not in render_html(Result.from_dict(doc), {})
    for cp in doc["checkpoints"]:
        cp["counters"] = {"server": {"TcpExtListenOverflows": 36}, "client": {}}
    page = render_html(Result.from_dict(doc), {})
    assert 'id="moved"' in page and "<td>TcpExtListenOverflows</td>" in page
    assert "Goodput of each transfer" not in page  # no transfer in this run


def test_join_says_it_is_alive_while_a_transfer_outlasts_the_stall_timer() -> None:
    """A background transfer longer than --stall (a slow link): the join emits a progress
    line of 0 every third of the stall time, so the orchestrator does not take the side
    for stalled; the reply comes once the transfer ends."""
    import json
    import threading

    here, there = socket.socketpair()
    worker = side_worker.Worker({"role": "client", "stall": 0.6}, [], {}, here)
    worker.reader = threading.Thread(target=time.sleep, args=(1.1,))
    worker.reader.start()
    started = time.monotonic()
    reply = worker.op_join({"op": "join"})
    assert time.monotonic() - started >= 1.0 and reply["pending"] == 0
    there.settimeout(1)
    lines = [json.loads(x) for x in there.recv(65536).decode().splitlines()]
    assert 3 <= len(lines) <= 6 and all(x == {"progress": 0, "op": "join"} for x in lines)


def test_a_foreground_read_says_it_is_alive_while_data_trickles() -> None:
    """A read that still gets data, however slowly, outlasts --stall (after memory
    pressure, a BBR sender can pace a connection at a few KB/s for minutes): it emits a
    progress line of 0 every third of the stall time, then its reply."""
    import json
    import threading

    here, there = socket.socketpair()
    a, b = socket.socketpair()
    worker = side_worker.Worker({"role": "client", "stall": 0.6}, [], {}, here)
    worker.fds = [a.detach()]

    def trickle() -> None:
        for _ in range(12):
            b.send(b"y" * 10)
            time.sleep(0.1)
    threading.Thread(target=trickle).start()
    started = time.monotonic()
    reply = worker.op_read({"op": "read", "bytes": 120})
    assert time.monotonic() - started >= 1.0 and reply["read"] == 120
    there.settimeout(1)
    lines = [json.loads(x) for x in there.recv(65536).decode().splitlines()]
    assert 3 <= len(lines) <= 7 and all(x == {"progress": 0, "op": "read"} for x in lines)


def test_a_foreground_read_that_gets_nothing_still_fails_after_the_stall_time() -> None:
    here, _there = socket.socketpair()
    a, _b = socket.socketpair()
    worker = side_worker.Worker({"role": "client", "stall": 0.5}, [], {}, here)
    worker.fds = [a.detach()]
    with pytest.raises(TimeoutError, match=r"^1 connections delivered no data for 0 s \(read 0 bytes\)$"):
        worker.op_read({"op": "read", "bytes": 10})
