"""The HTML report of one run: a single self-contained file rendered from result.json.

Inline CSS and inline SVG only: no script, no stylesheet link, no font or image URL,
so the file opens the same offline, from a mail attachment or a CI artifact.
``write_report(run_dir)`` writes ``<run_dir>/report.html`` atomically.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jinja2

from .. import resources
from ..errors import LabError
from ..measure.analysis import CGROUP_CAVEAT
from ..results import load_result
from ..results.model import Checkpoint, Result
from . import charts, conditions, findings, ofo, traffic
from . import kernels as kernels_compare
from . import link as link_report
from . import text as report_text
from .conditions_charts import pressure_chart
from .ledger import ledger_context
from .topology import topology_text

TEMPLATES = resources.templates_dir()
REPORT_FILE = "report.html"


# -- formatting ----------------------------------------------------------------------------

def num(value: Any, digits: int = 0) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        return value
    text = f"{value:,.{digits}f}"
    return "0" if text in ("-0", "-0.0") else text.replace("-", "−")


def signed(value: float | None) -> str:
    if value is None:
        return "–"
    if round(value) == 0:
        return "±0"
    return ("+" if value > 0 else "−") + f"{abs(value):,.0f}"


def kb(value: float) -> str:
    """Bytes as kB (1,000 B) with one decimal, as the article and UX sketch write them."""
    return f"{value / 1000:,.1f} kB"


def short(cache: str) -> str:
    return {"sock_inode_cache": "sock_inode", "skbuff_head_cache": "skbuff",
            "skbuff_small_head": "skb_small_head"}.get(cache, cache)


def utc(ts: float | None) -> str:
    if not ts:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(num=num, signed=signed, kb=kb, utc=utc)
    return env


# -- the figures the page shows --------------------------------------------------------------

def _idle(cp: Checkpoint) -> bool:
    states = {k for s in cp.states.values() for k, v in s.items() if v}
    queued = sum(b.recv_q + b.send_q for b in cp.buffers.values())
    return states == {"ESTAB"} and queued == 0


def summary(result: Result) -> dict[str, Any]:
    """The compact summary: one sentence for the first checkpoint, one card per checkpoint."""
    cps = result.measured()
    aliases = result.metadata.slab_aliases
    if not cps:
        return {"sentence": "No checkpoint was measured.", "cards": [], "changes": [],
                "ends": report_text.ends(result)}
    first = cps[0]
    total = first.per_connection().total
    parts = sorted(first.per_connection().attributed().items(), key=lambda kv: -kv[1])
    shares = [f"{charts.cache_label(c, aliases.get(c))} {v / total:.0%}"
              for c, v in parts if total and v / total >= 0.02][:6]
    what = ("idle connection pair" if _idle(first)
            else f"connection pair at {first.name}")
    sentence = f"{kb(total)} per {what} ({report_text.ends(result)})"
    if shares:
        sentence += "; " + ", ".join(shares)
    cards, changes = [], []
    previous: Checkpoint | None = None
    for cp in cps:
        pcb = cp.per_connection()
        card = {"name": cp.name, "total": pcb.total, "delta": None,
                "states": ", ".join(f"{h} {', '.join(f'{k} {v:,}' for k, v in s.items())}"
                                    for h, s in cp.states.items() if s) or "no socket",
                "charged": pcb.tcp_mem_charged}
        if previous is not None:
            card["delta"] = pcb.total - previous.per_connection().total
            now, then = pcb.attributed(), previous.per_connection().attributed()
            moved = {c: now.get(c, 0.0) - then.get(c, 0.0) for c in set(now) | set(then)}
            floor = max(8.0, 0.05 * abs(card["delta"]))
            top = sorted((kv for kv in moved.items() if abs(kv[1]) >= floor),
                         key=lambda kv: -abs(kv[1]))
            if top:
                changes.append({"name": cp.name, "total": pcb.total, "delta": card["delta"],
                                "caches": [(charts.cache_label(c, aliases.get(c)), v)
                                           for c, v in top[:3]]})
        cards.append(card)
        previous = cp
    return {"sentence": sentence, "cards": cards, "changes": changes,
            "ends": report_text.ends(result)}


TABLE_CACHES = 7


def memory_table(result: Result) -> dict[str, Any]:
    cps = result.measured()
    caches = report_text.top_caches(cps, limit=TABLE_CACHES)
    rows = []
    for cp in cps:
        pcb = cp.per_connection()
        by = pcb.attributed()
        shown = [by.get(c, 0.0) for c in caches]
        rows.append({"name": cp.name, "caches": shown, "other": pcb.total - sum(shown),
                     "total": pcb.total, "charged": pcb.tcp_mem_charged,
                     "drift": pcb.drift, "conntrack": pcb.conntrack,
                     "slab": pcb.meminfo_slab})
    conntrack = any(row["conntrack"] for row in rows)
    return {"caches": caches, "rows": rows, "conntrack": conntrack}


def per_side(result: Result) -> dict[str, Any] | None:
    """Each measured kernel's own figures at the last measured checkpoint (VMs, remote
    hosts: ``per_kernel``), or None. One row per kernel with its hosts and their roles;
    the socket caches of each side, bytes per connection; object sizes that differ
    between the sides (socket caches and the caches a connection lives in)."""
    cp = result.last_measured()
    if not cp or not cp.per_kernel:
        return None
    labels = list(cp.per_kernel)
    rows: list[dict[str, Any]] = []
    by: dict[str, dict[str, float]] = {}
    for label in labels:
        share = cp.per_kernel[label]
        pcb = share.per_connection
        rows.append({"label": label, "hosts": list(share.hosts),
                     "role": ", ".join(result.role_of(h) or "?" for h in share.hosts),
                     "release": share.release, "total": pcb.total,
                     "objects_total": pcb.objects_total,
                     "meminfo_slab": pcb.meminfo_slab})
        by[label] = pcb.of_category("socket")
    weight: dict[str, float] = {}
    for values in by.values():
        for cache, v in values.items():
            weight[cache] = max(weight.get(cache, 0.0), abs(v))
    caches = sorted(weight, key=lambda c: (-weight[c], c))
    cache_rows = [{"cache": c, "cells": [by[lb].get(c) for lb in labels]} for c in caches]
    sizes = {lb: cp.per_kernel[lb].objsize for lb in labels}
    candidates = caches + [c for c in kernels_compare.KEY_CACHES if c not in caches]
    objsize = []
    for cache in candidates:
        cells = [sizes[lb].get(cache) for lb in labels]
        known = {v for v in cells if v is not None}
        if len(known) > 1:
            objsize.append({"cache": cache, "cells": cells})
    return {"checkpoint": cp.name, "connections": cp.connections, "labels": labels,
            "rows": rows, "caches": cache_rows, "objsize": objsize}


def cgroup_rows(result: Result) -> list[dict[str, Any]]:
    """Per measured checkpoint and host: the growth of the host's memory cgroup (docker),
    bytes per connection. Empty when no host had a cgroup (netns, VMs, remote hosts)."""
    rows = []
    for cp in result.measured():
        for host, fig in cp.memory_per_connection.items():
            rows.append({"checkpoint": cp.name, "host": host, "role": result.role_of(host) or "",
                         "kmem": fig.get("kmem"), "sock": fig.get("sock"),
                         "usage": fig.get("usage")})
    return rows


def cache_details(result: Result) -> list[dict[str, Any]]:
    out = []
    for cp in result.measured():
        rows = sorted(cp.per_connection().by_cache,
                      key=lambda r: (not r.attributed, -abs(r.bytes_per_connection)))
        out.append({"name": cp.name, "rows": rows})
    return out


def buffers_rows(result: Result) -> list[dict[str, Any]]:
    rows = []
    for cp in result.measured():
        for host, buf in cp.buffers.items():
            rows.append({"checkpoint": cp.name, "host": host, "sockets": buf.sockets,
                         "rmem": buf.rmem_alloc.median, "wmem": buf.wmem_queued.median,
                         "fwd": buf.fwd_alloc.median, "recv_q": buf.recv_q,
                         "send_q": buf.send_q, "pages": buf.sockstat_mem_pages})
    return rows


def buffer_limits(result: Result) -> list[dict[str, Any]]:
    out = []
    for host in result.metadata.hosts:
        r = result.sysctl_ints(host, "net.ipv4.tcp_rmem")
        w = result.sysctl_ints(host, "net.ipv4.tcp_wmem")
        out.append({"host": host, "rmem": " ".join(f"{v:,}" for v in r) if r else "–",
                    "wmem": " ".join(f"{v:,}" for v in w) if w else "–"})
    return out


def states_table(result: Result) -> dict[str, Any]:
    hosts = list(result.metadata.hosts)
    rows = []
    for cp in result.checkpoints:
        states = cp.states
        for h in states:
            if h not in hosts:
                hosts.append(h)
        rows.append({"name": cp.name,
                     "cells": [", ".join(f"{k} {v:,}" for k, v in sorted(states.get(h, {}).items()))
                               or "–" for h in hosts]})
    return {"hosts": hosts, "rows": rows}


def sysctl_rows(result: Result,
                kernel_defaults: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Sysctls that differ from the kernel's defaults, per host.

    Pinned values come from the result. Their default: a host of the same run that
    did not pin the key read it back unchanged (a new network namespace starts from the
    kernel's defaults); else ``kernel_defaults`` when given (probed on the same kernel);
    else unknown. With ``kernel_defaults``, unpinned keys whose value differs are listed too.
    """
    hosts = result.metadata.hosts
    rows = []
    for name, host in hosts.items():
        pinned = host.sysctls_pinned
        live = host.net_sysctls
        for key, value in sorted(pinned.items()):
            default, source = None, ""
            for other_name, other in hosts.items():
                if other_name != name and key not in other.sysctls_pinned \
                        and key in other.net_sysctls:
                    default, source = other.net_sysctls[key], f"read on {other_name}"
                    break
            if default is None and kernel_defaults and key in kernel_defaults:
                default, source = kernel_defaults[key], "probed on this kernel"
            rows.append({"host": name, "key": key, "value": value,
                         "live": live.get(key), "default": default, "source": source,
                         "pinned": True,
                         "differs": None if default is None else _norm(default) != _norm(value)})
        if kernel_defaults:
            for key, value in sorted(live.items()):
                if key in pinned or key not in kernel_defaults:
                    continue
                if _norm(kernel_defaults[key]) != _norm(value):
                    rows.append({"host": name, "key": key, "value": value, "live": value,
                                 "default": kernel_defaults[key], "source": "probed on this kernel",
                                 "pinned": False, "differs": True})
    return rows


