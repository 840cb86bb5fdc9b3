"""``tcplab site``: pages, links inside the site, incremental rebuilds, comparison charts.

Built from copies of the real runs in tests/data/results. Each run gets a small
report.html (the site copies a run's existing report), so the tests time the pages the
site draws itself: trends and comparisons.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from orchestrator import cli
from orchestrator.library import site as site_mod
from orchestrator.report import compare_charts
from orchestrator.results import load_result

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "results"
C2S = ["20261126-012650-c2s-default", "20261126-045545-c2s-default"]
C2S_VM = "20261126-045425-c2s-default"
S2C = ["20261126-012656-s2c-default", "20261126-012700-s2c-small-buffers"]


def copy_run(results: Path, name: str, as_name: str | None = None) -> Path:
    run = results / (as_name or name)
    run.mkdir(parents=True)
    data = json.loads((DATA / name / "result.json").read_text())
    data["run_id"] = run.name
    (run / "result.json").write_text(json.dumps(data))
    (run / "report.html").write_text(f"<!DOCTYPE html><title>{run.name}</title><p>report</p>\n")
    return run


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append(value)


def check_links(out: Path) -> int:
    """Every href/src of every page names a file inside the site; the count checked."""
    checked = 0
    for page in out.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for ref in parser.refs:
            parts = urlsplit(ref)
            assert not parts.scheme and not parts.netloc, f"{page}: external {ref}"
            if not parts.path:  # #anchor on the same page
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{page.relative_to(out)}: {ref} does not resolve"
            assert out.resolve() in target.parents, f"{page}: {ref} leaves the site"
            checked += 1
    return checked


def test_site_pages_links_and_rebuilds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results, out = tmp_path / "results", tmp_path / "site"
    for name in [*C2S, C2S_VM]:
        copy_run(results, name)
    assert cli.main(["site", str(results), "-o", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("3 runs (3 read); 6 pages rendered, 0 unchanged, 0 removed; ")
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    assert pages == ["compare/c2s-N2000-B13-ipv4.html", "index.html",
                     *[f"runs/{n}/report.html" for n in sorted([*C2S, C2S_VM])],
                     "trends/c2s.html"]
    index = (out / "index.html").read_text()
    assert index.count('<tr class="st-complete"') == 3
    assert 'data-kernel="6.1.0-56-cloud-amd64"' in index and 'data-backend="vm"' in index
    trend = (out / "trends" / "c2s.html").read_text()
    assert trend.count("<svg") == 1 and "default · vm · 6.1.0-56-cloud-amd64" in trend
    cmp = (out / "compare" / "c2s-N2000-B13-ipv4.html").read_text()
    assert cmp.count("<svg") == 3  # memory, buffers, timelines
    assert check_links(out) >= 20
    for page in out.rglob("*.html"):  # self-contained: no URL but the SVG namespace's
        text = page.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), page

    # nothing changed: only the index again, no result read
    stats = site_mod.build_site(results, out)
    assert (stats.read, stats.rendered, stats.reused) == (0, ["index.html"], 5)

    # one new run of an existing setup: its report, the trend, the comparison, the index
    copy_run(results, C2S[1], "20261127-090000-c2s-default")
    stats = site_mod.build_site(results, out)
    assert stats.read == 1
    assert sorted(stats.rendered) == ["compare/c2s-N2000-B13-ipv4.html", "index.html",
                                      "runs/20261127-090000-c2s-default/report.html",
                                      "trends/c2s.html"]
    assert stats.reused == 3

    # a run of a new scenario: its report and trend, nothing else of c2s
    copy_run(results, S2C[0])
    stats = site_mod.build_site(results, out)
    assert sorted(stats.rendered) == ["index.html", f"runs/{S2C[0]}/report.html",
                                      "trends/s2c.html"]

    # a run removed: its page goes, the pages it was in are rendered again
    shutil.rmtree(results / C2S_VM)
    stats = site_mod.build_site(results, out)
    assert stats.removed == 1 and not (out / "runs" / C2S_VM).exists()
    assert "trends/c2s.html" in stats.rendered
    assert check_links(out) > 0

    # --force renders every page
    stats = site_mod.build_site(results, out, force=True)
    assert stats.read == 4 and len(stats.rendered) == 8 and stats.reused == 0


def test_site_renders_missing_reports_and_lists_failed(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "site"
    run = copy_run(results, C2S[0])
    (run / "report.html").unlink()
    (results / "20261127-000000-idle-default").mkdir()  # a run that died early
    stats = site_mod.build_site(results, out)
    assert stats.runs == 2
    report = (out / "runs" / C2S[0] / "report.html").read_text()
    assert report.count("<svg") == 3  # rendered from result.json: the run's own report
    index = (out / "index.html").read_text()
    assert '<tr class="st-failed"' in index and "20261127-000000-idle-default" in index
    assert check_links(out) > 0


def test_site_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    copy_run(results, C2S[0])
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli.main(["site", str(results), "-o", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"tcplab: error: {other}: exists and is not a tcplab site (no manifest.json); choose "
        "another -o DIR (the site never writes into other folders)\n")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_comparison_charts_from_profiles(tmp_path: Path) -> None:
    results = [load_result(DATA / n) for n in S2C]
    charts = compare_charts.comparison_charts(results)
    assert charts["colours"] == {"A": compare_charts.SETUP_COLOURS[0],
                                 "B": compare_charts.SETUP_COLOURS[1]}
    for name in ("memory", "buffers", "timeline"):
        assert charts[name] and charts[name].startswith("<svg"), name
    # the receiver's rmem of each setup is drawn, and each setup's tcp_rmem[0] mark
    assert "67,200" in charts["buffers"] and "16,248" in charts["buffers"]
    assert "26,231" in charts["memory"] and "9,787" in charts["memory"]
    page = compare_charts.render_html(results)
    assert page.count("<svg") == 3 and "Side by side" in page and "<script" not in page
