"""The terminal report, rendered from a saved result alone (tabulate)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..measure.analysis import CGROUP_CAVEAT
from ..results.model import Checkpoint, Result
from . import conditions, findings, ofo
from . import link as link_report
from .ledger import header_note, ledger_text
from .topology import topology_text
from .traffic import traffic_text

TOP_CACHES = 7


def _n(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}"


def header(result: Result) -> str:
    meta = result.metadata
    sc = result.scenario
    status = "" if result.status == "complete" else f" · INCOMPLETE: {result.error}"
    return (f"tcplab {meta.tool_version} · {sc.name} · profile {result.profile.name} · "
            f"backend {meta.backend} · kernel {meta.kernel.release} · "
            f"N={sc.connections:,} · BYTES={sc.bytes:,}{status}")


def top_caches(checkpoints: list[Checkpoint], limit: int = TOP_CACHES) -> list[str]:
    """The biggest attributed caches, making sure each checkpoint's top three appear."""
    weight: dict[str, float] = {}
    must: list[str] = []
    for cp in checkpoints:
        rows = [r for r in cp.per_connection().by_cache if r.attributed]
        rows.sort(key=lambda r: -abs(r.bytes_per_connection))
        must += [r.cache for r in rows[:3] if r.cache not in must]
        for row in rows:
            weight[row.cache] = max(weight.get(row.cache, 0), abs(row.bytes_per_connection))
    rest = [c for c in sorted(weight, key=lambda c: -weight[c]) if c not in must]
    chosen = (must + rest)[:max(limit, len(must))]
    return sorted(chosen, key=lambda c: -weight[c])


def memory_table(result: Result, fmt: str = "simple") -> str:
    cps = result.measured()
    caches = top_caches(cps)
    rows = []
    for cp in cps:
        pcb = cp.per_connection()
        by = pcb.attributed()
        shown = [by.get(c, 0) for c in caches]
        rest = pcb.total - sum(shown)
        rows.append([cp.name, *[_n(v) for v in shown], _n(rest), _n(pcb.total),
                     _n(pcb.tcp_mem_charged),
                     _n(pcb.drift), _n(pcb.conntrack), _n(pcb.meminfo_slab)])
    head = ["checkpoint", *[_short(c) for c in caches], "other", "total", "TCP mem charged†",
            "drift*", "conntrack*", "Slab (meminfo)"]
    return tabulate(rows, head, tablefmt=fmt, colalign=("left",) + ("right",) * (len(head) - 1))


def _short(cache: str) -> str:
    return {"sock_inode_cache": "sock_inode", "skbuff_head_cache": "skbuff"}.get(cache, cache)


def buffers_table(result: Result, fmt: str = "simple") -> str:
    rows = []
    for cp in result.measured():
        for host, buf in cp.buffers.items():
            rows.append([cp.name, host, _n(buf.sockets), _n(buf.rmem_alloc.median),
                         _n(buf.wmem_queued.median), _n(buf.fwd_alloc.median),
                         _n(buf.recv_q), _n(buf.send_q), _n(buf.sockstat_mem_pages)])
    head = ["checkpoint", "host", "sockets", "rmem_alloc", "wmem_queued", "fwd_alloc",
            "Recv-Q total", "Send-Q total", "sockstat mem†"]
    return tabulate(rows, head, tablefmt=fmt)


def cgroup_table(result: Result, fmt: str = "simple") -> str:
    rows = []
    for cp in result.measured():
        for host, fig in cp.memory_per_connection.items():
            rows.append([cp.name, host, _n(fig.get("kmem")), _n(fig.get("sock")),
                         _n(fig.get("usage"))])
    if not rows:
        return ""
    return tabulate(rows, ["checkpoint", "host", "kmem", "sock", "usage"], tablefmt=fmt)


def states_table(result: Result, fmt: str = "simple") -> str:
    rows = []
    for cp in result.checkpoints:
        for host, states in cp.states.items():
            text = ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())) or "-"
            rows.append([cp.name, host, text])
    return tabulate(rows, ["checkpoint", "host", "TCP states (ss)"], tablefmt=fmt)


def merged_notes(result: Result) -> list[str]:
    aliases = result.metadata.slab_aliases
    notes = []
    for cache in top_caches(result.measured(), limit=50):
        if aliases.get(cache):
            notes.append(f"{cache} also counts {', '.join(aliases[cache])} (SLUB merged caches)")
    return notes


def ends(result: Result) -> str:
    """Where the per-connection figure comes from: one kernel, or each side's own, summed."""
    kernels = kernels_measured(result)
    if kernels > 1:
        return f"client + server ends, summed over {kernels} kernels: each side's own below"
    shared = shared_kernel(result)
    if shared:
        return (f"client + server ends, one kernel: the {result.metadata.backend} hosts "
                f"{' and '.join(shared)} share one kernel (same boot_id), so there are no "
                "per-side figures")
    return "client + server ends, one kernel"


def kernels_measured(result: Result) -> int:
    """How many kernels a checkpoint measured at most (1: one kernel for every host)."""
    return max((len(cp.per_kernel) for cp in result.measured()), default=0)


