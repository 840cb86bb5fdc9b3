"""Per-side figures in the HTML report and in ``tcplab compare``, on real results
(tests/data/results): a vm run (each side its own 6.1 kernel: ``per_kernel``), a docker
run (each side its own memory cgroup: ``memory_per_connection``) and the netns runs
(neither: no per-side section, no per-side table)."""

from __future__ import annotations

import html as htmllib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.measure.analysis import CGROUP_CAVEAT
from orchestrator.report import compare
from orchestrator.report import html as report_html
from orchestrator.results import Result, load_result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
VM = "20261126-021137-idle-default"       # vm backend, 6.1 VMs, idle, N=5,000
DOCKER = "20261126-041441-idle-default"   # docker backend, 6.18 host, idle, N=2,000
NETNS = ["20261126-012650-c2s-default", "20261126-012654-timewait-default",
         "20261126-012656-s2c-default", "20261126-012700-s2c-small-buffers"]
CAVEAT_START = "An accepted socket is charged to no container on this kernel"


def load(name: str) -> Result:
    return load_result(RESULTS / name)


def text_of(page: str) -> str:
    """The visible text of an HTML page, tags dropped, entities decoded, spaces squeezed."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def section(page: str, ident: str) -> str:
    start = page.index(f'id="{ident}"')
    return page[start:page.index("</section>", start)]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {name: report_html.render_html(load(name)) for name in [VM, DOCKER, *NETNS]}


# -- the HTML report ---------------------------------------------------------------------------

def test_vm_per_side_figures():
    sides = report_html.per_side(load(VM))
    assert sides["checkpoint"] == "established" and sides["connections"] == 5000
    assert sides["labels"] == ["server", "client"]
    rows = {r["label"]: r for r in sides["rows"]}
    assert (rows["server"]["hosts"], rows["server"]["role"]) == (["server"], "server")
    assert (rows["client"]["hosts"], rows["client"]["role"]) == (["client"], "client")
    assert {r["release"] for r in sides["rows"]} == {"6.1.0-56-cloud-amd64"}
    assert [(r["total"], r["objects_total"], r["meminfo_slab"]) for r in sides["rows"]] == [
        (3729.8, 3659.7, 3774.1), (3915.7, 3845.7, 3973.1)]
    caches = {c["cache"]: c["cells"] for c in sides["caches"]}
    assert caches["TCP"] == [2339.6, 2333.1]
    assert caches["sock_inode_cache"] == [861.8, 861.8]
    # the bind buckets live in merged lines on 6.1 (pid, anon_vma_chain): the client only
    assert caches["pid"] == [None, 128.6]
    assert caches["anon_vma_chain"] == [None, 64.7]
    assert list(caches)[:2] == ["TCP", "sock_inode_cache"]  # biggest first
    assert sides["objsize"] == []  # one kernel build on both sides


def test_vm_report_has_the_per_side_section(pages):
    page = pages[VM]
    sides = section(page, "sides")
    text = text_of(sides)
    assert "Per side" in text and "at established" in text
    assert ("server server server 6.1.0-56-cloud-amd64 3,730 3,660 3,774" in text)
    assert ("client client client 6.1.0-56-cloud-amd64 3,916 3,846 3,973" in text)
    assert '<td class="num total">3,730</td>' in sides
    assert '<td class="num total">3,916</td>' in sides
    assert "TCP 2,340 2,333" in text
    assert "pid – 129" in text
    assert "Object sizes that differ between the sides None" in text
    assert "Memory cgroup per container" not in text  # no cgroup on a VM
    assert '<a href="#sides">Per side</a>' in page
    # the section sits between the memory table and the buffers
    assert page.index('id="memory"') < page.index('id="sides"') < page.index('id="buffers"')


def test_object_sizes_that_differ_are_listed():
    data = load(VM).to_dict()
    cp = data["checkpoints"][-1]
    cp["per_kernel"]["client"]["objsize"]["TCP"] = 2368  # as 6.18's tcp_sock
    result = Result.from_dict(data)
    sides = report_html.per_side(result)
    assert sides["objsize"] == [{"cache": "TCP", "cells": [2304, 2368]}]
    text = text_of(section(report_html.render_html(result), "sides"))
    assert "Object sizes that differ between the sides cache server client TCP 2,304 2,368" in text


def test_docker_report_has_the_cgroup_table_and_caveat(pages):
    page = pages[DOCKER]
    assert report_html.per_side(load(DOCKER)) is None  # one kernel: no per_kernel
    rows = report_html.cgroup_rows(load(DOCKER))
    assert [(r["host"], r["role"], r["kmem"], r["sock"], r["usage"]) for r in rows] == [
        ("server", "server", 1222.7, 0.0, 1484.8), ("client", "client", 3870.7, 0.0, 4081.7)]
    text = text_of(section(page, "sides"))
    assert "Memory cgroup per container" in text
    assert "established server server 1,223 0 1,485" in text
    assert "established client client 3,871 0 4,082" in text
    assert CAVEAT_START in text
    assert CGROUP_CAVEAT in text
    assert "Object sizes that differ" not in text  # no per-kernel part
    assert '<a href="#sides">Per side</a>' in page


@pytest.mark.parametrize("name", NETNS)
def test_no_per_side_section_without_data(pages, name):
    result = load(name)
    assert report_html.per_side(result) is None
    assert report_html.cgroup_rows(result) == []
    page = pages[name]
    assert 'id="sides"' not in page and "Per side" not in page
    assert CAVEAT_START not in text_of(page)


@pytest.mark.parametrize("name", [VM, DOCKER])
def test_per_side_pages_stay_self_contained(pages, name):
    page = pages[name]
    ids = Counter(re.findall(r'\bid="([^"]+)"', page))
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(re.findall(r'href="#([^"]+)"', page)) <= set(ids)
    body = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", page).lower()
    for needle in ("http://", "https://", "<script", "<link", "<img"):
        assert needle not in body, needle


# -- compare -----------------------------------------------------------------------------------

def test_side_figures_by_source():
    assert compare.side_figures(load(VM)) == {
        "checkpoint": "established", "source": "VM slab", "server": 3729.8, "client": 3915.7,
        "total": 7645.5}
    assert compare.side_figures(load(DOCKER)) == {
        "checkpoint": "established", "source": "cgroup kmem", "server": 1222.7, "client": 3870.7,
        "total": 7851.4}
    for name in NETNS:
        assert compare.side_figures(load(name)) is None


@pytest.fixture(scope="module")
def vm_docker() -> dict:
    return compare.compare([load(VM), load(DOCKER)])


def test_compare_sides_table(vm_docker):
    sides = vm_docker["sides"]
    assert [c["source"] for c in sides["columns"]] == ["VM slab", "cgroup kmem"]
    assert [c["checkpoint"] for c in sides["columns"]] == ["established", "established"]
    assert sides["cgroup"] is True
    rows = {r["side"]: [c["median"] for c in r["groups"]] for r in sides["rows"]}
    # neither side: the VM total is the sum of its two kernels (0); docker's host total
    # minus both containers' kmem is what no container is charged for (the accepted socket)
    assert rows == {"server": [3729.8, 1222.7], "client": [3915.7, 3870.7],
                    "neither side": [0.0, 2758.0]}


def test_compare_text_and_markdown(vm_docker):
    text = compare.render(vm_docker, "table")
    assert "Per side (last measured checkpoint: A established, B established)" in text
    assert re.search(r"A \(VM slab\)\s+B \(cgroup kmem\)", text)
    assert re.search(r"^server\s+3,730\s+1,223$", text, re.M)
    assert re.search(r"^client\s+3,916\s+3,871$", text, re.M)
    assert re.search(r"^neither side\s+0\s+2,758$", text, re.M)
    assert f"cgroup kmem: {CGROUP_CAVEAT}" in text
    # under the per-side table, before the sysctls
    assert text.index("Per side") < text.index(CAVEAT_START) < text.index("Sysctls that differ")
    md = compare.render(vm_docker, "markdown")
    assert "### Per side (last measured checkpoint: A established, B established)" in md
    assert re.search(r"\| server\s+\|\s+3,730 \|\s+1,223 \|", md)
    assert re.search(r"\| client\s+\|\s+3,916 \|\s+3,871 \|", md)
    assert CAVEAT_START in md


def test_compare_html(vm_docker):
    page = compare.render(vm_docker, "html")
    for needle in ("http://", "https://", "<script", "<link", "src="):
        assert needle not in page
    text = text_of(section(page, "sides"))
    assert ("side A VM slab B cgroup kmem server 3,730 1,223 client 3,916 3,871 "
            "neither side 0 2,758") in text
    assert f"cgroup kmem: {CGROUP_CAVEAT}" in text


def test_compare_json_has_the_sides(vm_docker):
    data = json.loads(compare.render(vm_docker, "json"))
    assert data["sides"]["rows"][0]["groups"][0]["median"] == 3729.8
    assert data["sides"]["columns"][1]["source"] == "cgroup kmem"


def test_compare_without_per_side_figures():
    cmp = compare.compare([load(NETNS[2]), load(NETNS[3])])
    assert cmp["sides"] is None
    assert "Per side" not in compare.render(cmp, "table")
    assert 'id="sides"' not in compare.render(cmp, "html")
    assert CAVEAT_START not in compare.render(cmp, "markdown")


def test_compare_netns_against_vm():
    """A netns run has no per-side figure: its column says so, and no cgroup caveat."""
    cmp = compare.compare([load(NETNS[0]), load(VM)])
    sides = cmp["sides"]
    assert [c["source"] for c in sides["columns"]] == [None, "VM slab"]
    assert sides["cgroup"] is False
    text = compare.render(cmp, "table")
    assert re.search(r"^server\s+–\s+3,730$", text, re.M)
    assert re.search(r"^client\s+–\s+3,916$", text, re.M)
    assert re.search(r"^neither side\s+–\s+0$", text, re.M)
    assert "Per side (last measured checkpoint: B established)" in text
    assert CAVEAT_START not in text


def test_summary_says_where_the_total_comes_from(pages: dict[str, str]) -> None:
    from orchestrator.report import text as report_text

    vm, docker = text_of(pages[VM]), text_of(pages[DOCKER])
    assert "client + server ends, summed over 2 kernels: each side's own below" in vm
    assert "one kernel" not in vm
    assert "client + server ends, one kernel" in docker
    assert "(client + server ends, summed over 2 kernels" in report_text.render(load(VM))