def _norm(value: Any) -> str:
    return " ".join(str(value).split())


def metadata_rows(result: Result) -> list[tuple[str, str]]:
    meta = result.metadata
    kern = meta.kernel
    ramp = result.ramp or {}
    rows = [
        ("kernel", f"{kern.release or '?'} {kern.version or ''} {kern.machine or ''}".strip()),
        ("backend", str(meta.backend_choice or meta.backend or "?")),
        ("image", meta.image or "– (none: network namespaces on the host)"),
        ("tool", f"tcplab {meta.tool_version or '?'}"
         + (f" · commit {meta.git_commit[:12]}" if meta.git_commit else "")),
        ("machine", (f"{meta.get('hostname', '?')} · Python {meta.get('python', '?')} · "
                     f"page {meta.page_size or 4096:,} B")),
        ("run", (f"{result.run_id or '?'} · {utc(result.started)} → "
                 f"{utc(result.finished)}")),
    ]
    if ramp:
        rate = (f"{result.scenario.connections:,} connections in "
                f"{ramp.get('seconds', 0):.2f} s · {ramp.get('rate', 0):,.0f} conn/s")
        rows.append(("ramp", rate))
    if meta.workers:
        rows.append(("workers", ", ".join(f"{k} {v}" for k, v in meta.workers.items())))
    if meta.shards:
        rows.append(("server ports", ", ".join(f"{p} ({c:,} conn.)" for p, c in meta.shards)))
    if meta.host_sysctls:
        rows.append(("host-wide sysctls changed",
                     ", ".join(f"{k}={v}" for k, v in meta.host_sysctls.items())))
    return rows


