"""orchestrator.report_text.render on a result built from the real captures of tests/data.

The result dict has the fields labrun.LabRun._save writes that the renderer reads.
"""

from __future__ import annotations

import pytest

from orchestrator import analysis, report_text
from orchestrator.results import SCHEMA

K = 2000


def baseline_entry(snap) -> dict:
    """What labrun stores for the baseline checkpoint (a reference, nothing measured)."""
    return {"name": snap.name, "time": snap.time, "connections": 0, "collect_seconds": 0.0,
            "states": {h: dict(s.ss.states) for h, s in snap.hosts.items()},
            "sockstat": {h: s.sockstat for h, s in snap.hosts.items()}}


def make_result(capture, aliases, names: list[str], base: str = "baseline",
                scenario: str = "timewait", nbytes: int = 0) -> dict:
    b = capture(base)
    checkpoints = [baseline_entry(b)]
    checkpoints += [analysis.checkpoint(b, capture(n), K, aliases) for n in names]
    return {
        "schema": SCHEMA,
        "run_id": "20261126-011934-test",
        "status": "complete",
        "error": None,
        "scenario": {"name": scenario, "description": "", "connections": K, "bytes": nbytes,
                     "steps": []},
        "profile": {"name": "default", "description": "", "sysctls": {}, "files": []},
        "metadata": {
            "tool_version": "0.test",
            "backend": "netns",
            "kernel": {"release": "6.18.44-fc-v782", "version": "#1", "machine": "x86_64"},
            "slab_aliases": aliases,
            "idle_pair_estimate": analysis.idle_pair_estimate(b.slab),
        },
        "checkpoints": checkpoints,
    }


@pytest.fixture(scope="module")
def idle_result(capture, slab_aliases) -> dict:
    return make_result(capture, slab_aliases, ["established", "fin_wait2", "time_wait"])


def table_row(text: str, first: str, after: str) -> list[str]:
    """The cells of the first line starting with ``first`` after the line holding ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    line = next(line for line in lines[start:] if line.split() and line.split()[0] == first)
    return line.split()


def test_header(idle_result) -> None:
    text = report_text.render(idle_result)
    assert text.splitlines()[0] == ("tcplab 0.test · timewait · profile default · backend netns · "
                                    "kernel 6.18.44-fc-v782 · N=2,000 · BYTES=0")


def test_memory_table_numbers(idle_result) -> None:
    text = report_text.render(idle_result)
    cps = report_text.measured(idle_result)
    assert [c["name"] for c in cps] == ["established", "fin_wait2", "time_wait"]
    caches = report_text.top_caches(cps)
    assert caches[:2] == ["TCP", "sock_inode_cache"]
    head = table_row(text, "checkpoint", "Kernel memory per connection")
    assert head[1:3] == ["TCP", "sock_inode"]
    row = table_row(text, "established", "Kernel memory per connection")
    # TCP 4,915.2 B, sock_inode_cache 1,654.8 B, total 7,602.2 B, Slab (meminfo) 7,665.7 B
    assert row[1:3] == ["4,915", "1,655"]
    assert "7,602" in row
    assert row[-1] == "7,666"
    est = analysis.idle_pair_estimate(idle_result and __import__("tests.conftest", fromlist=["x"])
                                      .load_capture("baseline").slab)["total"]
    assert row[row.index("7,602") - 1] == "0" or est  # "other" precedes total
    tw = table_row(text, "time_wait", "Kernel memory per connection")
    assert tw[1] == "0"  # TCP is back to drift: not shown as socket memory


def test_total_column_equals_checkpoint_total(idle_result) -> None:
    text = report_text.render(idle_result)
    head = table_row(text, "checkpoint", "Kernel memory per connection")
    # header cells "TCP mem charged†" and "Slab (meminfo)" are several words: index from the left
    total_col = head.index("total")
    for cp in report_text.measured(idle_result):
        row = table_row(text, cp["name"], "Kernel memory per connection")
        assert row[total_col] == f"{cp['per_connection_bytes']['total']:,.0f}"


def test_buffers_table_unread(capture, slab_aliases) -> None:
    result = make_result(capture, slab_aliases, ["unread"], base="baseline-unread",
                         scenario="c2s", nbytes=13)
    text = report_text.render(result)
    row = table_row(text, "unread", "Socket buffers per host")
    # checkpoint host sockets rmem_alloc wmem_queued fwd_alloc Recv-Q Send-Q sockstat-mem
    assert row == ["unread", "server", "300", "845", "0", "3,251", "3,900", "0", "1,942"]
    mem = table_row(text, "unread", "Kernel memory per connection")
    assert f"{result['checkpoints'][1]['per_connection_bytes']['tcp_mem_charged']:,.0f}" == "3,670"
    assert "3,670" in mem


def test_states_table_and_notes(idle_result) -> None:
    text = report_text.render(idle_result)
    assert table_row(text, "fin_wait2", "TCP states (ss)")[1:] == ["server", "CLOSE-WAIT", "300"]
    assert table_row(text, "time_wait", "TCP states (ss)")[1:] == ["client", "TIME-WAIT", "300"]
    assert "eventpoll_epi also counts fib6_node, pte_list_desc, tcp_bind2_bucket, " \
           "tcp_bind_bucket (SLUB merged caches)" in text
    assert text.splitlines()[-1] == "Objects of one idle connection pair by live object sizes: 7,536 B"


def test_markdown_format(idle_result) -> None:
    text = report_text.render(idle_result, "github")
    assert any(line.startswith("| established") and "7,602" in line for line in text.splitlines())


def test_incomplete_and_empty(idle_result) -> None:
    result = dict(idle_result, status="incomplete", error="side stalled",
                  checkpoints=idle_result["checkpoints"][:1])
    text = report_text.render(result)
    assert "INCOMPLETE: side stalled" in text.splitlines()[0]
    assert text.splitlines()[-1] == "no checkpoint was measured"
