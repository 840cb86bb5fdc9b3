"""orchestrator.report.text.render on a result built from the real captures of tests/data.

The result has the fields labrun.LabRun._save writes that the renderer reads.
"""

from __future__ import annotations

import re

import pytest

from orchestrator.measure import analysis
from orchestrator.report import text as report_text
from orchestrator.results import SCHEMA, Result

K = 2000


def baseline_entry(snap) -> dict:
    """What labrun stores for the baseline checkpoint (a reference, nothing measured)."""
    return {"name": snap.name, "time": snap.time, "connections": 0, "collect_seconds": 0.0,
            "states": {h: dict(s.ss.states) for h, s in snap.hosts.items()},
            "sockstat": {h: s.sockstat for h, s in snap.hosts.items()}}


def make_result(capture, aliases, names: list[str], base: str = "baseline",
                scenario: str = "timewait", nbytes: int = 0) -> Result:
    b = capture(base)
    checkpoints = [baseline_entry(b)]
    checkpoints += [analysis.checkpoint(b, capture(n), K, aliases) for n in names]
    return Result.from_dict({
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
    })


@pytest.fixture(scope="module")
def idle_result(capture, slab_aliases) -> Result:
    return make_result(capture, slab_aliases, ["established", "fin_wait2", "time_wait"])


def table(text: str, title: str) -> dict[str, dict[str, str]]:
    """The simple-format table under the line ``title``: {first cell: {column: cell}}.

    Columns are cut at the dash groups under the header, so multi-word headers work.
    The first cell is the checkpoint, with ``/host`` appended for tables with a host column.
    """
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    head, dashes = lines[i], lines[i + 1]
    spans = [m.span() for m in re.finditer(r"-+", dashes)]
    names = [head[a:b].strip() for a, b in spans]
    out = {}
    for line in lines[i + 2:]:
        if not line.strip() or line[0] in "*†":
            break
        cells = dict(zip(names, (line[a:b].strip() for a, b in spans), strict=False))
        key = cells["checkpoint"] + (f"/{cells['host']}" if "host" in cells else "")
        out[key] = cells
    return out


MEMORY = "Kernel memory per connection"
BUFFERS = "Socket buffers per host"


def test_header(idle_result) -> None:
    text = report_text.render(idle_result)
    assert text.splitlines()[0] == ("tcplab 0.test · timewait · profile default · "
                                    "backend netns · "
                                    "kernel 6.18.44-fc-v782 · N=2,000 · BYTES=0")


def test_memory_table_numbers(idle_result) -> None:
    text = report_text.render(idle_result)
    rows = table(text, MEMORY)
    assert list(rows) == ["established", "fin_wait2", "time_wait"]
    est = rows["established"]
    # objects x slab footprint: TCP 4,980 B, total 7,746 B (within 3% of the 7,536 B idle
    # pair estimate by object sizes), meminfo Slab 93,880 -> 108,852 kB = 7,665.7 B
    assert est["TCP"] == "4,980"
    assert est["sock_inode"] == "1,668"
    assert est["dentry"] == "385"
    assert est["eventpoll_epi"] == "242"
    assert est["tw_sock_TCP"] == "0"
    assert est["total"] == "7,746"
    assert est["TCP mem charged†"] == "0"
    assert est["Slab (meminfo)"] == "7,666"
    assert est["conntrack*"] == "0"
    # TIME-WAIT: TCP is drift, tw_sock_TCP holds 1,904 x 256 B objects in 114 pages
    tw = rows["time_wait"]
    assert tw["TCP"] == "0"
    assert tw["tw_sock_TCP"] == "244"
    assert tw["eventpoll_epi"] == "242"
    assert tw["TCP mem charged†"] == "524"  # (406 - 150) pages x 4096 / 2000


