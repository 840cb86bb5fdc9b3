"""The allocation ledger's parsers and attribution, on a dump captured on kernel 6.18
(tests/data/ledger, see tests/data/README.md), and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.ledger import tracer
from orchestrator.ledger.attribution import ledger_section, socket_caches
from orchestrator.ledger.parse import (
    KIND_CACHE,
    KIND_KMALLOC_CG,
    KIND_PAGE,
    SLAB_PAGE,
    Symbols,
    page_site,
    parse_dump,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ledger"
SERVER, CLIENT = 4026532320, 4026532463
HOSTS = {SERVER: "server", CLIENT: "client"}


@pytest.fixture(scope="module")
def live():
    return parse_dump((DATA / "dump-c2s-unread.txt").read_text())


@pytest.fixture(scope="module")
def symbols():
    return Symbols((DATA / "kallsyms.txt").read_text())


def test_parse_dump_reads_objects_kmalloc_and_pages(live):
    assert len(live) == 102
    tcp = [a for a in live.values() if a.cache == "TCP"]
    assert len(tcp) == 6 and {a.bytes for a in tcp} == {2368}
    assert {a.kind for a in tcp} == {KIND_CACHE}
    assert all(p > 2**63 for p, a in live.items() if a.kind != KIND_PAGE)  # kernel pointers
    cg = [a for a in live.values() if a.kind == KIND_KMALLOC_CG]
    assert {a.cache for a in cg} == {"kmalloc-cg-8", "kmalloc-cg-64"}
    pages = sorted(a.cache for a in live.values() if a.kind == KIND_PAGE)
    assert pages.count(SLAB_PAGE) == 6
    assert "skb_page_frag_refill" in pages and "pte_alloc_one" in pages


def test_page_site_skips_the_allocator_and_names_slab_pages():
    assert page_site(["__alloc_frozen_pages_noprof", "alloc_pages_mpol", "allocate_slab",
                      "___slab_alloc"]) == SLAB_PAGE
    assert page_site(["__alloc_frozen_pages_noprof", "alloc_pages_mpol",
                      "skb_page_frag_refill", "sk_page_frag_refill"]) == "skb_page_frag_refill"
    assert page_site([]) == "pages (no stack)"


def test_symbols_name_the_call_sites(live, symbols):
    sites = {symbols.name(a.site) for a in live.values() if a.cache == "TCP"}
    assert sites == {"sk_prot_alloc"}
    assert {symbols.name(a.site) for a in live.values() if a.cache == "skbuff_small_head"} \
        == {"kmalloc_reserve"}
    assert symbols.name(1) == "0x1"


def test_unread_skbs_belong_to_the_receiving_host(live, symbols):
    section = ledger_section(live, HOSTS, symbols, 3, {})
    server, client = section["hosts"]["server"], section["hosts"]["client"]
    caches = {h: {r["cache"]: r["objects"] for r in section["hosts"][h]["by_cache"]}
              for h in ("server", "client")}
    assert caches["server"]["skbuff_small_head"] == 3  # c2s: the server received
    assert "skbuff_small_head" not in caches["client"]
    assert caches["server"]["TCP"] == caches["client"]["TCP"] == 3
    site = {(r["cache"], r["site"]): r for r in server["by_site"]}
    assert site[("pool_workqueue", "__alloc_skb")]["objects"] == 3  # skbuff_fclone_cache, merged
    assert site[("TCP", "sk_prot_alloc")]["bytes_per_connection"] == 2368.0
    # totals add up: hosts to the lab, slab plus pages to each host; slab pages not added
    assert section["bytes"] == server["bytes"] + client["bytes"]
    assert server["bytes"] == server["slab_bytes"] + server["page_bytes"]
    assert server["slab_pages_bytes"] == 2 * 32768 + 8192
    assert [r["site"] for r in client["pages"]][0] == "skb_page_frag_refill"


def test_crosscheck_against_slabinfo(live, symbols):
    record = {"connections": 3, "per_connection_bytes": {"by_cache": [
        {"cache": "TCP", "objects": 6, "objsize": 2368, "category": "socket"},
        {"cache": "extent_status", "objects": 3, "objsize": 40, "category": "socket"},
        {"cache": "maple_node", "objects": 9, "objsize": 256, "category": "drift"}]}}
    caches = socket_caches(record)
    assert caches == {"TCP": 4736.0, "extent_status": 40.0}
    check = ledger_section(live, HOSTS, symbols, 3, caches)["crosscheck"]
    assert check["ledger_per_connection"] == 4736.0
    assert check["slabinfo_per_connection"] == 4776.0
    assert check["difference"] == -40.0 and check["difference_pct"] == -0.84
    assert check["lab_caches_difference_pct"] == 0.0  # extent_status: not the lab's
    assert check["by_cache"][0] == {"cache": "TCP", "ledger": 4736.0, "slabinfo": 4736.0}


def test_script_names_the_lab_namespaces_and_the_dump_trigger():
    text = tracer.script([SERVER, CLIENT, SERVER], 0x7A000123)
    assert text.count("] = 1;") == 2 and f"@lab[{CLIENT}] = 1;" in text
    assert f"args->pid == {0x7A000123}" in text
    assert "//LAB//" not in text and "//MAGIC//" not in text


def test_ledger_refused_on_backends_with_kernels_of_their_own():
    with pytest.raises(InputError) as err:
        tracer.refuse_unless_ready("vm")
    assert str(err.value) == (
        "--ledger/LEDGER: the vm backend's hosts run on kernels of their own, which the "
        "ledger cannot trace yet; use --backend netns or docker, or run without --ledger")


def test_ledger_refused_when_bpftrace_is_missing(monkeypatch):
    monkeypatch.setattr(tracer.shutil, "which", lambda _name: None)
    with pytest.raises(InputError) as err:
        tracer.refuse_unless_ready("netns")
    assert str(err.value).startswith(
        "--ledger/LEDGER: not possible here: bpftrace is not installed (apt-get install "
        "bpftrace)")
    assert str(err.value).endswith("`tcplab doctor` shows ledger readiness")


def test_reports_show_the_ledger(live, symbols):
    """A stored c2s result with the captured dump's ledger added to its unread checkpoint:
    the terminal and HTML reports show totals, call sites and the cross-check."""
    import json

    from orchestrator.report.html import render_html
    from orchestrator.report.text import render
    from orchestrator.results.model import Result

    run = DATA.parent / "results" / "20261126-045545-c2s-default" / "result.json"
    data = json.loads(run.read_text())
    cp = next(c for c in data["checkpoints"] if c["name"] == "unread")
    cp["ledger"] = ledger_section(live, HOSTS, symbols, cp["connections"], socket_caches(cp))
    cp["ledger"].update(dump_seconds=0.9, start_seconds=3.0, missed_events=1608)
    result = Result.from_dict(data)
    text = render(result)
    assert text.splitlines()[1].startswith("ledger on: bpftrace traced every slab allocation")
    assert "Allocation ledger" in text and "Ledger at unread" in text
    assert "skbuff_small_head  kmalloc_reserve" in text
    assert "unread: ledger " in text and "B/connection in the socket caches" in text
    assert "bpftrace attached in 3.0 s, dumps took 0.9-0.9 s" in text
    assert "; 1,608 tracepoint events missed since the start (BPF programs do not nest" in text
    html = render_html(result)
    assert "ledger on: bpftrace traced" in html and 'id="ledger"' in html and "<h3>Call sites at unread</h3>" in html
