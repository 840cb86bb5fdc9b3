"""The results site in a real browser (headless Chromium, no network: see
test_report_browser.py for how "no request" is proven).

The site is built from the stored runs in tests/data/results plus one imported bundle
(two of those runs exported and imported as a colleague's): no lab run is needed. The
index lists every run, a filter given in the address narrows it (the page's own script
runs), the trend chart is drawn, every link of every page resolves inside the site, and
loading the pages makes no request. 45 s here, 85 s while other runs share the 2 cores
(the site renders ten reports first, then nine Chromium page loads).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.library.site import build_site
from tests.integration import test_report_browser as browser
from tests.integration.test_report_browser import NETWORK_SCHEMES, page_requests, run_chromium
from tests.unit.test_site_build import check_links

chromium = browser.chromium  # the browser and the network-less namespace, as there
isolate = browser.isolate

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "results"
SHARED = ["20261126-012656-s2c-default", "20261126-012700-s2c-small-buffers"]


@pytest.fixture(autouse=True)
def host_net_sysctls_unchanged() -> None:
    """Nothing here touches the host's network (no lab host is made; Chromium runs in a
    namespace of its own): no need to wait for the machine lock to compare sysctls."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("site")
    results = tmp / "results"
    shutil.copytree(DATA, results, ignore=shutil.ignore_patterns("golden", "*.py", "*.md"))
    src = tmp / "colleague"
    for name in SHARED:  # the colleague's copies: profile files point into this checkout
        data = json.loads((DATA / name / "result.json").read_text())
        data["profile"]["files"] = [str(REPO / "lab" / "profiles" / Path(f).name)
                                    for f in data["profile"]["files"]]
        (src / name).mkdir(parents=True)
        (src / name / "result.json").write_text(json.dumps(data))
    bundle = tmp / "alice.tar.gz"
    assert cli.main(["export", *[str(src / n) for n in SHARED], "-o", str(bundle)]) == 0
    assert cli.main(["import", str(bundle), "--results", str(results)]) == 0
    out = tmp / "out"
    stats = build_site(results, out)
    assert stats.runs == 10
    return out


def rows(dom: str) -> list[str]:
    return re.findall(r"<tr class=\"st-[^>]*>", dom)


def test_index_lists_every_run(chromium, isolate, site, tmp_path):
    done, requests = run_chromium(chromium, isolate, (site / "index.html").as_uri(),
                                  tmp_path / "index", ["--dump-dom"])
    dom = done.stdout
    assert len(rows(dom)) == 10 and not [r for r in rows(dom) if "hidden" in r]
    for run in DATA.glob("2*"):
        assert f">{run.name}</a>" in dom, run.name
    assert dom.count('data-origin="alice"') == 2
    assert '<b id="shown">10</b>' in dom
    assert [r["url"] for r in page_requests(requests) if r["url"].startswith(NETWORK_SCHEMES)] == []


@pytest.mark.parametrize("view, shown", [("scenario=c2s", 3), ("backend=vm", 2),
                                         ("origin=alice", 2), ("q=6.1.0-56", 2),
                                         ("scenario=s2c&profile=small-buffers", 2)])
def test_a_filter_narrows_the_index(chromium, isolate, site, tmp_path, view, shown):
    url = (site / "index.html").as_uri() + "#" + view
    done, _ = run_chromium(chromium, isolate, url, tmp_path / "f", ["--dump-dom"])
    found = rows(done.stdout)
    assert len(found) == 10
    visible = [r for r in found if "hidden" not in r]
    assert len(visible) == shown, view
    assert f'<b id="shown">{shown}</b>' in done.stdout


def test_trend_chart_renders(chromium, isolate, site, tmp_path):
    from PIL import Image

    page = site / "trends" / "c2s.html"
    done, requests = run_chromium(chromium, isolate, page.as_uri(), tmp_path / "dom",
                                  ["--dump-dom"])
    dom = done.stdout
    assert dom.count("<svg") == 1 and dom.count("<path") > 20
    assert "6.1.0-56-cloud-amd64" in dom and "6.18.44-fc-v782" in dom
    assert [r["url"] for r in page_requests(requests) if r["url"].startswith(NETWORK_SCHEMES)] == []
    shot = tmp_path / "trend.png"
    run_chromium(chromium, isolate, page.as_uri(), tmp_path / "shot", [f"--screenshot={shot}"])
    image = Image.open(shot).convert("RGB").crop((0, 0, 1200, 900))
    blue = sum(n for n, px in image.getcolors(maxcolors=1 << 20) or []
               if abs(px[0] - 0x3b) < 20 and abs(px[1] - 0x6f) < 20 and abs(px[2] - 0xb6) < 20)
    assert blue > 200, "the first setup's line is drawn"


def test_every_link_resolves_inside_the_site(site):
    assert check_links(site) > 40
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert "runs/imported/alice/20261126-012656-s2c-default/report.html" in pages
    assert "compare/s2c-N2000-B65536-ipv4.html" in pages
