"""Limits of a lab VM's kernel, sized from the run's N.

A VM is the lab's own kernel, so its sysctls are the lab's to set. Some defaults scale
with the VM's memory and are far below what a run at N holds: in a 1 GiB VM the TCP
established hash has 8,192 slots, so ``tcp_max_tw_buckets`` and ``tcp_max_orphans`` are
4,096 and ``tcp_max_syn_backlog`` is 128. At N=10,000 ``timewait`` then saw the kernel
drop 5,904 client TIME-WAIT sockets and waited for a checkpoint that could not come.
Orphans get four times the room: once an orphan's retransmission times out (frequent in
a slow TCG guest) the kernel counts every orphan two or four times against the limit.

:func:`sized_sysctls` gives, for N, the values set in every VM of the run unless the lab
file or the profile sets the key itself (theirs win, with the warnings that follow). They
are per-namespace sysctls every kernel from 5.10 to 7.x has, so no probing is needed;
connection tracking is not loaded in the VMs (no ``nf_conntrack_max`` to size), and open
files are not limited for the side, which runs as root (``fs.file-max`` does not apply to
CAP_SYS_ADMIN; init raises RLIMIT_NOFILE to 1,048,576, ``fs.nr_open``'s default).
"""

from __future__ import annotations

#: Headroom over N: the baseline's and the control connection's sockets, and a margin.
SLACK = 1024


def sized_sysctls(connections: int) -> dict[str, str]:
    """sysctl -> value for a VM of a run with ``connections`` connections (pure)."""
    room = connections + connections // 8 + SLACK
    return {
        # every connection may sit in TIME-WAIT (or FIN-WAIT-2) on one host at once
        "net.ipv4.tcp_max_tw_buckets": str(room),
        # and closed by its owner but not yet done (FIN-WAIT-1, LAST-ACK, CLOSING); when an
        # orphan's retransmission times out the kernel counts every orphan two or four
        # times (tcp_out_of_resources' shift) and resets those over the limit
        "net.ipv4.tcp_max_orphans": str(4 * room),
        # a ramp's SYNs in flight are bounded by the listen backlog (somaxconn 4096)
        "net.ipv4.tcp_max_syn_backlog": str(min(max(connections, 1024), 65536)),
    }


def with_sized(host_sysctls: dict[str, dict[str, str]],
               connections: int) -> dict[str, dict[str, str]]:
    """Each host's sysctls with the sized limits added where the host sets none itself."""
    sized = sized_sysctls(connections)
    return {name: {**sized, **values} for name, values in host_sysctls.items()}
