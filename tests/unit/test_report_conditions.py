"""Findings under real conditions (report/conditions.py) and the pressure chart, from a
stored s2c result (tests/data/results) given the steps, link, tcp_mem or counters each
statement reads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from orchestrator.report import conditions
from orchestrator.report import text as report_text
from orchestrator.report.conditions_charts import pressure_chart
from orchestrator.report.findings import FAILS, HOLDS, UNTESTED
from orchestrator.results.model import Result

RUN = Path(__file__).resolve().parents[1] / "data" / "results" / "20261126-012656-s2c-default"
STORED = json.loads((RUN / "result.json").read_text())
PACED = [{"checkpoint": "baseline"}, {"connect": {}}, {"checkpoint": "established"},
         {"send": {"side": "server", "background": True}},
         {"read": {"side": "client", "rate": 1048576, "background": True}},
         {"checkpoint": "unread"}, {"join": {}}, {"checkpoint": "read"}]


def result(steps=None, link=None, tcp_mem=None, counters=None, name=None) -> Result:
    data = copy.deepcopy(STORED)
    if steps is not None:
        data["scenario"]["steps"] = steps
    if name is not None:
        data["scenario"]["name"] = name
    if link is not None:
        data["metadata"]["link"] = {"link": link, "engine": "netem"}
    if tcp_mem is not None:
        data["metadata"]["host_sysctls"] = {"net.ipv4.tcp_mem": tcp_mem}
    for cp_name, moved in (counters or {}).items():
        next(c for c in data["checkpoints"] if c["name"] == cp_name)["counters"] = moved
    return Result.from_dict(data)


def test_nothing_stated_for_the_articles_scenarios():
    plain = result()
    assert conditions.statements(plain) == []
    assert "real conditions" not in report_text.render(plain)
    assert pressure_chart(plain) is None


def test_slow_readers_without_a_link_against_the_limits():
    v = conditions.slow_readers(result(steps=PACED))
    assert v["verdict"] == HOLDS
    assert v["evidence"].startswith("at unread, the clients read 1,048,576 B/s per connection")
    assert "client holds 67,248 B per socket (rmem_alloc, median 67,200, mean 67,248) = 0.2% " \
           "of tcp_rmem[2] 33,554,432 B (0.5× tcp_rmem[1] 131,072)" in v["evidence"]
    assert "of tcp_wmem[2] 4,194,304 B" in v["evidence"]
    assert "no link in this run" in v["evidence"]


def test_slow_readers_against_the_bdp_of_the_link():
    link = {"delay_us": 10000, "rate_bps": 100_000_000, "loss_pct": 0}
    v = conditions.slow_readers(result(steps=PACED, link=link))
    assert "BDP = 12,500,000 B/s × 20.0 ms = 250,000 B: the receiver holds 0.27×" in \
        v["evidence"]
    assert conditions.bdp(link) == (12_500_000.0, 0.02, 250_000.0)


def test_slow_readers_over_a_delay_without_a_rate_take_the_readers_pace():
    """A link with a delay and no rate (the RTT sweeps of docs/conditions.md): each
    connection's rate is the reader's pace, so the BDP is pace × RTT, not "no link"."""
    v = conditions.slow_readers(result(steps=PACED, link={"delay_us": 50000, "loss_pct": 1.0}))
    assert "BDP = 1,048,576 B/s (the reader's pace; the link has no rate) × 100.0 ms = " \
        "104,858 B: the receiver holds 0.64×" in v["evidence"]
    assert "no link in this run" not in v["evidence"]


def test_pressure_crossed_with_counters_per_host():
    moved = {"unread": {"server": {"TcpExtTCPMemoryPressures": 3, "TcpExtPruneCalled": 5},
                        "client": {"TcpExtTCPRcvQDrop": 7, "TcpRetransSegs": 1}},
             "read": {"server": {"TcpExtTCPMemoryPressures": 3, "TcpExtPruneCalled": 6}}}
    r = result(tcp_mem="4096 8192 12288", counters=moved)
    v = conditions.pressure(r)
    assert v["verdict"] == HOLDS
    assert v["evidence"].startswith("sockstat TCP mem peaked at 34,194 pages (133.6 MiB) "
                                    "against tcp_mem low 4,096 / pressure 8,192 / high 12,288")
    # deltas are since the baseline: the largest per host, not a sum over checkpoints
    assert "server: TCPMemoryPressures 3, PruneCalled 6; client: TCPRcvQDrop 7" in v["evidence"]
    assert "tcp_mem: the pressure mark is crossed — holds" in report_text.render(r)
    svg = pressure_chart(r)
    assert svg is not None and "tcp_mem pressure 8,192" in svg and "tcp_mem high 12,288" in svg


def test_pressure_not_crossed_and_counters_not_recorded():
    r = result(tcp_mem="40000 80000 120000", name="pressure")
    v = conditions.pressure(r)
    assert v["verdict"] == FAILS
    assert "kernel counters: not recorded in this result" in v["evidence"]
    assert conditions.pressure(result(tcp_mem="40000 80000 120000")) is None  # not aimed at


def test_lossy_needs_a_link_with_loss():
    v = conditions.lossy(result(name="lossy"))
    assert v == {"finding": conditions.F_LOSS, "verdict": UNTESTED,
                 "evidence": "not tested: the run had no link loss (run it with "
                             "LINK=\"delay=10ms loss=1%\", --link)"}
    moved = {"unread": {"server": {"TcpRetransSegs": 40}, "client": {"TcpExtTCPOFOQueue": 12}}}
    v = conditions.lossy(result(link={"delay_us": 5000, "loss_pct": 1.0}, counters=moved))
    assert v["verdict"] == HOLDS
    assert v["evidence"] == ("link loss 1%; kernel counters server: RetransSegs 40; "
                             "client: TCPOFOQueue 12")


CAPTURED = Path(__file__).resolve().parents[1] / "data" / "conditions"


def captured(name: str) -> Result:
    import gzip

    return Result.from_dict(json.loads(gzip.decompress((CAPTURED / name).read_bytes())))


def test_captured_pressure_run():
    r = captured("pressure-20261201-033739.result.json.gz")
    v = conditions.pressure(r)
    assert v["verdict"] == HOLDS
    assert v["evidence"] == (
        "sockstat TCP mem peaked at 11,607 pages (45.3 MiB) against tcp_mem low 4,096 / "
        "pressure 8,192 / high 12,288 pages; above the pressure mark for about 3.6 s; kernel "
        "counters server: TCPMemoryPressures 1; client: PruneCalled 1,771, OfoPruned 201, "
        "TCPRcvQDrop 1,383, TCPOFODrop 190, TCPMemoryPressuresChrono 4,284")
    assert conditions.tcp_mem(r) == [4096, 8192, 12288]
    assert conditions.slow_readers(r) is None and conditions.lossy(r) is None


def test_captured_slow_readers_run():
    r = captured("slow-readers-20261201-033622.result.json.gz")
    v = conditions.slow_readers(r)
    assert v["verdict"] == HOLDS
    assert "client holds 124,936 B per socket (rmem_alloc, median 124,936, mean 124,587)" \
        in v["evidence"]
    assert "server queues 1,204,583 B per socket" in v["evidence"]
    assert conditions.pressure(r) is None
