"""orchestrator.report.findings on real results (tests/data/results, kernel 6.18, netns, N=2000).

c2s (13 unread bytes, then read), timewait (FIN_WAIT2 then TIME_WAIT) and s2c (64 KiB):
each of the article's conclusions holds on the result that tests it and is "not tested"
on the others. Copies changed by hand show the "does not hold" path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.report import findings
from orchestrator.report.findings import (
    F_BELOW_RMEM,
    F_RELEASED,
    F_TIMEWAIT,
    FAILS,
    HOLDS,
    UNTESTED,
)
from orchestrator.results import Result, load_result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
C2S = "20261126-012650-c2s-default"
TIMEWAIT = "20261126-012654-timewait-default"
S2C = "20261126-012656-s2c-default"
S2C_SMALL = "20261126-012700-s2c-small-buffers"


def load(name: str) -> Result:
    return load_result(RESULTS / name)


def edit(name: str) -> dict:
    """The stored document of a result, to change by hand (read back with Result.from_dict)."""
    return load(name).to_dict()


def by_finding(result: Result | dict) -> dict[str, dict]:
    if isinstance(result, dict):
        result = Result.from_dict(result)
    return {v["finding"]: v for v in findings.verdicts(result)}


def cp(result: dict, name: str) -> dict:
    return next(c for c in result["checkpoints"] if c["name"] == name)


def test_three_verdicts_in_article_order_with_allowed_values():
    for name in (C2S, TIMEWAIT, S2C, S2C_SMALL):
        out = findings.verdicts(load(name))
        assert [v["finding"] for v in out] == [F_RELEASED, F_BELOW_RMEM, F_TIMEWAIT]
        for v in out:
            assert set(v) == {"finding", "verdict", "evidence"}
            assert v["verdict"] in (HOLDS, FAILS, UNTESTED)
            assert v["evidence"]


def test_c2s_buffers_released_promptly_holds_with_numbers():
    v = by_finding(load(C2S))[F_RELEASED]
    assert v["verdict"] == HOLDS
    assert "845 B at unread → 0 B at read" in v["evidence"]
    # sockstat mem 2,062 pages at unread; 14 after the read, within one 0.1 s sample
    assert "2,062 → 14 pages" in v["evidence"]
    assert "within one sample (0.1 s)" in v["evidence"]


def test_c2s_release_time_from_the_timeline():
    result = load(C2S)
    pair = findings.read_pair(result)
    assert pair is not None
    assert (pair.unread.name, pair.read.name, pair.receiver, pair.sender) == \
        ("unread", "read", "server", "client")
    drop = findings.release_time(result, pair)
    # the unread snapshot began 0.834 s into the run and took 0.378 s: the read began at
    # 1.212 s; first sample back down at 1.235 s
    assert drop == {"start": 1.212, "dropped_at": 1.235, "seconds": 0.023, "interval": 0.1,
                    "from_pages": 2062, "to_pages": 14}


def test_c2s_real_buffer_below_tcp_rmem_min_holds():
    v = by_finding(load(C2S))[F_BELOW_RMEM]
    assert v["verdict"] == HOLDS
    assert "holding 13 bytes: 845 B < tcp_rmem[0] 4,096 B" in v["evidence"]
    assert "3,251" in v["evidence"]  # the forward allocation that rounds it to a page


def test_c2s_timewait_not_tested():
    v = by_finding(load(C2S))[F_TIMEWAIT]
    assert v["verdict"] == UNTESTED
    assert "--scenario timewait" in v["evidence"]


def test_timewait_sheds_socket_objects_holds():
    out = by_finding(load(TIMEWAIT))
    v = out[F_TIMEWAIT]
    assert v["verdict"] == HOLDS
    assert "tw_sock_TCP +1.00" in v["evidence"]
    assert "2,000 TIME-WAIT sockets" in v["evidence"]
    assert "475 B per connection" in v["evidence"]
    assert out[F_RELEASED]["verdict"] == UNTESTED
    assert out[F_BELOW_RMEM]["verdict"] == UNTESTED


def test_s2c_64k_released_holds_below_rmem_not_tested():
    out = by_finding(load(S2C))
    assert out[F_RELEASED]["verdict"] == HOLDS
    assert "client receive memory" in out[F_RELEASED]["evidence"]
    assert "67,200 B at unread → 0 B at read" in out[F_RELEASED]["evidence"]
    below = out[F_BELOW_RMEM]
    assert below["verdict"] == UNTESTED
    assert "65,536 bytes" in below["evidence"]


def test_small_buffers_release_takes_longer_and_shows_send_queue():
    v = by_finding(load(S2C_SMALL))[F_RELEASED]
    assert v["verdict"] == HOLDS
    assert "server send queue (wmem_queued) 57,448 → 0 B" in v["evidence"]
    assert "0.3 s after the read began" in v["evidence"]


def test_buffers_kept_after_read_does_not_hold():
    result = edit(C2S)
    cp(result, "read")["buffers"]["server"]["rmem_alloc"]["median"] = 845.0
    v = by_finding(result)[F_RELEASED]
    assert v["verdict"] == FAILS
    assert "845 B at unread → 845 B at read" in v["evidence"]


def test_buffer_above_tcp_rmem_min_does_not_hold():
    result = edit(C2S)
    cp(result, "unread")["buffers"]["server"]["rmem_alloc"]["median"] = 5000.0
    v = by_finding(result)[F_BELOW_RMEM]
    assert v["verdict"] == FAILS
    assert "5,000 B ≥ tcp_rmem[0] 4,096 B" in v["evidence"]


def test_tcp_rmem_read_from_the_receiving_host():
    result = edit(C2S)
    result["metadata"]["hosts"]["server"]["net_sysctls"]["net.ipv4.tcp_rmem"] = "512 1024 2048"
    v = by_finding(result)[F_BELOW_RMEM]
    assert v["verdict"] == FAILS  # 13 bytes held < 512, but 845 B real >= 512
    assert "tcp_rmem[0] 512 B" in v["evidence"]


def test_timewait_keeping_files_does_not_hold():
    result = edit(TIMEWAIT)
    rows = cp(result, "time_wait")["per_connection_bytes"]["by_cache"]
    filp = next(r for r in rows if r["cache"] == "filp")
    filp["objects_per_connection"] = 1.0
    v = by_finding(result)[F_TIMEWAIT]
    assert v["verdict"] == FAILS
    assert "filp 1.00 (established 1.96)" in v["evidence"]


def test_timewait_without_tw_socks_does_not_hold():
    result = edit(TIMEWAIT)
    rows = cp(result, "time_wait")["per_connection_bytes"]["by_cache"]
    cp(result, "time_wait")["per_connection_bytes"]["by_cache"] = [
        r for r in rows if r["cache"] != "tw_sock_TCP"]
    assert by_finding(result)[F_TIMEWAIT]["verdict"] == FAILS


def test_incomplete_result_is_not_tested_not_a_crash():
    result = edit(C2S)
    result["status"], result["error"] = "incomplete", "checkpoint read: not reached"
    result["checkpoints"] = result["checkpoints"][:3]  # baseline, established, unread
    result["timeline"] = None
    out = by_finding(result)
    assert out[F_RELEASED]["verdict"] == UNTESTED
    assert out[F_BELOW_RMEM]["verdict"] == HOLDS  # the unread checkpoint was measured


def test_no_timeline_still_judges_from_checkpoints():
    result = edit(C2S)
    result["timeline"] = None
    v = by_finding(result)[F_RELEASED]
    assert v["verdict"] == HOLDS
    assert "sockstat" not in v["evidence"]


@pytest.mark.parametrize("name, marks", [(C2S, ["✓", "✓", "–"]), (TIMEWAIT, ["–", "–", "✓"])])
def test_findings_text(name, marks):
    text = findings.findings_text(load(name))
    lines = text.splitlines()
    assert lines[0] == "Findings (source article)"
    assert [line.split()[0] for line in lines[1:]] == marks
    assert all(line.startswith(" ") for line in lines[1:])
