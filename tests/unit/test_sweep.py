"""Sweeps (orchestrator/sweep.py, report/sweep.py, report/sweep_charts.py): parsing each
point, and the sweep report drawn from saved results (tests/data/results)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orchestrator import sweep
from orchestrator.errors import InputError
from orchestrator.report import sweep as report
from orchestrator.report.sweep_charts import render_html
from orchestrator.results import load_result
from orchestrator.results.model import Result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
DEFAULT, SMALL = "20261126-012656-s2c-default", "20261126-012700-s2c-small-buffers"
#: A link sweep (slow-readers, N=8, 8 MiB each read at 1 MiB/s): delay=0ms and delay=50ms
#: (tests/data/conditions/README.md)
CONDITIONS = RESULTS.parent / "conditions"
RTT0, RTT100 = "sweep-delay-0ms-20261201-060753", "sweep-delay-50ms-20261201-060918"


def captured(name: str) -> Result:
    return Result.from_dict(json.loads(gzip.decompress(
        (CONDITIONS / f"{name}.result.json.gz").read_bytes())))


def test_braces_expand_one_field_with_size_suffixes():
    sw = sweep.parse("net.ipv4.tcp_rmem=4096 131072 {1M,4M,32M}")
    assert sw.kind == "sysctl" and sw.key == "net.ipv4.tcp_rmem"
    assert sw.values == ("4096 131072 1048576", "4096 131072 4194304", "4096 131072 33554432")
    assert sw.labels == ("4096 131072 1M", "4096 131072 4M", "4096 131072 32M")
    assert sw.field == 2 and sw.varying(sw.labels[1]) == "4M"
    assert sweep.overrides(sw, sw.values[0]) == {"net.ipv4.tcp_rmem": "4096 131072 1048576"}


def test_comma_list_of_a_per_namespace_sysctl():
    sw = sweep.parse("net.core.somaxconn=128, 4096")
    assert (sw.values, sw.labels, sw.field) == (("128", "4096"), ("128", "4096"), None)


@pytest.mark.root  # classify() probes a fresh network namespace
def test_host_wide_sysctl_needs_the_flag_except_on_vms():
    text = "net.ipv4.tcp_mem=4096 8192 12288,8192 16384 24576"
    with pytest.raises(InputError, match="host-wide on this kernel"):
        sweep.parse(text)
    assert sweep.parse(text, allow_host_sysctls=True).values[1] == "8192 16384 24576"
    assert sweep.parse(text, backend="vm").kind == "sysctl"


def test_a_link_sweep_parses_its_values():
    sw = sweep.parse("delay=0ms,10ms,50ms")
    assert (sw.kind, sw.values) == ("link", ("0ms", "10ms", "50ms"))


def test_a_link_point_merges_into_the_users_link():
    assert sweep.merged_link("delay=25ms rate=100mbit", "delay", "50ms") == \
        "rate=100mbit delay=50ms"
    assert sweep.merged_link(None, "loss", "1%") == "loss=1%"


def _doc() -> tuple[dict, list]:
    """Two points (the default and small-buffers s2c runs) as a sweep of tcp_rmem."""
    sw = sweep.Sweep("sysctl", "net.ipv4.tcp_rmem",
                     ("4096 131072 33554432", "4096 16384 65536"), ("32M", "64k"))
    results = [load_result(RESULTS / DEFAULT), load_result(RESULTS / SMALL)]
    return report.summarize(sw.to_dict(), results, [0, 1]), results


def test_summary_holds_each_points_figures():
    doc, results = _doc()
    rows = report.lookup(doc)
    assert doc["checkpoints"] == ["established", "unread", "read"]
    for point, result in enumerate(results):
        for cp in result.measured():
            row = rows[(point, cp.name, "slab")]
            assert row["median"] == pytest.approx(cp.per_connection().total)
            assert row["n"] == 1 and row["cv"] == 0.0
        unread = result.checkpoint("unread")
        assert rows[(point, "unread", "rmem_client")]["median"] == \
            unread.buffers["client"].rmem_alloc.median
    assert doc["runs"] == {"32M": [DEFAULT], "64k": [SMALL]}
    assert not doc["goodput_recorded"] and "goodput" not in doc["figures"]


def test_spread_of_repetitions_is_min_max_and_cv():
    sw = sweep.Sweep("sysctl", "net.core.somaxconn", ("128", "4096"), ("128", "4096"))
    a, b = load_result(RESULTS / DEFAULT), load_result(RESULTS / SMALL)
    doc = report.summarize(sw.to_dict(), [a, b, a], [0, 0, 1])
    row = report.lookup(doc)[(0, "established", "slab")]
    values = sorted([a.checkpoint("established").per_connection().total,
                     b.checkpoint("established").per_connection().total])
    assert (row["n"], row["min"], row["max"]) == (2, values[0], values[1])
    assert row["cv"] is not None and row["cv"] > 0
    assert f"{values[0]:,.0f}..{values[1]:,.0f}" in report.render(doc)


def test_text_and_html_reports():
    doc, _ = _doc()
    text = report.render(doc)
    assert text.startswith("Sweep of net.ipv4.tcp_rmem (sysctl) · s2c · profile default")
    assert "at unread" in text and "client rmem_alloc B/socket" in text
    assert "goodput: not recorded by these runs" in text
    html = render_html(doc, {DEFAULT: f"{DEFAULT}/report.html"})
    assert html.count("<svg") == 2  # memory and buffers; no goodput recorded
    assert "Goodput was not recorded by these runs" in html
    assert f'href="{DEFAULT}/report.html"' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def _link_doc() -> dict:
    sw = sweep.parse("delay=0ms,50ms")
    results = [captured(RTT0), captured(RTT100)]
    return report.summarize(sw.to_dict(), results, [0, 1])


def test_a_link_sweep_says_the_link_of_each_point_and_draws_goodput():
    doc = _link_doc()
    assert doc["links"] == {"0ms": "none", "50ms": "delay 50 ms each way (RTT 100 ms)"}
    assert report.link_lines(doc) == ["link at each point:",
                                      "  delay=0ms: none (a perfect link)",
                                      "  delay=50ms: delay 50 ms each way (RTT 100 ms)"]
    text = report.render(doc)
    assert "link at each point:\n  delay=0ms: none (a perfect link)\n" in text
    assert doc["goodput_recorded"]
    rows = report.lookup(doc)
    assert round(rows[(0, "transfer", "goodput")]["median"], 2) == 8.39
    assert round(rows[(1, "transfer", "goodput")]["median"], 2) == 8.38
    html = render_html(doc, {})
    assert html.count("<svg") == 3  # memory, buffers and goodput
    assert "delay=50ms: delay 50 ms each way (RTT 100 ms)" in html


def test_one_link_for_every_point_is_one_line_and_none_is_silent():
    sw = sweep.Sweep("sysctl", "net.core.somaxconn", ("128", "4096"), ("128", "4096"))
    same = captured(RTT100)
    doc = report.summarize(sw.to_dict(), [same, same], [0, 1])
    assert report.link_lines(doc) == ["link: delay 50 ms each way (RTT 100 ms)"]
    doc, _ = _doc()  # perfect links: no line
    assert report.link_lines(doc) == [] and "link" not in report.render(doc).split("\n")[1]
