"""orchestrator.measure.analysis on the real captures of tests/data (kernel 6.18, 2000 connections).

The figures asserted are those of the captured files (see tests/data/README.md).
"""

from __future__ import annotations

import pytest

from orchestrator.measure import analysis
from orchestrator.measure.parsers import SlabLine

K = 2000


def rows_by_cache(cp: dict) -> dict[str, dict]:
    return {r["cache"]: r for r in cp["per_connection_bytes"]["by_cache"]}


def slab(name: str, active: int, objsize: int = 192, per_slab: int = 21) -> SlabLine:
    """A synthetic slabinfo line with just enough slabs for ``active`` objects."""
    slabs = -(-active // per_slab)
    return SlabLine(name, active, slabs * per_slab, objsize, per_slab, 1, slabs, slabs)


# --------------------------------------------------------------------------
# 2000 idle ESTABLISHED connections
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def established(capture, slab_aliases) -> dict:
    return analysis.checkpoint(capture("baseline"), capture("established"), K, slab_aliases)


def test_idle_pair_estimate_from_live_object_sizes(capture) -> None:
    est = analysis.idle_pair_estimate(capture("baseline").slab)
    assert est == {"TCP": 2 * 2368, "sock_inode_cache": 2 * 832, "filp": 2 * 192,
                   "dentry": 2 * 192, "lsm_inode_cache": 2 * 32, "lsm_file_cache": 2 * 24,
                   "bind buckets": 2 * 128, "total": 7536}


def test_established_total_matches_idle_pair_estimate(capture, established) -> None:
    total = established["per_connection_bytes"]["total"]
    est = analysis.idle_pair_estimate(capture("baseline").slab)["total"]
    assert total == pytest.approx(est, rel=0.10)
    # objects x slab footprint (objsize + slab overhead): TCP 3,951 x 32,768/13 B, ...
    assert total == pytest.approx(7745.9, abs=0.1)
    # meminfo Slab: 93,880 kB -> 108,852 kB
    assert established["per_connection_bytes"]["meminfo_slab"] == pytest.approx(7665.7, abs=0.1)
    assert established["per_connection_bytes"]["tcp_mem_charged"] == 0  # idle: no page charged


def test_established_tcp_two_objects_per_connection(established) -> None:
    rows = rows_by_cache(established)
    tcp = rows["TCP"]
    assert tcp["objects"] == 4056 - 105
    assert tcp["objects_per_connection"] == pytest.approx(2.0, abs=0.05)
    assert tcp["attributed"] and tcp["category"] == "socket"
    assert tcp["bytes"] == round(3951 * 8 * 4096 / 13)  # objects x footprint (2,520.6 B)
    assert tcp["page_bytes"] == (312 - 12) * 8 * 4096  # the change in slab pages, kept beside
    assert tcp["objsize"] == 2368


def test_established_attributed_caches(established, slab_aliases) -> None:
    rows = rows_by_cache(established)
    socket = {c for c, r in rows.items() if r["attributed"]}
    assert socket == {"TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi",
                      "lsm_inode_cache", "lsm_file_cache"}
    for cache in socket:
        assert rows[cache]["objects_per_connection"] >= analysis.TRACKS_MIN
    # small kmalloc changes do not track the connection count
    assert rows["kmalloc-192"]["category"] == "drift"
    assert rows["kmalloc-192"]["objects_per_connection"] == pytest.approx(0.242)
    # the bind buckets are counted on the line slabinfo prints for their merged group
    assert "tcp_bind_bucket" in rows["eventpoll_epi"]["aliases"]
    assert "proc_inode_cache" not in rows  # it did not move in this capture


def test_established_states_and_buffers(established) -> None:
    # the ss captures keep the first 300 sockets of each state
    assert established["states"] == {"server": {"ESTAB": 300}, "client": {"ESTAB": 300}}
    server = established["buffers"]["server"]
    assert server["sockets"] == 300
    assert server["rmem_alloc"] == {"sum": 0, "median": 0, "per_socket": 0}
    assert server["recv_q"] == 0 and server["send_q"] == 0
    assert server["sockstat_mem_pages"] == 150


# --------------------------------------------------------------------------
# TIME-WAIT and FIN-WAIT-2
# --------------------------------------------------------------------------

def test_time_wait_keeps_a_tw_sock_per_connection(capture, slab_aliases) -> None:
    cp = analysis.checkpoint(capture("baseline"), capture("time_wait"), K, slab_aliases)
    rows = rows_by_cache(cp)
    tw = rows["tw_sock_TCP"]
    assert tw["objects"] == 2016 - 112
    assert tw["objects_per_connection"] == pytest.approx(1.0, abs=0.05)
    assert tw["attributed"]
    tcp = rows["TCP"]
    assert tcp["objects"] == 53 - 105
    assert abs(tcp["objects_per_connection"]) < 0.05
    assert tcp["category"] == "drift"
    # the client's bind buckets stay while its ports are in TIME-WAIT
    assert rows["eventpoll_epi"]["objects_per_connection"] == pytest.approx(1.89, abs=0.01)
    assert cp["states"]["client"] == {"TIME-WAIT": 300}
    # TIME-WAIT sockets print no skmem
    assert cp["buffers"]["client"]["rmem_alloc"]["sum"] == 0
    assert cp["per_connection_bytes"]["total"] < 0.25 * 7536


def test_fin_wait2_close_wait(capture, slab_aliases) -> None:
    cp = analysis.checkpoint(capture("baseline"), capture("fin_wait2"), K, slab_aliases)
    rows = rows_by_cache(cp)
    # the server's CLOSE-WAIT sockets stay full sockets; the client's are timewait socks
    assert rows["TCP"]["objects_per_connection"] == pytest.approx(0.97, abs=0.01)
    assert rows["tw_sock_TCP"]["objects_per_connection"] == pytest.approx(0.95, abs=0.01)
    assert cp["states"] == {"server": {"CLOSE-WAIT": 300}, "client": {"FIN-WAIT-2": 300}}
    server = cp["buffers"]["server"]
    assert server["rmem_alloc"]["median"] == 832  # the FIN holds r832 f3264
    assert server["fwd_alloc"]["median"] == 3264
    assert server["recv_q"] == 300  # one byte (the FIN) per socket


# --------------------------------------------------------------------------
# 13 unread bytes per connection
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unread(capture, slab_aliases) -> dict:
    return analysis.checkpoint(capture("baseline-unread"), capture("unread"), K, slab_aliases)


def test_unread_buffers_on_the_server(unread) -> None:
    server = unread["buffers"]["server"]
    assert server["rmem_alloc"]["median"] == 845
    assert server["fwd_alloc"]["median"] == 3251
    assert server["rmem_alloc"]["median"] + server["fwd_alloc"]["median"] == 4096
    assert server["recv_q"] == 13 * 300
    assert server["sockets"] == 300
    assert server["sockstat_mem_pages"] == 1942


def test_unread_buffers_direct(capture) -> None:
    snap = capture("unread").hosts["server"]
    out = analysis.buffers(snap.ss, snap.sockstat)
    assert out["rmem_alloc"] == {"sum": 845 * 300, "median": 845, "per_socket": 845.0}
    assert out["wmem_queued"]["sum"] == 0


def test_unread_skb_caches_attributed(unread, slab_aliases) -> None:
    rows = rows_by_cache(unread)
    small = rows["skbuff_small_head"]
    assert small["objects_per_connection"] == pytest.approx(0.94, abs=0.01)
    assert small["attributed"]
    # skbuff_fclone_cache is printed as pool_workqueue (SLUB merged them)
    assert rows["pool_workqueue"]["attributed"]
    assert "skbuff_fclone_cache" in rows["pool_workqueue"]["aliases"]
    # TCP mem charged: (1942 - 150) pages x 4096 / 2000
    assert unread["per_connection_bytes"]["tcp_mem_charged"] == pytest.approx(3670.0, abs=0.1)
    assert unread["per_connection_bytes"]["total"] > 7536


# --------------------------------------------------------------------------
# classification rules
# --------------------------------------------------------------------------

def test_proc_inode_cache_never_attributed_and_dentries_set_apart() -> None:
    n = 1000
    base = {"proc_inode_cache": slab("proc_inode_cache", 1000, 696, 23),
            "dentry": slab("dentry", 40_000)}
    # a /proc/<pid>/fd scanner added one proc inode and one dentry per socket (2 sockets
    # per connection) on top of the sockets' own 2 dentries per connection
    now = {"proc_inode_cache": slab("proc_inode_cache", 1000 + 2 * n, 696, 23),
           "dentry": slab("dentry", 40_000 + 4 * n)}
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    proc = rows["proc_inode_cache"]
    assert proc["objects_per_connection"] == 2.0
    assert proc["category"] == "drift" and not proc["attributed"]
    dentry = rows["dentry"]
    assert dentry["objects"] == 2 * n  # 4000 grown, 2000 set apart
    assert dentry["objects_per_connection"] == 2.0
    assert dentry["attributed"]
    assert dentry["bytes"] == round(2 * n * analysis.slab_footprint(now["dentry"]))
    assert "2,000 dentries of /proc fd lookups set apart" in dentry["reason"]


def test_dentry_growth_only_from_proc_is_drift() -> None:
    n = 1000
    base = {"proc_inode_cache": slab("proc_inode_cache", 0, 696, 23),
            "dentry": slab("dentry", 40_000)}
    now = {"proc_inode_cache": slab("proc_inode_cache", 2 * n, 696, 23),
           "dentry": slab("dentry", 40_000 + 2 * n)}
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    assert rows["dentry"]["objects"] == 0
    assert rows["dentry"]["bytes"] == 0
    assert rows["dentry"]["category"] == "drift"


def test_dentries_of_reclaimed_proc_inodes_are_set_apart_too() -> None:
    """The scanner's proc inodes reclaimed during a run (seen: -2,500 per connection at
    N=4 with a link): their dentries go with them, which is not a socket's shrink either.
    Set apart up to the dentries' own change, never more (no growth is invented): the
    connections' own few dentries are lost in it."""
    n = 4
    base = {"proc_inode_cache": slab("proc_inode_cache", 20_000, 696, 23),
            "dentry": slab("dentry", 60_000)}
    now = {"proc_inode_cache": slab("proc_inode_cache", 10_000, 696, 23),
           "dentry": slab("dentry", 60_000 - 10_000 + 2 * n)}
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    assert rows["proc_inode_cache"]["category"] == "drift"
    assert rows["dentry"]["objects"] == 0 and rows["dentry"]["bytes"] == 0
    assert "9,992 dentries of reclaimed /proc fd lookups set apart" in rows["dentry"]["reason"]


def test_lsm_blobs_of_proc_inodes_are_set_apart() -> None:
    """CI, idle N=2,000 with the ledger: a scanner looked at both sides' 2,000 fds
    (proc_inode_cache +4,025) and lsm_inode_cache grew 8,088, 4 blobs per connection where
    the sockets hold 2: the ledger's 64 B per connection against slabinfo's 129 B."""
    n = 2000
    base = {"proc_inode_cache": slab("proc_inode_cache", 500, 696, 23),
            "lsm_inode_cache": slab("lsm_inode_cache", 30_000, 32, 128),
            "dentry": slab("dentry", 40_000)}
    now = {"proc_inode_cache": slab("proc_inode_cache", 500 + 4025, 696, 23),
           "lsm_inode_cache": slab("lsm_inode_cache", 30_000 + 8088, 32, 128),
           "dentry": slab("dentry", 40_000 + 4164 + 4025)}
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    lsm = rows["lsm_inode_cache"]
    assert lsm["objects"] == 8088 - 4025
    assert lsm["objects_per_connection"] == pytest.approx(2.03, abs=0.01) and lsm["attributed"]
    assert "4,025 LSM inode blobs of /proc fd lookups set apart" in lsm["reason"]
    assert rows["dentry"]["objects"] == 4164
    # reclaimed at small N: the blobs go with the inodes, set apart up to the cache's own
    # change (as the dentries are)
    n = 4
    base["proc_inode_cache"] = slab("proc_inode_cache", 20_000, 696, 23)
    now["proc_inode_cache"] = slab("proc_inode_cache", 10_000, 696, 23)
    now["lsm_inode_cache"] = slab("lsm_inode_cache", 30_000 - 10_000 + 2 * n, 32, 128)
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    assert rows["lsm_inode_cache"]["objects"] == 0
    assert "9,992 LSM inode blobs of reclaimed /proc fd lookups set apart" in rows[
        "lsm_inode_cache"]["reason"]


def test_tracks_min_puts_a_tenth_of_an_object_per_connection_in_drift() -> None:
    n = 2000
    base = {"kmalloc-64": slab("kmalloc-64", 10_000, 64, 64), "TCP": slab("TCP", 100, 2368, 13)}
    now = {"kmalloc-64": slab("kmalloc-64", 10_000 + n // 10, 64, 64),
           "TCP": slab("TCP", 100 + 2 * n, 2368, 13)}
    rows = {r["cache"]: r for r in analysis.cache_deltas(base, now, n, {})}
    assert rows["kmalloc-64"]["objects_per_connection"] == 0.1
    assert rows["kmalloc-64"]["category"] == "drift"
    assert not rows["kmalloc-64"]["attributed"]
    assert rows["kmalloc-64"]["reason"] == "0.100 objects per connection"
    assert rows["TCP"]["category"] == "socket"
    # exactly at the threshold counts
    at = {"kmalloc-64": slab("kmalloc-64", 10_000 + int(analysis.TRACKS_MIN * n), 64, 64)}
    row = analysis.cache_deltas({"kmalloc-64": base["kmalloc-64"]}, at, n, {})[0]
    assert row["category"] == "socket"


def test_conntrack_is_its_own_category() -> None:
    n = 100
    base = {"nf_conntrack": slab("nf_conntrack", 10, 320, 25)}
    now = {"nf_conntrack": slab("nf_conntrack", 10 + n, 320, 25)}
    row = analysis.cache_deltas(base, now, n, {})[0]
    assert row["category"] == "conntrack" and not row["attributed"]


def test_unchanged_caches_are_left_out(capture) -> None:
    base = capture("baseline").slab
    assert analysis.cache_deltas(base, base, K, {}) == []


def test_median() -> None:
    assert analysis.median([]) == 0.0
    assert analysis.median([3, 1, 2]) == 2


def test_a_64k_page_host_converts_its_pages_with_its_page_size(capture, slab_aliases) -> None:
    """A measured host with 64 KiB pages (arm64, ppc64le): its sockstat ``mem`` pages and
    its slab pages are 65,536 bytes each, not 4,096 (the page size comes from the host)."""
    from dataclasses import replace

    base, now = capture("baseline-unread"), capture("unread")
    big = analysis.checkpoint(replace(base, page_size=65536), replace(now, page_size=65536),
                              K, slab_aliases)
    # (1942 - 150) pages x 65,536 / 2000
    assert big["per_connection_bytes"]["tcp_mem_charged"] == pytest.approx(58720.3, abs=0.1)
    rows = rows_by_cache(big)
    small = rows_by_cache(analysis.checkpoint(base, now, K, slab_aliases))
    assert rows["TCP"]["page_bytes"] == 16 * small["TCP"]["page_bytes"]
    assert rows["TCP"]["bytes"] == pytest.approx(16 * small["TCP"]["bytes"], abs=16)