def test_columns_add_up_to_the_total(idle_result) -> None:
    rows = table(report_text.render(idle_result), MEMORY)
    for cp in idle_result.measured():
        pcb = cp.per_connection()
        cells = rows[cp.name]
        assert cells["total"] == f"{pcb.total:,.0f}"
        assert cells["drift*"] == f"{pcb.drift:,.0f}"
        shown = list(pcb.attributed().values())
        assert sum(shown) == pytest.approx(pcb.total, abs=1)


def test_buffers_table_unread(capture, slab_aliases) -> None:
    result = make_result(capture, slab_aliases, ["unread"], base="baseline-unread",
                         scenario="c2s", nbytes=13)
    text = report_text.render(result)
    server = table(text, BUFFERS)["unread/server"]
    assert server == {"checkpoint": "unread", "host": "server", "sockets": "300",
                      "rmem_alloc": "845", "wmem_queued": "0", "fwd_alloc": "3,251",
                      "Recv-Q total": "3,900", "Send-Q total": "0", "sockstat mem†": "1,942"}
    mem = table(text, MEMORY)["unread"]
    assert mem["skbuff_small_head"] == "553"
    assert mem["TCP mem charged†"] == "3,670"  # (1942 - 150) pages x 4096 / 2000
    assert mem["total"] == "8,814"


def test_states_table_and_notes(idle_result) -> None:
    text = report_text.render(idle_result)
    for line in (r"fin_wait2\s+server\s+CLOSE-WAIT 300", r"fin_wait2\s+client\s+FIN-WAIT-2 300",
                 r"time_wait\s+client\s+TIME-WAIT 300", r"time_wait\s+server\s+-"):
        assert re.search(f"^{line}$", text, re.MULTILINE), line
    assert "eventpoll_epi also counts fib6_node, pte_list_desc, tcp_bind2_bucket, " \
           "tcp_bind_bucket (SLUB merged caches)" in text
    assert ("Objects of one idle connection pair by live object sizes: 7,536 B"
            in text.splitlines())
    assert text.splitlines()[-1].startswith(" – TIME_WAIT sheds socket objects")


def test_markdown_format(idle_result) -> None:
    text = report_text.render(idle_result, "github")
    assert any(line.startswith("| established") and "7,746" in line for line in text.splitlines())


def test_incomplete_and_empty(idle_result) -> None:
    data = idle_result.to_dict()
    data.update(status="incomplete", error="side stalled", checkpoints=data["checkpoints"][:1])
    result = Result.from_dict(data)
    text = report_text.render(result)
    assert "INCOMPLETE: side stalled" in text.splitlines()[0]
    assert text.splitlines()[-1] == "no checkpoint was measured"


def test_ssh_fanout_section(capture, slab_aliases) -> None:
    """ssh: the clock offsets and each snapshot's parallel vs serial reads, as recorded
    (figures of a three-host run on this machine: server and two clients)."""
    result = make_result(capture, slab_aliases, ["established"]).to_dict()
    clock = {"offset_s": -3.2e-05, "error_s": 0.000138, "spread_s": 0.000938,
             "median_offset_s": -2.1e-05, "rounds": 9}
    result["metadata"]["backend"] = "ssh"
    result["metadata"]["hosts"] = {h: {"role": h.rstrip("2"), "clock": clock}
                                   for h in ("server", "client", "client2")}
    for cp in result["checkpoints"]:
        cp["fanout"] = {"hosts": 3, "parallel_seconds": 1.0921, "serial_seconds": 1.8482,
                        "read_at": {"client": 0.0, "client2": 0.0979, "server": 0.2481}}
    text = report_text.render(Result.from_dict(result))
    assert ("clock offsets (host minus this machine, ± bound): server -0.0 ms ±0.1, "
            "client -0.0 ms ±0.1, client2 -0.0 ms ±0.1") in text
    rows = table(text, "clock offsets")
    assert rows["established"] == {"checkpoint": "established", "hosts": "3",
                                   "parallel s": "1.092", "serial s": "1.848",
                                   "read spread ms": "248.1"}
    # other backends: no such section
    assert "Hosts over SSH" not in report_text.render(make_result(capture, slab_aliases,
                                                                  ["established"]))
