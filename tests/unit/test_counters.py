"""Kernel counters: the pure parser of /proc/net/netstat + /proc/net/snmp on captured text
(tests/data/counters-*.txt, kernel 6.18, made by tests/data/capture_counters.py), deltas,
and how a checkpoint records them per host."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.measure.counters import NOTABLE, deltas, ordered, parse_counters
from orchestrator.measure.parsers import ParseError
from orchestrator.results.model import Checkpoint
from orchestrator.run.checkpoint import Checkpoints
from orchestrator.run.sides import Sides
from orchestrator.scenario import Expect

from .fakes import FakeChannel, FakeKernel, FakeRunner, lab_host

DATA = Path(__file__).resolve().parents[1] / "data"
#: constants of the Tcp section, the same in every namespace
CONSTANTS = {"TcpRtoAlgorithm": 1, "TcpRtoMin": 200, "TcpRtoMax": 120000, "TcpMaxConn": -1}


def read(name: str) -> dict[str, int]:
    return parse_counters((DATA / name).read_text())


def test_the_host_capture_has_every_kept_section_under_nstat_names() -> None:
    host = read("counters-host.txt")
    assert len(host) == 135 + 15 + 18  # TcpExt, Tcp, IpExt of this kernel
    assert {k for k in host if k.startswith("TcpExt")} >= {f"TcpExt{n}" for n in (
        "ListenOverflows", "TCPMemoryPressures", "TCPMemoryPressuresChrono", "PruneCalled",
        "RcvPruned", "OfoPruned", "TCPRcvCollapsed", "TCPAbortOnMemory", "TCPRcvQDrop",
        "TCPOFOQueue", "TCPOFODrop", "TCPLostRetransmit", "TCPTimeWaitOverflow",
        "ListenDrops", "TCPBacklogDrop")}
    # Tcp and IpExt both have InCsumErrors: nstat names keep them apart
    assert "TcpInCsumErrors" in host and "IpExtInCsumErrors" in host
    assert not any(k.startswith(("Ip", "Udp", "Icmp", "MPTcp")) and not k.startswith("IpExt")
                   for k in host)
    assert set(NOTABLE) <= set(host)


def test_a_fresh_namespace_starts_at_zero() -> None:
    fresh = read("counters-fresh-a.txt")
    assert {k: v for k, v in fresh.items() if v} == CONSTANTS


def test_a_listen_overflow_storm_moves_its_namespace_only() -> None:
    """Namespace a: a backlog-1 listener and 20 connects; namespace b, meanwhile, nothing:
    the counters are per network namespace on this kernel."""
    moved = deltas(read("counters-fresh-a.txt"), read("counters-overflow-a.txt"))
    assert moved["TcpExtListenOverflows"] == 36 and moved["TcpExtListenDrops"] == 36
    assert moved["TcpActiveOpens"] == 20 and moved["TcpRetransSegs"] == 18
    assert moved["TcpExtTCPSynRetrans"] == 18
    assert 0 not in moved.values()
    other = read("counters-overflow-b.txt")
    assert {k: v for k, v in other.items() if v} == CONSTANTS


def test_deltas_are_sorted_non_zero_and_count_new_counters_from_zero() -> None:
    assert deltas({"b": 1, "a": 5}, {"b": 1, "a": 7, "c": 2}) == {"a": 2, "c": 2}
    assert list(deltas({}, {"z": 1, "a": 1})) == ["a", "z"]


def test_notable_counters_come_first() -> None:
    moved = {"TcpExtDelayedACKs": 4, "TcpRetransSegs": 3, "TcpExtListenOverflows": 2,
             "TcpActiveOpens": 1}
    assert [k for k, _ in ordered(moved)] == ["TcpRetransSegs", "TcpExtListenOverflows",
                                              "TcpActiveOpens", "TcpExtDelayedACKs"]


@pytest.mark.parametrize("text, problem", [
    ("TcpExt: A B\n", "a header line without its values line (line 1: 'TcpExt: A B')"),
    ("TcpExt: A B\nTcpExt: 1\n", "TcpExt: 2 names but 1 values (line 2: 'TcpExt: 1')"),
    ("TcpExt: A B\nTcpExt: 1 x\n", "TcpExt: value of 'B' is not an integer "
                                   "(line 2: 'TcpExt: 1 x')"),
    ("TcpExt: A\nIpExt: 1\n", "expected a 'Section: names' line and a 'Section: values' line "
                              "(line 2: 'IpExt: 1')"),
])
def test_malformed_text_is_refused_naming_the_line(text: str, problem: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_counters(text)
    assert str(err.value).startswith(f"cannot parse /proc/net/netstat: {problem}.")


def test_other_sections_are_skipped_unchecked() -> None:
    assert parse_counters("Udp: A B\nUdp: 1 2\nTcp: X\nTcp: 3\n") == {"TcpX": 3}


class _UI:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_each_checkpoint_records_each_hosts_own_counter_changes(tmp_path) -> None:
    """The server's namespace overflowed its listener, the client's did not move: the
    record says so per host, non-zero changes only, and keeps the raw text."""
    fresh = (DATA / "counters-fresh-a.txt").read_text()
    sockstat = (DATA / "sockstat-established-2000-server.txt").read_text()
    runners = {h: FakeRunner(h, [{}], {"/proc/net/sockstat": sockstat, "/proc/net/netstat": fresh})
               for h in ("server", "client")}
    hosts = {h: lab_host(h, h, runners[h]) for h in runners}
    kernel = FakeKernel({"/proc/slabinfo": (DATA / "slabinfo-baseline.txt").read_text(),
                         "/proc/meminfo": (DATA / "meminfo-baseline.txt").read_text()},
                        list(hosts))
    sides = Sides({h: FakeChannel(h) for h in hosts}, {"server": "server", "client": "client"},
                  stall=5)
    cps = Checkpoints(_UI(), SimpleNamespace(), hosts, kernel, sides, tmp_path, 5, None)
    cps.take("baseline", Expect({}, {}), 0)
    runners["server"].files["/proc/net/netstat"] = (DATA / "counters-overflow-a.txt").read_text()
    runners["client"].files["/proc/net/netstat"] = (DATA / "counters-overflow-b.txt").read_text()
    cps.take("queued", Expect({}, {}), 0)
    base, queued = cps.records
    assert base["counters"] == {"server": {}, "client": {}}
    assert queued["counters"]["client"] == {}
    assert queued["counters"]["server"]["TcpExtListenOverflows"] == 36
    assert queued["tw_overflow"] == {"server": 0, "client": 0}
    assert (tmp_path / "queued" / "server-counters.txt").read_text().startswith("TcpExt:")
    cp = Checkpoint.from_dict(queued)
    assert cp.counter("server", "ListenOverflows") == 36
    assert cp.counter("server", "TcpRetransSegs") == cp.counter("server", "RetransSegs") == 18
    assert cp.counter("client", "ListenOverflows") == 0