def hosts_rows(result: Result) -> list[dict[str, Any]]:
    return [{"name": name, "role": host.role or "", "address": host.address or "",
             "where": host.where, "pinned": len(host.sysctls_pinned)}
            for name, host in result.metadata.hosts.items()]


def context(result: Result, kernel_defaults: dict[str, str] | None = None) -> dict[str, Any]:
    sc = result.scenario
    meta = result.metadata
    complete = result.status == "complete"
    aliases = meta.slab_aliases
    return {
        "r": result,
        "title": f"{sc.name} · {result.profile.name}",
        "complete": complete,
        "status": result.status or "unknown",
        "error": result.error,
        "scenario": sc,
        "profile": result.profile,
        "backend": meta.backend or "?",
        "kernel": meta.kernel.release or "?",
        "version": meta.tool_version or "?",
        "summary": summary(result),
        "verdicts": findings.verdicts(result),
        "conditions": conditions.statements(result),
        "pressure_chart": pressure_chart(result),
        "marks": findings.MARK,
        "memory": memory_table(result),
        "short": short,
        "label": lambda c: charts.cache_label(c, aliases.get(c)),
        "details": cache_details(result),
        "sides": per_side(result),
        "cgroups": cgroup_rows(result),
        "cgroup_caveat": CGROUP_CAVEAT,
        "charts": charts.all_charts(result),
        "buffers": buffers_rows(result),
        "ofo": ofo.rows(result),
        "ofo_title": ofo.TITLE,
        "ofo_head": ofo.HEAD,
        "ofo_note": ofo.NOTE,
        "limits": buffer_limits(result),
        "sockstat_scope": report_text.sockstat_scope(result),
        "states": states_table(result),
        "metadata": metadata_rows(result),
        "hosts": hosts_rows(result),
        "sysctls": sysctl_rows(result, kernel_defaults),
        "merged": report_text.merged_notes(result),
        "estimate": meta.idle_pair_estimate,
        "measured": bool(result.measured()),
        "topology": topology_text(result),
        "link": "\n".join(link_report.header_lines(result)),
        "link_held": link_report.held_rows(result),
        "ledger": ledger_context(result),
        "traffic": traffic.html_context(result),
    }


