"""The kernel's netem, as tc commands (pure: argv lists; session.py runs them).

A router's direction is a netem qdisc at the root of the interface the packets leave
by. An end's ingress has no queue of its own: its packets are redirected (an ``ingress``
qdisc and a ``mirred`` action) to an ifb device created in the host's namespace, and
netem sits at the root of that device. Everything lives in the lab's namespaces
(containers, VMs) and goes away with them.
"""

from __future__ import annotations

import json
from typing import Any

from .link import Link

IFB = "tlifb0"  # the ifb device an end's ingress goes through, inside its namespace
#: ``ethtool -K DEV gro off`` without ethtool (the VM image has python3, not ethtool): the
#: SIOCETHTOOL ioctl with ETHTOOL_SGRO. An end's ingress reaches netem after GRO, and netem's
#: limit counts skbs: with GRO each held skb was about two segments (2.7-3.0 KB measured in
#: a VM), so the queue held twice the packets asked for. Off, it counts wire packets, as a
#: router's queue (and the delay line, --no-gso) does.
GRO_OFF = ("import ctypes, fcntl, socket, struct, sys; "
           "v = ctypes.create_string_buffer(struct.pack('II', 0x2c, 0)); "
           "fcntl.ioctl(socket.socket(), 0x8946, "
           "struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(v)))")


def netem_args(link: Link) -> list[str]:
    """``netem limit L delay Dus Jus loss P% rate Rbit``: the link's one direction."""
    args = ["netem", "limit", str(link.hold_limit())]
    if link.delay_us or link.jitter_us:
        args += ["delay", f"{link.delay_us}us"]
        if link.jitter_us:
            args.append(f"{link.jitter_us}us")
    if link.loss_pct:
        args += ["loss", f"{link.loss_pct:g}%"]
    if link.rate_bps:
        args += ["rate", f"{link.rate_bps}bit"]
    return args


def forward_argvs(dev: str, link: Link) -> list[list[str]]:
    """A router's direction: netem at the root of the outgoing interface."""
    return [["tc", "qdisc", "replace", "dev", dev, "root", *netem_args(link)]]


def ingress_argvs(dev: str, link: Link) -> list[list[str]]:
    """An end's ingress: redirected to an ifb device with netem at its root."""
    return [["python3", "-c", GRO_OFF, dev],
            ["ip", "link", "add", IFB, "type", "ifb"],
            ["ip", "link", "set", IFB, "up"],
            ["tc", "qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"],
            ["tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "u32",
             "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", IFB],
            ["tc", "qdisc", "add", "dev", IFB, "root", *netem_args(link)]]


def stats_argv(dev: str) -> list[str]:
    return ["tc", "-s", "-j", "qdisc", "show", "dev", dev]


def parse_stats(text: str) -> dict[str, Any]:
    """The netem qdisc's counters from ``tc -s -j qdisc show``: packets held now (qlen,
    backlog bytes), dropped and sent so far."""
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError:
        return {}
    row = next((r for r in rows if r.get("kind") == "netem"), None)
    if row is None:
        return {}
    return {"held_packets": int(row.get("qlen", 0)), "held_bytes": int(row.get("backlog", 0)),
            "dropped": int(row.get("drops", 0)), "sent_packets": int(row.get("packets", 0)),
            "sent_bytes": int(row.get("bytes", 0))}