def sockstat_scope(result: Result) -> str:
    """Whose pages sockstat's ``mem`` counts: the machine's (one kernel), or each host's
    own where every host is its own kernel (VMs, remote hosts)."""
    return "each host's own kernel" if kernels_measured(result) > 1 else "machine-wide, not per host"


def shared_kernel(result: Result) -> list[str]:
    """Hosts of a remote backend (ssh) that turned out to share one kernel: each would be
    its own machine, yet they have the same boot_id (namespaces or containers of one)."""
    if result.metadata.backend != "ssh":
        return []
    return next((list(k.get("hosts") or []) for k in result.metadata.kernels.values()
                 if len(k.get("hosts") or []) > 1), [])


def render(result: Result, fmt: str = "simple") -> str:
    parts = [header(result), *header_note(result), *link_report.header_lines(result), ""]
    topo = topology_text(result, fmt)
    if topo:
        parts.append(topo)
    parts += link_report.held_text(result, fmt)
    if not result.measured():
        parts.append("no checkpoint was measured")
        return "\n".join(parts)
    parts += [f"Kernel memory per connection ({ends(result)}), bytes",
              memory_table(result, fmt),
              "* not socket memory: drift = caches whose growth does not track the connection "
              "count; conntrack = netfilter entries",
              "† sockstat TCP mem delta: pages charged for socket buffers (skb data lives in "
              "pages, not slab; overlaps the skb heads above)", ""]
    parts += ["Socket buffers per host (median per socket from ss -m skmem; queues summed), bytes",
              buffers_table(result, fmt),
              f"† pages charged to TCP in /proc/net/sockstat: {sockstat_scope(result)}", ""]
    parts += ofo.text(result, fmt)
    cgroup = cgroup_table(result, fmt)
    if cgroup:
        parts += ["Per-host memory cgroup (container), bytes per connection", cgroup,
                  CGROUP_CAVEAT, ""]
    parts += ledger_text(result, fmt)
    parts += traffic_text(result, fmt)
    parts += fanout_text(result, fmt)
    parts += [states_table(result, fmt)]
    for cp in result.checkpoints:
        for host, count in cp.tw_dropped.items():
            overflow = cp.tw_overflow.get(host)
            parts.append(f"! {cp.name}: {host} reached tcp_max_tw_buckets: the kernel closed "
                         f"{count:,} sockets instead of holding them as tw sockets"
                         + (f" (TCPTimeWaitOverflow {overflow:,})" if overflow is not None else ""))
    slope = result.slope
    if slope:
        parts += ["", slope_text(slope)]
    notes = merged_notes(result)
    if notes:
        parts += ["", *notes]
    est = result.metadata.idle_pair_estimate
    if est:
        parts += ["", f"Objects of one idle connection pair by live object sizes: "
                      f"{est['total']:,} B"]
    parts += ["", findings.findings_text(result)]
    said = conditions.conditions_text(result)
    if said:
        parts += ["", said]
    return "\n".join(parts)


def fanout_text(result: Result, fmt: str = "simple") -> list[str]:
    """ssh: each host's clock against the orchestrator's, and each snapshot's reads on all
    hosts at once against the same reads host after host ([] for other backends)."""
    clocks = {name: h.raw["clock"] for name, h in result.metadata.hosts.items()
              if isinstance(h.raw.get("clock"), dict)}
    rows = [[cp.name, cp.raw["fanout"].get("hosts"),
             f"{cp.raw['fanout']['parallel_seconds']:.3f}",
             _seconds(cp.raw["fanout"].get("serial_seconds")),
             f"{max(cp.raw['fanout'].get('read_at', {0: 0}).values()) * 1000:.1f}"]
            for cp in result.checkpoints if isinstance(cp.raw.get("fanout"), dict)]
    if not clocks and not rows:
        return []
    out = ["Hosts over SSH, in parallel (Fabric ThreadingGroup)"]
    if clocks:
        out.append("clock offsets (host minus this machine, ± bound): " + ", ".join(
            f"{name} {c['offset_s'] * 1000:+.1f} ms ±{c['error_s'] * 1000:.1f}"
            for name, c in clocks.items()))
    if rows:
        out.append(tabulate(rows, ["checkpoint", "hosts", "parallel s", "serial s",
                                   "read spread ms"], tablefmt=fmt))
    return [*out, ""]


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def slope_text(slope: dict[str, Any]) -> str:
    total = slope["total"]
    lines = [f"Slope over {len(slope['connections']) - 1} levels "
             f"({', '.join(f'{c:,}' for c in slope['connections'])} connections): "
             f"{total['slope']:,.0f} B/connection (R² {total['r2']:.4f}) vs delta/N "
             f"{total['delta_per_connection']:,.0f} B at {slope['checkpoint']}"]
    for cache in slope.get("not_linear", []):
        fit = slope["by_cache"][cache]
        lines.append(f"  ! {cache}: growth does not fit a line (R² {fit['r2']:.3f}); "
                     "its per-connection figure is unreliable")
    return "\n".join(lines)