def render_html(result: Result, kernel_defaults: dict[str, str] | None = None) -> str:
    """The whole report as one HTML string, from a loaded result alone.

    ``kernel_defaults`` (optional): the kernel's per-namespace sysctl defaults, used only
    to name defaults the result itself cannot tell (see ``sysctl_rows``).
    """
    return environment().get_template("report.html.j2").render(**context(result, kernel_defaults))


# -- writing -----------------------------------------------------------------------------------

def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, fsync, rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise LabError(f"cannot write {path}: {exc.strerror}; free some disk space or choose "
                       "another results directory") from None


def live_defaults(result: Result) -> dict[str, str] | None:
    """This kernel's per-namespace sysctl defaults, if the result was measured on it."""
    if result.metadata.kernel.release != os.uname().release:
        return None
    try:
        from ..sysctls import namespace_defaults

        return namespace_defaults()
    except (LabError, OSError):
        return None


def write_report(run_dir: Path, probe_defaults: bool = True) -> Path:
    """Render ``<run_dir>/result.json`` to ``<run_dir>/report.html``; return its path."""
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    if not run_dir.is_dir():
        run_dir = run_dir.parent
    defaults = live_defaults(result) if probe_defaults else None
    path = run_dir / REPORT_FILE
    write_text_atomic(path, render_html(result, defaults))
    return path
