"""orchestrator.report.html / charts: one self-contained HTML file per run, from
result.json alone (real results in tests/data/results)."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.report import charts
from orchestrator.report import html as report_html
from orchestrator.results import Result, load_result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
C2S = "20261126-012650-c2s-default"
TIMEWAIT = "20261126-012654-timewait-default"
S2C_SMALL = "20261126-012700-s2c-small-buffers"
ALL = [C2S, TIMEWAIT, "20261126-012656-s2c-default", S2C_SMALL]


def load(name: str) -> Result:
    return load_result(RESULTS / name)


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {name: report_html.render_html(load(name)) for name in ALL}


def without_xmlns(html: str) -> str:
    return re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", html)


@pytest.mark.parametrize("name", ALL)
def test_self_contained(pages, name):
    html = pages[name]
    body = without_xmlns(html)
    for needle in ("http://", "https://", 'src="//', "src='//", "<script", "<link", "@import",
                   "<iframe", "<img", "<object", "<embed"):
        assert needle not in body.lower(), needle
    assert not re.search(r"url\((?!#)", body), "only url(#local-id) references are allowed"
    assert not re.search(r'\bhref="(?!#)', body), "only in-page links"
    # the only xmlns kept is the SVG namespace of each chart
    assert set(re.findall(r'xmlns(?::\w+)?="([^"]*)"', html)) <= {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize("name", ALL)
def test_has_three_charts_with_unique_ids(pages, name):
    html = pages[name]
    assert html.count("<svg") == 3
    ids = Counter(re.findall(r'\bid="([^"]+)"', html))
    assert [i for i, n in ids.items() if n > 1] == []
    # every in-page reference points at an id of the page
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', html))
    assert refs <= set(ids)


def test_c2s_figures_and_summary(pages):
    html = pages[C2S]
    assert "<title>tcplab · c2s · default</title>" in html
    assert "7.4 kB</b> per idle connection pair" in html
    assert "TCP 65%" in html
    for figure in ("7,440", "8,483", "7,430", "845", "3,251", "26,000", "4,096", "2,062"):
        assert figure in html, figure
    assert html.count('class="stat"') == 3  # established, unread, read
    # verdicts
    assert html.count('class="v-holds"') == 2
    assert html.count('class="v-untested"') == 1
    assert "845 B &lt; tcp_rmem[0] 4,096 B" in html
    # numbers right-aligned
    assert '<td class="num total">7,440</td>' in html


def test_header_fields(pages):
    html = pages[S2C_SMALL]
    for text in ("s2c", "small-buffers", "netns", "6.18.44-fc-v782", "<b>2,000</b>",
                 "<b>65,536</b>", "complete"):
        assert text in html, text
    assert "INCOMPLETE" not in html


def test_timewait_states_and_verdict(pages):
    html = pages[TIMEWAIT]
    assert "client TIME-WAIT 2,000" in html
    assert "CLOSE-WAIT 2,000" in html
    assert "TIME_WAIT sheds socket objects" in html
    assert html.count('class="v-holds"') == 1


def test_incomplete_result_is_flagged_loudly():
    result = load(C2S).to_dict()
    result["status"] = "incomplete"
    result["error"] = "checkpoint read: not reached after 30 s: server: ESTAB 1,999 of 2,000"
    result["checkpoints"] = result["checkpoints"][:3]
    html = report_html.render_html(Result.from_dict(result))
    assert "INCOMPLETE RUN" in html
    assert 'role="alert"' in html
    assert "not reached after 30 s" in html
    assert "<title>tcplab · c2s · default · INCOMPLETE</title>" in html
    assert html.index("INCOMPLETE RUN") < html.index('id="summary"')  # above everything else


def test_nothing_measured_still_renders():
    result = load(C2S).to_dict()
    result["status"], result["error"] = "incomplete", "side did not start"
    result["checkpoints"], result["timeline"] = result["checkpoints"][:1], None
    html = report_html.render_html(Result.from_dict(result))
    assert "No checkpoint was measured" in html
    assert "<svg" not in html


def test_pinned_sysctls_against_defaults_from_the_result():
    rows = report_html.sysctl_rows(load(S2C_SMALL))
    by = {(r["host"], r["key"]): r for r in rows}
    somax = by[("server", "net.core.somaxconn")]
    assert (somax["value"], somax["default"], somax["differs"]) == ("65535", "4096", True)
    assert somax["source"] == "read on client"
    # pinned on both hosts: the result alone cannot tell the default
    rmem = by[("client", "net.ipv4.tcp_rmem")]
    assert rmem["default"] is None and rmem["differs"] is None
    # ... the kernel's defaults can, when given
    rows = report_html.sysctl_rows(load(S2C_SMALL), {"net.ipv4.tcp_rmem": "4096 131072 33554432"})
    rmem = {(r["host"], r["key"]): r for r in rows}[("client", "net.ipv4.tcp_rmem")]
    assert (rmem["default"], rmem["differs"]) == ("4096 131072 33554432", True)


def test_merged_cache_labels():
    assert charts.cache_label("eventpoll_epi", ["fib6_node", "tcp_bind2_bucket",
                                                "tcp_bind_bucket"]) == "eventpoll_epi (≈ bind buckets)"
    assert charts.cache_label("pool_workqueue", ["mem_cgroup_per_node", "skbuff_fclone_cache"]) \
        == "pool_workqueue (≈ skbuff_fclone_cache)"
    assert charts.cache_label("TCP", []) == "TCP"


def test_chart_svg_is_clean():
    svg = charts.memory_bars(load(C2S))
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert "<?xml" not in svg and "DOCTYPE" not in svg and "<metadata" not in svg
    assert "xlink" not in svg
    assert "<title>" in svg
    assert 'style="width:100%' in svg


def test_charts_absent_without_data():
    result = load(C2S).to_dict()
    result["timeline"] = None
    assert charts.timeline_chart(Result.from_dict(result)) is None
    assert "No timeline in this result" in report_html.render_html(Result.from_dict(result))


def test_write_report_atomic_and_rerenderable(tmp_path):
    run = tmp_path / C2S
    run.mkdir()
    shutil.copy(RESULTS / C2S / "result.json", run / "result.json")
    path = report_html.write_report(run, probe_defaults=False)
    assert path == run / "report.html"
    first = path.read_text()
    assert first.startswith("<!DOCTYPE html>")
    assert path.stat().st_mode & 0o777 == 0o644
    again = report_html.write_report(run, probe_defaults=False)  # re-render replaces it
    assert again.read_text() == first
    assert sorted(p.name for p in run.iterdir()) == ["report.html", "result.json"]  # no temp left


def test_write_text_atomic_failure_leaves_nothing(tmp_path):
    missing = tmp_path / "gone" / "report.html"
    with pytest.raises(Exception, match="cannot write|No such file"):
        report_html.write_text_atomic(missing, "x")
    assert not missing.exists()


def test_cli_report_html_writes_into_the_run(tmp_path, capsys, monkeypatch):
    from orchestrator import cli

    monkeypatch.setattr(report_html, "live_defaults", lambda result: None)
    run = tmp_path / TIMEWAIT
    run.mkdir()
    shutil.copy(RESULTS / TIMEWAIT / "result.json", run / "result.json")
    assert cli.main(["report", str(run), "--format", "html"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{TIMEWAIT}/report.html")
    assert "TIME_WAIT sheds socket objects" in (run / "report.html").read_text()
