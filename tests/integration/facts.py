"""The article's facts as assertions on a result, shared by every backend's scenario tests.

A backend's test runs the scenario its own way and hands the result here, so netns and
docker (and any later backend) are held to the same numbers.
"""

from __future__ import annotations


def checkpoint(result: dict, name: str) -> dict:
    return next(c for c in result["checkpoints"] if c["name"] == name)


def cache(cp: dict, name: str) -> dict:
    rows = {r["cache"]: r for r in cp["per_connection_bytes"]["by_cache"]}
    return rows.get(name, {"objects_per_connection": 0.0, "bytes_per_connection": 0.0,
                           "attributed": False})


def objs(cp: dict, name: str) -> float:
    return cache(cp, name)["objects_per_connection"]


def receive_buffer_below_rmem_min(result: dict, n: int) -> None:
    """c2s, 13 bytes: the server holds them in far less than tcp_rmem[0], then frees it."""
    rmem = result["metadata"]["hosts"]["server"]["net_sysctls"]["net.ipv4.tcp_rmem"]
    unread = checkpoint(result, "unread")["buffers"]["server"]
    read = checkpoint(result, "read")["buffers"]["server"]
    assert unread["recv_q"] == 13 * n
    assert 0 < unread["rmem_alloc"]["median"] < int(rmem.split()[0]), (unread, rmem)
    assert read["rmem_alloc"]["sum"] == 0 and read["recv_q"] == 0, read


def sender_released_receiver_holds(result: dict, n: int, nbytes: int) -> None:
    """s2c: acknowledged data leaves the sender; the receiver holds it until read."""
    unread = checkpoint(result, "unread")["buffers"]
    assert unread["server"]["wmem_queued"]["sum"] == 0, unread["server"]  # acked: released
    assert unread["server"]["send_q"] == 0
    assert unread["client"]["recv_q"] == nbytes * n  # the receiver holds it all
    assert unread["client"]["rmem_alloc"]["median"] >= nbytes
    read = checkpoint(result, "read")["buffers"]["client"]
    assert read["recv_q"] == 0 and read["rmem_alloc"]["sum"] == 0, read


def timewait_sheds_socket_objects(result: dict, n: int) -> None:
    """TIME_WAIT keeps a small tw_sock per connection; the socket, inode and file go."""
    est = checkpoint(result, "established")
    fin = checkpoint(result, "fin_wait2")
    tw = checkpoint(result, "time_wait")
    assert fin["states"] == {"server": {"CLOSE-WAIT": n}, "client": {"FIN-WAIT-2": n}}
    assert tw["states"]["client"] == {"TIME-WAIT": n}
    # Objects, not pages: freed objects leave empty slabs the allocator keeps for a while.
    # dentry gets more room: the dcache frees lazily and /proc scanners add their own.
    for name, room in (("sock_inode_cache", 0.1), ("filp", 0.1), ("TCP", 0.1), ("dentry", 0.25)):
        before, after = objs(est, name), objs(tw, name)
        assert before >= 1.7, (name, before)
        assert abs(after) < room * before, (name, before, after)
    tw_socks = objs(tw, "tw_sock_TCP")
    assert 0.9 <= tw_socks <= 1.1, (tw_socks, tw["states"])
    est_total = est["per_connection_bytes"]["objects_total"]
    tw_total = tw["per_connection_bytes"]["objects_total"]
    assert tw_total < 0.15 * est_total, (tw_total, est_total)
