"""The kernel sweep report on real runs: c2s (13 bytes, N=2,000) on Debian's 6.1 cloud kernel
in two VMs and on this machine's 6.18 (netns), from `make lab SCENARIO=c2s KERNELS="6.1 host"`.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.report import kernel_charts, published
from orchestrator.report import kernels as kernels_compare
from orchestrator.results import Result

DATA = Path(__file__).resolve().parents[1] / "data" / "results"
VM_61 = "20261126-045425-c2s-default"    # vm backend, 6.1.0-56-cloud-amd64
HOST = "20261126-045545-c2s-default"     # netns, 6.18.44


def load(name: str) -> Result:
    return Result.from_dict(json.loads((DATA / name / "result.json").read_text()))


def test_kernels_in_version_order_whatever_the_command_order() -> None:
    cmp = kernels_compare.compare([load(HOST), load(VM_61)])
    assert [k["label"] for k in cmp["kernels"]] == ["6.1", "host"]
    assert cmp["checkpoints"] == ["established", "unread", "read"]


def test_every_checkpoint_per_kernel_with_sides_and_caches() -> None:
    cmp = kernels_compare.compare([load(VM_61), load(HOST)])
    vm, host = cmp["kernels"]
    est = vm["checkpoints"]["established"]
    assert round(est["total"]) == 7633
    assert round(est["sides"]["server"]) == 3723 and round(est["sides"]["client"]) == 3910
    assert round(est["by_cache"]["TCP"]) == 4653
    assert host["checkpoints"]["unread"]["sides"] == {"server": None, "client": None}
    assert round(host["checkpoints"]["unread"]["total"]) == 8781


def test_published_row_only_where_the_article_measured_the_state() -> None:
    cmp = kernels_compare.compare([load(VM_61), load(HOST)])
    pub = cmp["published"]
    assert pub["note"] == "published, not measured here"
    assert list(pub["checkpoints"]) == ["established"]  # the article has no 13-byte figure here
    est = pub["checkpoints"]["established"]
    assert est["sides"] == {"server": 3.05 * 1024, "client": 3.34 * 1024}
    assert round(est["by_cache"]["TCP"]) == round(4.01 * 1024)
    assert "deep_linux_network_tests" in pub["source"]
    assert published.figures("timewait")["sides"]["server"] == 0.0
    assert published.figures("unread") is None


def test_findings_and_release_per_kernel_in_the_text() -> None:
    cmp = kernels_compare.compare([load(VM_61), load(HOST)])
    assert [f["verdict"] for f in cmp["kernels"][0]["findings"]] == [
        "holds", "holds", "not tested"]
    text = kernels_compare.render(cmp)
    assert "3.10 (published)*" in text and "* published, not measured here" in text
    assert "buffers are released promptly                 ✓ holds" in text
    assert "receiver median rmem_alloc unread -> read                       1,280 -> 0" in text


def test_html_has_the_four_sweep_charts_and_the_published_column(tmp_path: Path) -> None:
    runs = [load(HOST), load(VM_61)]
    _, md = kernels_compare.report(runs, [tmp_path / "a", tmp_path / "b"], tmp_path)
    page = md.with_suffix(".html").read_text()
    for chart in ("ks-trend", "ks-sides", "ks-objsize", "ks-release"):
        assert f'id="{chart}' in page or f"{chart}-" in page, chart
    assert page.count("<svg") == 4
    assert "published, not measured here" in page and "3.10 (published)" in page
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "<script" not in page


def test_trend_chart_without_published_state_or_sides() -> None:
    cmp = kernels_compare.compare([load(HOST)])
    charts = kernel_charts.sweep_charts(cmp)
    assert charts["trend"] and charts["objsize"]
    assert charts["sides"] is None  # host: both ends in one kernel
    assert kernel_charts.tick({"label": "6.1", "release": "6.1.0-57-cloud-amd64"}) == \
        "6.1\n6.1.0-57"
    assert kernel_charts.tick({"label": "host", "release": None}) == "host"
