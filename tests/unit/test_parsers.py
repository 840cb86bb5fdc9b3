"""Tests of orchestrator.measure.parsers on real output captured on kernel 6.18.

The captures are in tests/data (see its README.md; tests/data/capture.py
re-creates them). The numbers asserted here are the ones in those files: a
re-capture on another kernel means updating them.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import RunError
from orchestrator.measure.analysis import buffers
from orchestrator.measure.parsers import (
    PAGE_SIZE,
    ParseError,
    SlabLine,
    SsSocket,
    SsSummary,
    iter_ss,
    parse_meminfo,
    parse_slabinfo,
    parse_sockstat,
    parse_ss,
    slab_alias_groups,
)
from orchestrator.measure.sockets import summarize_ss

DATA = Path(__file__).resolve().parents[1] / "data"
K = 2000  # connections per capture run
IDLE_SKMEM = {"r": 0, "rb": 131072, "t": 0, "tb": 69120, "f": 0, "w": 0, "o": 0, "bl": 0,
              "d": 0}


def read(name: str) -> str:
    return (DATA / name).read_text()


def manifest() -> dict:
    return json.loads(read("manifest.json"))


# --------------------------------------------------------------------------
# /proc/slabinfo
# --------------------------------------------------------------------------

class TestSlabinfo:
    def test_baseline_object_sizes(self) -> None:
        slabs = parse_slabinfo(read("slabinfo-baseline.txt"))
        sizes = {name: slabs[name].objsize for name in (
            "TCP", "sock_inode_cache", "tw_sock_TCP", "filp", "dentry", "eventpoll_epi",
            "skbuff_head_cache", "skbuff_small_head", "request_sock_TCP", "lsm_inode_cache",
            "lsm_file_cache")}
        assert sizes == {
            "TCP": 2368, "sock_inode_cache": 832, "tw_sock_TCP": 256, "filp": 192,
            "dentry": 192, "eventpoll_epi": 128, "skbuff_head_cache": 256,
            "skbuff_small_head": 576, "request_sock_TCP": 320, "lsm_inode_cache": 32,
            "lsm_file_cache": 24,
        }
        assert len(slabs) == 235

    def test_tcp_line_established(self) -> None:
        tcp = parse_slabinfo(read("slabinfo-established-2000.txt"))["TCP"]
        assert tcp == SlabLine(name="TCP", active_objs=4056, num_objs=4056, objsize=2368,
                               objperslab=13, pagesperslab=8, active_slabs=312,
                               num_slabs=312)
        assert tcp.bytes() == 312 * 8 * 4096 == 10223616
        assert tcp.bytes(page_size=16384) == 4 * tcp.bytes()
        assert PAGE_SIZE == 4096

    def test_tcp_growth_matches_connection_count(self) -> None:
        # client and server live on the same kernel: two tcp_socks per connection
        before = parse_slabinfo(read("slabinfo-baseline.txt"))["TCP"]
        after = parse_slabinfo(read("slabinfo-established-2000.txt"))["TCP"]
        assert before.active_objs == 105
        grown = after.active_objs - before.active_objs
        assert grown == 3951
        assert 0.95 * 2 * K <= grown <= 2 * K
        assert after.bytes() - before.bytes() == 300 * 8 * 4096

    def test_timewait_keeps_tw_socks_and_bind_buckets(self) -> None:
        tw = parse_slabinfo(read("slabinfo-timewait-2000.txt"))
        assert tw["tw_sock_TCP"].active_objs == 2016
        assert tw["tw_sock_TCP"].bytes() == 126 * 4096
        assert tw["TCP"].active_objs == 53  # the tcp_socks are gone
        # the 128-byte bind buckets stay with the port; they show as eventpoll_epi
        assert tw["eventpoll_epi"].active_objs == 4096

    def test_unread_skb_caches(self) -> None:
        before = parse_slabinfo(read("slabinfo-baseline-unread-13.txt"))
        after = parse_slabinfo(read("slabinfo-unread-13-2000.txt"))
        # one queued skb per server socket: the small head (576 B) and the
        # fclone skb (512 B), the latter printed under the merged name pool_workqueue
        assert after["skbuff_small_head"].active_objs - before["skbuff_small_head"].active_objs \
            == 1889
        assert after["pool_workqueue"].active_objs - before["pool_workqueue"].active_objs == 1885

    def test_every_capture_parses(self) -> None:
        for path in sorted(DATA.glob("slabinfo-*.txt")):
            slabs = parse_slabinfo(path.read_text())
            assert slabs["TCP"].objsize == 2368, path.name

    def test_one_line_per_real_slab_directory(self) -> None:
        links = json.loads(read("slab-aliases.json"))
        slabs = parse_slabinfo(read("slabinfo-baseline.txt"))
        assert len(slabs) == sum(target is None for target in links.values())

    def test_duplicate_name_same_geometry_is_summed(self) -> None:
        text = ("slabinfo - version: 2.1\n"
                "x 1 2 64 64 1 : tunables 0 0 0 : slabdata 1 1 0\n"
                "x 3 4 64 64 1 : tunables 0 0 0 : slabdata 2 2 0\n")
        assert parse_slabinfo(text)["x"] == SlabLine("x", 4, 6, 64, 64, 1, 3, 3)

    @pytest.mark.parametrize("text", [
        "",
        "slabinfo - version: 2.0\nTCP 1 1 2368 13 8 : tunables 0 0 0 : slabdata 1 1 0\n",
        "slabinfo - version: 2.1 (statistics)\n",
        "TCP 1 1 2368 13 8 : tunables 0 0 0 : slabdata 1 1 0\n",
        "slabinfo - version: 2.1\n",
        "slabinfo - version: 2.1\nTCP 1 1 2368 13 8 : tunables 0 0 0 : slabdata 1 1\n",
        "slabinfo - version: 2.1\nTCP 1 x 2368 13 8 : tunables 0 0 0 : slabdata 1 1 0\n",
        "slabinfo - version: 2.1\nTCP 1 1 2368 13 8 ; tunables 0 0 0 : slabdata 1 1 0\n",
        "slabinfo - version: 2.1\nTCP 1 1 -2368 13 8 : tunables 0 0 0 : slabdata 1 1 0\n",
        ("slabinfo - version: 2.1\nx 1 1 64 64 1 : tunables 0 0 0 : slabdata 1 1 0\n"
         "x 1 1 96 42 1 : tunables 0 0 0 : slabdata 1 1 0\n"),
    ])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ParseError, match="/proc/slabinfo"):
            parse_slabinfo(text)

    def test_error_names_the_line(self) -> None:
        with pytest.raises(ParseError) as info:
            parse_slabinfo("slabinfo - version: 2.1\nTCP 1 1 2368\n")
        assert info.value.lineno == 2
        assert "line 2: 'TCP 1 1 2368'" in str(info.value)


# --------------------------------------------------------------------------
# /proc/meminfo
# --------------------------------------------------------------------------

class TestMeminfo:
    def test_baseline(self) -> None:
        mem = parse_meminfo(read("meminfo-baseline.txt"))
        assert len(mem) == 54
        assert mem["MemTotal"] == 24683656 * 1024
        assert mem["Slab"] == 93880 * 1024
        assert mem["Active(anon)"] % 1024 == 0
        assert mem["HugePages_Total"] == 0  # a count, not kB
        assert mem["Hugepagesize"] == 2048 * 1024

    def test_slab_grows_with_connections(self) -> None:
        before = parse_meminfo(read("meminfo-baseline.txt"))["Slab"]
        after = parse_meminfo(read("meminfo-established-2000.txt"))["Slab"]
        assert after - before == (108852 - 93880) * 1024
        # client + server on one kernel: roughly 7.5 KB per connection
        assert 6000 < (after - before) / K < 9000

    @pytest.mark.parametrize("text", [
        "",
        "MemTotal 24683656 kB\n",
        "MemTotal: 24683656 MB\n",
        "MemTotal: lots kB\n",
        "MemTotal:\n",
        "MemTotal: 1 kB extra\n",
        "MemTotal: 1 kB\nMemTotal: 2 kB\n",
    ])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ParseError, match="/proc/meminfo"):
            parse_meminfo(text)


# --------------------------------------------------------------------------
# /proc/net/sockstat
# --------------------------------------------------------------------------

class TestSockstat:
    def test_established_server(self) -> None:
        stat = parse_sockstat(read("sockstat-established-2000-server.txt"))
        assert stat == {
            "sockets": {"used": 2001},
            "TCP": {"inuse": 2001, "orphan": 0, "tw": 0, "alloc": 4002, "mem": 150},
            "UDP": {"inuse": 0, "mem": 0},
            "UDPLITE": {"inuse": 0},
            "RAW": {"inuse": 0},
            "FRAG": {"inuse": 0, "memory": 0},
        }

    def test_inuse_is_per_namespace_alloc_is_global(self) -> None:
        client = parse_sockstat(read("sockstat-established-2000-client.txt"))["TCP"]
        server = parse_sockstat(read("sockstat-established-2000-server.txt"))["TCP"]
        assert client["inuse"] == K
        assert server["inuse"] == K + 1  # plus the listener
        assert client["alloc"] == server["alloc"] == 2 * K + 2

    def test_timewait_and_finwait2(self) -> None:
        tw = parse_sockstat(read("sockstat-timewait-2000-client.txt"))["TCP"]
        assert tw["inuse"] == 0 and tw["tw"] == K
        # orphaned FIN-WAIT-2 sockets became timewait socks: counted in tw too
        fw2 = parse_sockstat(read("sockstat-closewait-2000-client.txt"))["TCP"]
        assert fw2["tw"] == K and fw2["inuse"] == 0
        cw = parse_sockstat(read("sockstat-closewait-2000-server.txt"))["TCP"]
        assert cw["inuse"] == K + 1

    def test_unread_bytes_charge_pages(self) -> None:
        idle = parse_sockstat(read("sockstat-established-2000-server.txt"))["TCP"]["mem"]
        unread = parse_sockstat(read("sockstat-unread-13-2000-server.txt"))["TCP"]["mem"]
        assert (idle, unread) == (150, 1942)

    @pytest.mark.parametrize("text", [
        "",
        "TCP inuse 1\n",
        "TCP: inuse\n",
        "TCP:\n",
        "TCP: inuse one\n",
        "TCP: inuse 1\nTCP: inuse 2\n",
    ])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ParseError, match="sockstat"):
            parse_sockstat(text)


# --------------------------------------------------------------------------
# ss -tmni
# --------------------------------------------------------------------------

class TestSs:
    def test_established_with_header(self) -> None:
        socks = parse_ss(read("ss-tmni-established.txt"))
        assert len(socks) == 301
        listen = socks[0]
        assert listen == SsSocket(state="LISTEN", recv_q=0, send_q=4096, local="0.0.0.0:5001",
                                  peer="0.0.0.0:*",
                                  skmem={**IDLE_SKMEM, "tb": 16384})
        estab = socks[1:]
        assert {s.state for s in estab} == {"ESTAB"}
        assert all(s.skmem == IDLE_SKMEM for s in estab)
        assert all(s.local == "198.18.0.1:5001" and s.peer.startswith("198.18.0.2:")
                   for s in estab)
        assert list(socks[1].skmem) == ["r", "rb", "t", "tb", "f", "w", "o", "bl", "d"]

    def test_without_header(self) -> None:
        text = read("ss-tmniH-established-client.txt")
        assert text.startswith("ESTAB")
        socks = parse_ss(text)
        assert len(socks) == 300
        assert all(s.state == "ESTAB" and s.skmem == IDLE_SKMEM and s.recv_q == 0
                   and s.send_q == 0 and s.peer == "198.18.0.1:5001" for s in socks)

    def test_header_is_optional(self) -> None:
        text = read("ss-tmni-unread-13.txt")
        headerless = text.split("\n", 1)[1]
        assert parse_ss(headerless) == parse_ss(text)

    def test_unread_13(self) -> None:
        socks = [s for s in parse_ss(read("ss-tmni-unread-13.txt")) if s.state == "ESTAB"]
        assert len(socks) == 300
        for s in socks:
            assert s.recv_q == 13
            assert s.skmem["r"] == 845  # skb truesize, far below tcp_rmem[0] = 4096
            assert s.skmem["f"] == 3251  # rest of the page forward-allocated
            assert s.skmem["r"] + s.skmem["f"] == 4096
        # the untrimmed capture: all 2000 server sockets showed r845
        meta = manifest()["files"]["ss-tmni-unread-13.txt"]
        assert meta["skmem_r_total"]["ESTAB"] == {"845": K}

    def test_closewait_keeps_the_fin(self) -> None:
        socks = [s for s in parse_ss(read("ss-tmni-closewait.txt")) if s.state != "LISTEN"]
        assert len(socks) == 300
        assert {s.state for s in socks} == {"CLOSE-WAIT"}
        # the FIN counts as one byte of Recv-Q, its skb stays charged to the socket
        assert all(s.recv_q == 1 and s.skmem["r"] == 832 for s in socks)

    def test_timewait_and_finwait2_have_no_skmem(self) -> None:
        for name, state in (("ss-tmni-timewait.txt", "TIME-WAIT"),
                            ("ss-tmni-finwait2.txt", "FIN-WAIT-2")):
            socks = parse_ss(read(name))
            assert len(socks) == 300, name
            assert all(s.state == state and s.skmem == {} for s in socks), name
            assert socks[0].local.startswith("198.18.0.2:")
            assert socks[0].peer == "198.18.0.1:5001"

    def test_send_queue(self) -> None:
        socks = parse_ss(read("ss-tmni-sendq.txt"))
        assert len(socks) == 4
        for s in socks:
            assert (s.state, s.recv_q, s.send_q) == ("ESTAB", 0, 75616)
            assert s.skmem["w"] == 77280 and s.skmem["tb"] == 622080  # send buffer autotuned
        server = [s for s in parse_ss(read("ss-tmni-sendq-server.txt")) if s.state == "ESTAB"]
        assert [(s.recv_q, s.skmem["r"], s.skmem["d"]) for s in server] == [(127104, 128768, 4)] * 4

    def test_iter_ss_streams_from_a_file(self) -> None:
        with open(DATA / "ss-tmni-timewait.txt") as f:
            it = iter_ss(f)
            assert isinstance(it, Iterator)
            assert sum(1 for _ in it) == 300

    def test_iter_ss_holds_one_socket(self) -> None:
        consumed = []

        def lines() -> Iterator[str]:
            for i, line in enumerate(read("ss-tmni-unread-13.txt").splitlines(True)):
                consumed.append(i)
                yield line

        it = iter_ss(lines())
        first = next(it)
        assert first.state == "LISTEN"
        # header, LISTEN line, its info line, and the next socket's first line
        assert len(consumed) == 4
        second = next(it)
        assert second.recv_q == 13
        assert len(consumed) == 6

    def test_netid_column_and_one_line_output(self) -> None:
        text = ("Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\n"
                "tcp   ESTAB 0 0 [::1]:22 [::1]:50000 skmem:(r0,rb1,t0,tb2,f0,w0,o0,bl0,d0)\n"
                "tcp   SYN-RECV 0 0 10.0.0.1:80 10.0.0.2:1234\n")
        socks = parse_ss(text)
        assert socks[0] == SsSocket("ESTAB", 0, 0, "[::1]:22", "[::1]:50000",
                                    {"r": 0, "rb": 1, "t": 0, "tb": 2, "f": 0, "w": 0,
                                     "o": 0, "bl": 0, "d": 0})
        assert socks[1].state == "SYN-RECV" and socks[1].skmem == {}

    def test_several_info_lines_and_crlf(self) -> None:
        text = ("ESTAB 0 0 1.1.1.1:1 2.2.2.2:2\r\n"
                "\t cubic wscale:7,7\r\n"
                "\t skmem:(r5,rb6,t0,tb7,f0,w0,o0,bl0,d1)\r\n"
                "LAST-ACK 1 2 1.1.1.1:3 2.2.2.2:4\r\n")
        a, b = parse_ss(text)
        assert a.skmem["r"] == 5 and a.skmem["d"] == 1
        assert (b.state, b.recv_q, b.send_q, b.skmem) == ("LAST-ACK", 1, 2, {})

    def test_empty(self) -> None:
        assert parse_ss("") == []
        assert parse_ss("State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n") == []

    @pytest.mark.parametrize("text", [
        "\t skmem:(r0,rb1,t0,tb2,f0,w0,o0,bl0,d0)\n",
        "BOGUS 0 0 1.1.1.1:1 2.2.2.2:2\n",
        "ESTAB x 0 1.1.1.1:1 2.2.2.2:2\n",
        "ESTAB 0 0 1.1.1.1:1\n",
        "ESTAB 0 0 1.1.1.1:1 2.2.2.2:2\n\t skmem:(r0,rbig,t0)\n",
    ])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ParseError, match="ss output"):
            parse_ss(text)

    def test_error_message_truncates_the_line(self) -> None:
        line = "BOGUS 0 0 1.1.1.1:1 2.2.2.2:2 " + "x" * 500
        with pytest.raises(ParseError) as info:
            parse_ss("State Recv-Q\n" + line + "\n")
        err = info.value
        assert isinstance(err, RunError)
        assert err.what == "ss output" and err.lineno == 2
        assert "BOGUS" in str(err) and "x" * 200 not in str(err)
        assert len(str(err)) < 400


# --------------------------------------------------------------------------
# summarize_ss: sockdiag.py's Summary, the code live runs use, fed ss text
# --------------------------------------------------------------------------

def sock(state: str, recv_q: int = 0, send_q: int = 0, **skmem: int) -> SsSocket:
    return SsSocket(state, recv_q, send_q, "1.1.1.1:1", "2.2.2.2:2", dict(skmem))


class TestSummarize:
    def test_unread_capture(self) -> None:
        with open(DATA / "ss-tmni-unread-13.txt") as f:
            summary = summarize_ss(iter_ss(f))
        assert summary.states == {"ESTAB": 300}  # LISTEN excluded by default
        assert summary.sums["ESTAB"]["recv_q"] == 300 * 13
        assert summary.sums["ESTAB"]["r"] == 300 * 845
        assert summary.medians["ESTAB"]["r"] == 845.0
        assert summary.medians["ESTAB"]["rb"] == 131072.0
        assert summary.skmem_sockets == {"ESTAB": 300}

    def test_listen_included_on_request(self) -> None:
        summary = summarize_ss(parse_ss(read("ss-tmni-established.txt")), exclude_states=())
        assert summary.states == {"LISTEN": 1, "ESTAB": 300}
        assert summary.sums["LISTEN"]["send_q"] == 4096
        assert summary.sums["ESTAB"]["r"] == 0

    def test_timewait_has_only_queues(self) -> None:
        summary = summarize_ss(parse_ss(read("ss-tmni-timewait.txt")))
        assert summary.states == {"TIME-WAIT": 300}
        assert summary.sums == {"TIME-WAIT": {"recv_q": 0, "send_q": 0}}
        assert summary.skmem_sockets == {"TIME-WAIT": 0}

    def test_median_by_hand(self) -> None:
        socks = [sock("ESTAB", 1, r=10), sock("ESTAB", 2, r=30), sock("ESTAB", 3, r=20),
                 sock("ESTAB", 4, r=1000), sock("CLOSE-WAIT", 1, r=832),
                 sock("CLOSE-WAIT", 1, r=832), sock("CLOSE-WAIT", 1, r=0),
                 sock("TIME-WAIT"), sock("LISTEN", 0, 4096, r=0)]
        summary = summarize_ss(socks)
        assert summary.states == {"ESTAB": 4, "CLOSE-WAIT": 3, "TIME-WAIT": 1}
        assert summary.sums["ESTAB"] == {"recv_q": 10, "send_q": 0, "r": 1060}
        assert summary.medians["ESTAB"] == {"recv_q": 2.5, "send_q": 0.0, "r": 25.0}
        assert summary.medians["CLOSE-WAIT"] == {"recv_q": 1.0, "send_q": 0.0, "r": 832.0}
        assert summary.medians["TIME-WAIT"] == {"recv_q": 0.0, "send_q": 0.0}
        assert summarize_ss([sock("ESTAB", r=7), sock("ESTAB", r=7), sock("ESTAB", r=7),
                             sock("ESTAB", r=100)]).medians["ESTAB"]["r"] == 7.0

    def test_to_dict_is_json(self) -> None:
        summary = summarize_ss([sock("ESTAB", 13, r=845), sock("TIME-WAIT")])
        data = json.loads(json.dumps(summary.to_dict()))
        assert data["states"] == {"ESTAB": 1, "TIME-WAIT": 1}
        assert data["medians"]["ESTAB"]["r"] == 845.0
        assert isinstance(summary, SsSummary)

    def test_empty(self) -> None:
        summary = summarize_ss([])
        assert (summary.states, summary.sums, summary.medians) == ({}, {}, {})

    def test_bounded_memory(self) -> None:
        n = 20_000

        def many() -> Iterator[SsSocket]:
            for i in range(n):
                yield sock("ESTAB", 13, 0, r=845 if i % 2 else 0, rb=131072, f=3251)

        tracemalloc.start()
        try:
            summary = summarize_ss(many())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert summary.states == {"ESTAB": n}
        assert summary.sums["ESTAB"]["r"] == 845 * (n // 2)
        assert summary.medians["ESTAB"]["r"] == 422.5
        assert peak < 256 * 1024  # a list of 20,000 sockets alone would be several MB


# --------------------------------------------------------------------------
# /sys/kernel/slab aliases
# --------------------------------------------------------------------------

class TestSlabAliases:
    def test_real_groups(self) -> None:
        links = json.loads(read("slab-aliases.json"))
        assert len(links) == 429
        groups = slab_alias_groups(links)
        assert groups["eventpoll_epi"] == ["fib6_node", "pte_list_desc", "tcp_bind2_bucket",
                                           "tcp_bind_bucket"]
        assert "eventpoll_epi" in groups["tcp_bind_bucket"]
        assert "tcp_bind2_bucket" in groups["tcp_bind_bucket"]
        # the 512-byte fclone skbs of a queued message hide under pool_workqueue
        assert "skbuff_fclone_cache" in groups["pool_workqueue"]
        for unmerged in ("TCP", "tw_sock_TCP", "sock_inode_cache", "skbuff_small_head",
                         ":A-0000128"):
            assert unmerged not in groups

    def test_slabinfo_prints_the_group_once(self) -> None:
        slabs = parse_slabinfo(read("slabinfo-established-2000.txt"))
        assert "eventpoll_epi" in slabs
        assert "tcp_bind_bucket" not in slabs and "tcp_bind2_bucket" not in slabs

    def test_by_hand(self) -> None:
        links = {"a": ":x", "b": ":x", "c": ":y", "d": None, ":x": None, ":y": None,
                 "e": "../:z", "f": ":z"}
        assert slab_alias_groups(links) == {"a": ["b"], "b": ["a"], "e": ["f"], "f": ["e"]}
        assert slab_alias_groups({}) == {}

    def test_sock_diag_and_ss_text_sockets_summarise_alike(self) -> None:
        """One implementation: a socket as sock_diag sends it (the bytes key the dump
        counts) and the same socket parsed from ss text give the same summary."""
        import struct

        from orchestrator.measure.sockets import sockdiag

        mod = sockdiag()
        live, text = mod.Summary(True), mod.Summary(True)
        skmem = dict(IDLE_SKMEM, r=845, f=3251)
        for _ in range(3):
            live.keys[bytes([1]) + struct.pack("=II", 13, 0)
                      + struct.pack("=9I", *(skmem[k] for k in mod.SKMEM_KEYS))] += 1
            text.add_socket("ESTAB", 13, 0, skmem)
        live.keys[bytes([6]) + struct.pack("=II", 0, 0)] += 1  # TIME-WAIT: no skmem
        text.add_socket("TIME-WAIT", 0, 0, {})
        assert live.to_dict() == text.to_dict()
        assert live.to_dict()["skmem_sockets"] == {"ESTAB": 3, "TIME-WAIT": 0}


# --------------------------------------------------------------------------
# out-of-order data held, inferred: Recv-Q 0 while rmem_alloc > 0
# --------------------------------------------------------------------------

class TestOutOfOrderInferred:
    def test_loss_capture(self) -> None:
        """A reader that keeps up over a 1% lossy link (ss text a run saved): one of its
        four sockets has read everything in order (Recv-Q 0) yet holds 221,184 B."""
        summary = summarize_ss(parse_ss((DATA / "conditions" / "ss-loss-client.txt")
                                        .read_text()))
        assert summary.states == {"ESTAB": 4}
        assert summary.sums["ESTAB"]["recv_q"] == 0
        assert summary.ofo_inferred == {"ESTAB": {"sockets": 1, "rmem_alloc": 221184}}
        assert buffers(summary, {})["ofo_inferred"] == {"sockets": 1, "rmem_alloc": 221184}

    def test_unread_in_order_data_is_not_out_of_order(self) -> None:
        """13 unread bytes (Recv-Q 13, r845): memory held for in-order data, not counted;
        an unread FIN (CLOSE-WAIT: Recv-Q 1, r832) neither, nor idle sockets (r0)."""
        for name in ("ss-tmni-unread-13.txt", "ss-tmni-closewait.txt", "ss-tmni-established.txt"):
            summary = summarize_ss(parse_ss(read(name)))
            assert summary.ofo_inferred == {}
            assert buffers(summary, {})["ofo_inferred"] == {"sockets": 0, "rmem_alloc": 0}

    def test_by_hand(self) -> None:
        socks = [sock("ESTAB", 0, r=4608), sock("ESTAB", 0, r=4608), sock("ESTAB", 10, r=900),
                 sock("ESTAB", 0, r=0), sock("ESTAB", 0), sock("CLOSE-WAIT", 1, r=832),
                 sock("FIN-WAIT-1", 0, r=2304), sock("TIME-WAIT")]
        summary = summarize_ss(socks)
        assert summary.ofo_inferred == {"ESTAB": {"sockets": 2, "rmem_alloc": 9216},
                                        "FIN-WAIT-1": {"sockets": 1, "rmem_alloc": 2304}}
        assert buffers(summary, {})["ofo_inferred"] == {"sockets": 3, "rmem_alloc": 11520}

    def test_sock_diag_keys_give_the_same(self) -> None:
        """The live dump's bytes keys (state, rqueue, wqueue, skmem words) and ss text
        agree, and the summary survives sockets.from_dict (the JSON a host prints)."""
        import struct

        from orchestrator.measure.sockets import from_dict, sockdiag

        mod = sockdiag()
        live, text = mod.Summary(True), mod.Summary(True)
        for rqueue, r in ((0, 221184), (0, 0), (2896, 3752)):
            skmem = dict(IDLE_SKMEM, r=r)
            live.keys[bytes([1]) + struct.pack("=II", rqueue, 0)
                      + struct.pack("=9I", *(skmem[k] for k in mod.SKMEM_KEYS))] += 1
            text.add_socket("ESTAB", rqueue, 0, skmem)
        assert live.to_dict() == text.to_dict()
        back = from_dict(json.loads(json.dumps(live.to_dict())))
        assert back.ofo_inferred == {"ESTAB": {"sockets": 1, "rmem_alloc": 221184}}
        # a summary printed before the figure existed reads as none
        old = {k: v for k, v in live.to_dict().items() if k != "ofo_inferred"}
        assert from_dict(old).ofo_inferred == {}
