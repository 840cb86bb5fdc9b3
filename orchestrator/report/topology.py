"""The report's topology section: the drawing, the connections each client made, and
what the router paid (conntrack entries, bytes per connection), from the result alone."""

from __future__ import annotations

from tabulate import tabulate

from ..results.model import Result


def topology_text(result: Result, fmt: str = "simple") -> str:
    """Empty for the two-host lab (nothing to add to the header)."""
    meta = result.metadata
    topo = meta.get("topology") or {}
    hosts = topo.get("hosts") or {}
    if len(hosts) <= 2:
        return ""
    parts = ["Topology", topo.get("text", "").rstrip("\n"), ""]
    clients = meta.get("clients") or {}
    if len(clients) > 1:
        rows = [[name, f"{c['connections']:,}", ", ".join(str(p) for p in c["ports"])]
                for name, c in clients.items()]
        parts += ["Connections per client", tabulate(rows, ["client", "connections",
                                                            "server ports"], tablefmt=fmt), ""]
    rows = []
    own = False
    for cp in result.measured():
        for host, cost in (cp.raw.get("router") or {}).items():
            nat = "NAT" if (hosts.get(host) or {}).get("nat") else "no NAT"
            per = cost.get("bytes_per_connection")
            own = own or bool(cost.get("own_kernel"))
            kernel = cost.get("kernel_bytes_per_connection")
            rows.append([cp.name, f"{host} ({nat})", f"{cost['conntrack']:,}",
                         f"{cost['entries_per_connection']:.3f}",
                         "-" if per is None else f"{per:,.0f}",
                         "-" if kernel is None else f"{kernel:,.0f}"])
    if rows:
        headers = ["checkpoint", "router", "conntrack entries", "per connection",
                   "bytes/connection", "its kernel's slab/connection"]
        if not own:
            rows = [r[:-1] for r in rows]
            headers = headers[:-1]
        note = ("Each VM is its own kernel: the per-host slab figures are exact for each host "
                "(Per side, in the run's output and report.html), and the router's "
                "kernel's whole slab growth is its own column."
                if own else
                "The slab counters are machine-wide (one kernel): the router's entries are "
                "known from its own namespace; its other memory is not told apart.")
        parts += ["Router cost (conntrack entries in the router's own namespace; bytes: "
                  "an nf_conntrack object and its extension area, at their slab footprints)",
                  tabulate(rows, headers, tablefmt=fmt, disable_numparse=True,
                           colalign=("left", "left") + ("right",) * (len(headers) - 2)),
                  note, ""]
    return "\n".join(parts)
