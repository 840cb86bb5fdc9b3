"""Compare saved results: figures per checkpoint, differences, sysctl and metadata diffs.

Results that share (scenario, profile, kernel release, N, BYTES, backend) are
repetitions of one setup and form a group: each figure is shown as the group's median
with its spread (min..max). Every group is compared with the first one (difference and
ratio). Like pyperf's ``compare_to``, a difference between two groups that both have
several runs is marked "not significant" when their ranges overlap; with a single run
on either side it cannot be judged and is left unmarked.

The comparison is a plain dict (``compare``); ``render`` turns it into a table,
markdown, JSON or a self-contained HTML page.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import InputError
from ..measure.analysis import CGROUP_CAVEAT
from ..results import RESULT_FILE
from . import findings
from . import kernels as kernels_compare
from . import text as report_text

SCHEMA = "tcplab.compare/1"
FORMATS = ("table", "markdown", "json", "html")
TOP_CACHES = 5
SIGNIFICANT, NOT_SIGNIFICANT = "significant", "not significant"

BASE_FIGURES = [
    ("total", "total per connection (attributed)"),
    ("meminfo_slab", "Slab (meminfo) per connection"),
    ("tcp_mem_charged", "TCP mem charged per connection"),
    ("rmem_receiver", "receiver rmem_alloc per socket (median)"),
    ("wmem_sender", "sender wmem_queued per socket (median)"),
]
METADATA_FIELDS = [
    ("kernel release", lambda r: r["metadata"].get("kernel", {}).get("release")),
    ("backend", lambda r: r["metadata"].get("backend")),
    ("image", lambda r: r["metadata"].get("image")),
    ("tool version", lambda r: r["metadata"].get("tool_version")),
    ("git commit", lambda r: (r["metadata"].get("git_commit") or "")[:12] or None),
    ("scenario", lambda r: r["scenario"].get("name")),
    ("profile", lambda r: r["profile"].get("name")),
    ("N", lambda r: r["scenario"].get("connections")),
    ("BYTES", lambda r: r["scenario"].get("bytes")),
    ("status", lambda r: r.get("status")),
]


# -- inputs ----------------------------------------------------------------------------------

def expand_runs(paths: list[Path]) -> list[Path]:
    """Run directories (or result files) from the arguments; a folder of runs expands."""
    runs: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file() or (path / RESULT_FILE).is_file():
            runs.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if (p / RESULT_FILE).is_file())
            if not found:
                raise InputError(f"{path}: no tcplab result here or in its subdirectories; "
                                 "pass run directories (results/<run>)")
            runs += found
        else:
            raise InputError(f"{path}: no such run directory or result file")
    return runs


# -- figures of one result ---------------------------------------------------------------------

def group_key(result: dict[str, Any]) -> dict[str, Any]:
    sc, meta = result.get("scenario", {}), result.get("metadata", {})
    return {"scenario": sc.get("name"), "profile": result.get("profile", {}).get("name"),
            "kernel": meta.get("kernel", {}).get("release"), "connections": sc.get("connections"),
            "bytes": sc.get("bytes"), "backend": meta.get("backend")}


def _roles(result: dict[str, Any]) -> tuple[str | None, str | None]:
    """(sender host, receiver host) of the scenario's first send step, else (None, None)."""
    for step in result.get("scenario", {}).get("steps", []):
        if isinstance(step, dict) and "send" in step:
            side = findings._side(step["send"])
            if side:
                other = "client" if side == "server" else "server"
                return findings.host_of_role(result, side), findings.host_of_role(result, other)
    return None, None


def _median(buf: dict[str, Any], host: str | None, metric: str) -> float | None:
    """The host's median; without a sender/receiver (no data sent): the largest host's."""
    if host and host in buf:
        return buf[host][metric]["median"]
    values = [b[metric]["median"] for b in buf.values()]
    return max(values) if values else None


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{checkpoint: {figure: value}} for every measured checkpoint of one result."""
    sender, receiver = _roles(result)
    out: dict[str, dict[str, float]] = {}
    for cp in report_text.measured(result):
        pcb = cp["per_connection_bytes"]
        buf = cp.get("buffers") or {}
        fig = {"total": pcb["total"], "meminfo_slab": pcb.get("meminfo_slab"),
               "tcp_mem_charged": pcb.get("tcp_mem_charged")}

        fig["rmem_receiver"] = _median(buf, receiver, "rmem_alloc")
        fig["wmem_sender"] = _median(buf, sender, "wmem_queued")
        for row in pcb["by_cache"]:
            if row["attributed"]:
                fig[f"cache:{row['cache']}"] = row["bytes_per_connection"]
        out[cp["name"]] = fig
    return out


SIDES = ("server", "client")
# what a per-side figure is, by where it comes from
SIDE_SOURCES = {"vm": "VM slab", "ssh": "host slab"}
CGROUP_SOURCE = "cgroup kmem"


def side_figures(result: dict[str, Any]) -> dict[str, Any] | None:
    """{"checkpoint", "source", "server", "client", "total"} at the last measured
    checkpoint, or None. ``total`` is the run's whole figure per connection (both ends).

    With ``per_kernel`` (vm, ssh: each side its own kernel): that side's kernel total per
    connection (slab pages of the caches attributed to sockets). With
    ``memory_per_connection`` (docker): that side's container cgroup kmem per connection,
    which misses the accepted socket (CGROUP_CAVEAT). Sides by host role.
    """
    cp = kernels_compare.last_measured(result)
    if not cp:
        return None
    meta = result.get("metadata", {})
    if cp.get("per_kernel"):
        values = kernels_compare.sides(result, cp)
        source = SIDE_SOURCES.get(meta.get("backend"), "kernel slab")
    elif cp.get("memory_per_connection"):
        roles = {name: h.get("role") for name, h in (meta.get("hosts") or {}).items()}
        values = {side: None for side in SIDES}
        for host, fig in cp["memory_per_connection"].items():
            if roles.get(host) in values and fig.get("kmem") is not None:
                values[roles[host]] = fig["kmem"]
        source = CGROUP_SOURCE
    else:
        return None
    if all(values.get(side) is None for side in SIDES):
        return None
    return {"checkpoint": cp["name"], "source": source,
            **{side: values.get(side) for side in SIDES},
            "total": cp["per_connection_bytes"]["total"]}


#: The derived row: the run's total minus both sides. About 0 where each side is its own
#: kernel (the total is their sum); with cgroups, what no container is charged for.
NEITHER = "neither side"


def _neither(fig: dict[str, Any]) -> float | None:
    if fig["server"] is None or fig["client"] is None:
        return None
    return round(fig["total"] - fig["server"] - fig["client"], 1)


def sides_table(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-side figures of every group (median and range over its runs), or None when no
    run has any (netns: both ends in one kernel, no cgroup)."""
    per_group = [[side_figures(r) for r in g["results"]] for g in groups]
    if not any(f for figs in per_group for f in figs):
        return None
    columns = []
    for figs in per_group:
        found = [f for f in figs if f]
        columns.append({"source": _joined([f["source"] for f in found]) if found else None,
                        "checkpoint": _joined([f["checkpoint"] for f in found]) if found else None})
    def cells(value: Callable[[dict[str, Any]], float | None]) -> list[dict[str, Any] | None]:
        out = []
        for figs in per_group:
            values = [v for f in figs if f and (v := value(f)) is not None]
            out.append(_stats(values) if values else None)
        return out

    rows = [{"side": side, "groups": cells(lambda f, side=side: f[side])} for side in SIDES]
    rows.append({"side": NEITHER, "groups": cells(_neither)})
    return {"columns": columns, "rows": rows,
            "cgroup": any(c["source"] == CGROUP_SOURCE for c in columns)}


# -- the comparison --------------------------------------------------------------------------

def _stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def significance(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str | None:
    """Judged only when both groups have several runs: overlapping ranges = not significant."""
    if not a or not b or a["n"] < 2 or b["n"] < 2:
        return None
    overlap = a["min"] <= b["max"] and b["min"] <= a["max"]
    return NOT_SIGNIFICANT if overlap else SIGNIFICANT


def _letters(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"G{i + 1}"


def compare(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Group repetitions, then compare every group's figures with the first group's."""
    if not results:
        raise InputError("nothing to compare: pass at least one result")
    groups: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for result in results:
        key = group_key(result)
        token = json.dumps(key, sort_keys=True)
        if token not in index:
            index[token] = len(groups)
            groups.append({"label": _letters(len(groups)), "key": key, "runs": [], "results": []})
        groups[index[token]]["runs"].append(result.get("run_id"))
        groups[index[token]]["results"].append(result)
    per_group = [[figures(r) for r in g["results"]] for g in groups]

    checkpoints: list[str] = []
    for runs in per_group:
        for figs in runs:
            checkpoints += [c for c in figs if c not in checkpoints]

    out_cps = []
    for cp in checkpoints:
        caches: dict[str, float] = {}
        for runs in per_group:
            for figs in runs:
                for k, v in figs.get(cp, {}).items():
                    if k.startswith("cache:") and v is not None:
                        caches[k] = max(caches.get(k, 0.0), abs(v))
        top = sorted(caches, key=lambda k: -caches[k])[:TOP_CACHES]
        keys = [(k, label) for k, label in BASE_FIGURES] + [(k, k[6:]) for k in top]
        rows = []
        for key, label in keys:
            cells: list[dict[str, Any] | None] = []
            for runs in per_group:
                values = [figs[cp][key] if key in figs.get(cp, {}) else
                          (0.0 if key.startswith("cache:") and cp in figs else None)
                          for figs in runs]
                values = [v for v in values if v is not None]
                cells.append(_stats(values) if values else None)
            if all(c is None for c in cells):
                continue
            first = cells[0]
            versus: list[dict[str, Any] | None] = [None]
            for cell in cells[1:]:
                if first is None or cell is None:
                    versus.append(None)
                    continue
                diff = cell["median"] - first["median"]
                # a ratio only between positive amounts (a negative delta has no scale)
                ratio = (cell["median"] / first["median"]
                         if first["median"] > 0 and cell["median"] >= 0 else None)
                versus.append({"diff": diff, "ratio": ratio,
                               "significance": significance(first, cell)})
            rows.append({"figure": key, "label": label, "groups": cells, "vs_first": versus})
        out_cps.append({"name": cp, "rows": rows})

    return {
        "schema": SCHEMA,
        "groups": [{"label": g["label"], "key": g["key"], "runs": g["runs"], "n": len(g["runs"]),
                    "status": [r.get("status") for r in g["results"]]} for g in groups],
        "checkpoints": out_cps,
        "sides": sides_table(groups),
        "sysctls": sysctl_diff(groups),
        "metadata": metadata_diff(groups),
    }


def _host_sysctls(result: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{role: net sysctls read back} (roles so that differently named hosts line up)."""
    out = {}
    for name, host in result.get("metadata", {}).get("hosts", {}).items():
        out[host.get("role") or name] = host.get("net_sysctls") or {}
    return out


def _joined(values: list[Any]) -> Any:
    distinct = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    if len(distinct) == 1:
        return distinct[0]
    return " | ".join("–" if v is None else str(v) for v in distinct)


def sysctl_diff(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """net.* values that differ between groups, per host role."""
    tables = [[_host_sysctls(r) for r in g["results"]] for g in groups]
    roles: list[str] = []
    for runs in tables:
        for hosts in runs:
            roles += [h for h in hosts if h not in roles]
    rows = []
    for role in roles:
        keys = sorted({k for runs in tables for hosts in runs for k in hosts.get(role, {})})
        for key in keys:
            values = [_joined([" ".join(str(hosts.get(role, {}).get(key, "")).split()) or None
                               for hosts in runs]) for runs in tables]
            if len(set(map(str, values))) > 1:
                rows.append({"host": role, "sysctl": key, "values": values})
    return rows


def metadata_diff(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for field, get in METADATA_FIELDS:
        values = [_joined([get(r) for r in g["results"]]) for g in groups]
        rows.append({"field": field, "values": values, "differs": len(set(map(str, values))) > 1})
    return rows


# -- rendering ---------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        text = f"{value:,.0f}"
        return "0" if text == "-0" else text
    return str(value)


def cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    if cell["n"] > 1:
        return f"{fmt(cell['median'])} ({fmt(cell['min'])}..{fmt(cell['max'])})"
    return fmt(cell["median"])


def diff_text(v: dict[str, Any] | None) -> str:
    if v is None:
        return "–"
    d = v["diff"]
    return "±0" if round(d) == 0 else f"{'+' if d > 0 else '-'}{abs(d):,.0f}"


def ratio_text(v: dict[str, Any] | None) -> str:
    if v is None or v["ratio"] is None:
        return "–"
    return f"{v['ratio']:.2f}×"


def sig_text(v: dict[str, Any] | None) -> str:
    if v is None or v["significance"] is None:
        return ""
    return v["significance"]


def group_title(g: dict[str, Any]) -> str:
    k = g["key"]
    runs = g["runs"]
    title = (f"{k['scenario']} · profile {k['profile']} · kernel {k['kernel']} · "
             f"N={fmt(k['connections'])} · BYTES={fmt(k['bytes'])} · {k['backend']}")
    shown = ", ".join(str(r) for r in runs[:4]) + (f", … ({len(runs)} in all)" if len(runs) > 4 else "")
    title += f" · {len(runs)} run{'s' if len(runs) != 1 else ''}: {shown}"
    if any(s != "complete" for s in g["status"]):
        title += " · INCOMPLETE run(s) included"
    return title


def _judged(cmp: dict[str, Any]) -> bool:
    return any(v and v.get("significance") for cp in cmp["checkpoints"] for row in cp["rows"]
               for v in row["vs_first"])


def tables(cmp: dict[str, Any], tablefmt: str) -> str:
    labels = [g["label"] for g in cmp["groups"]]
    judged = _judged(cmp)
    md = tablefmt == "github"
    item, heading = ("- ", "### ") if md else ("  ", "")
    intro = (f"{heading}Compared results (each letter: one setup; repetitions grouped, "
             "median (min..max))")
    parts = [intro, *([""] if md else [])]
    parts += [f"{item}{g['label']} = {group_title(g)}" for g in cmp["groups"]]
    if len(labels) > 1 and not judged:
        parts.append(f"{item}significance: not judged (needs at least two runs of each setup)")
    for cp in cmp["checkpoints"]:
        head = ["figure (bytes)", *labels]
        for lab in labels[1:]:
            head += [f"{lab}−{labels[0]}", f"{lab}/{labels[0]}"] + ([f"{lab} vs {labels[0]}"] if judged else [])
        rows = []
        for row in cp["rows"]:
            line = [row["label"], *[cell_text(c) for c in row["groups"]]]
            for v in row["vs_first"][1:]:
                line += [diff_text(v), ratio_text(v)] + ([sig_text(v)] if judged else [])
            rows.append(line)
        parts += ["", f"{heading}Checkpoint {cp['name']}", *([""] if md else []),
                  tabulate(rows, head, tablefmt=tablefmt,
                           colalign=("left",) + ("right",) * (len(head) - 1))]
    if cmp.get("sides"):
        parts += ["", *side_lines(cmp, labels, tablefmt, heading, md)]
    parts += ["", f"{heading}Sysctls that differ (net.*, read back on each host)",
              *([""] if md else [])]
    if cmp["sysctls"]:
        parts.append(tabulate([[r["host"], r["sysctl"], *r["values"]] for r in cmp["sysctls"]],
                              ["host", "sysctl", *labels], tablefmt=tablefmt))
    else:
        parts.append(f"{item}none: every net.* value is the same")
    differ = [r for r in cmp["metadata"] if r["differs"]]
    same = [r for r in cmp["metadata"] if not r["differs"]]
    parts += ["", f"{heading}Metadata that differs", *([""] if md else [])]
    if differ:
        parts.append(tabulate([[r["field"], *map(fmt, r["values"])] for r in differ],
                              ["field", *labels], tablefmt=tablefmt))
    else:
        parts.append(f"{item}none")
    if same:
        parts.append(("" if not md else "\n") + "same in all: " + " · ".join(f"{r['field']} {fmt(r['values'][0])}" for r in same))
    return "\n".join(parts)


def side_head(label: str, column: dict[str, Any]) -> str:
    return f"{label} ({column['source']})" if column["source"] else label


def side_checkpoints(cmp: dict[str, Any], labels: list[str]) -> str:
    return ", ".join(f"{lab} {col['checkpoint']}" for lab, col in
                     zip(labels, cmp["sides"]["columns"], strict=True) if col["checkpoint"])


SIDE_NOTE = ("VM slab / host slab: that side's own kernel, slab pages of the caches attributed "
             "to sockets; cgroup kmem: that side's container memory cgroup (kernel memory "
             "charged to it); – where a run has no per-side figure (both ends in one kernel, "
             f"no cgroup). {NEITHER}: the run's total per connection minus both sides; about "
             "0 where each side is its own kernel, and with cgroups what no container is "
             "charged for.")


def side_lines(cmp: dict[str, Any], labels: list[str], tablefmt: str, heading: str,
               md: bool) -> list[str]:
    sides = cmp["sides"]
    head = ["side (bytes per connection)",
            *[side_head(lab, col) for lab, col in zip(labels, sides["columns"], strict=True)]]
    rows = [[r["side"], *[cell_text(c) for c in r["groups"]]] for r in sides["rows"]]
    out = [f"{heading}Per side (last measured checkpoint: {side_checkpoints(cmp, labels)})",
           *([""] if md else []),
           tabulate(rows, head, tablefmt=tablefmt, colalign=("left",) + ("right",) * len(labels)),
           *([""] if md else []), SIDE_NOTE]
    if sides["cgroup"]:
        out.append(f"cgroup kmem: {CGROUP_CAVEAT}")
    return out


def render_json(cmp: dict[str, Any]) -> str:
    return json.dumps(cmp, indent=1)


def render_html(cmp: dict[str, Any]) -> str:
    from .html import environment

    return environment().get_template("compare.html.j2").render(
        cmp=cmp, labels=[g["label"] for g in cmp["groups"]], judged=_judged(cmp),
        title=group_title, cell=cell_text, diff=diff_text, ratio=ratio_text, sig=sig_text,
        fmt=fmt, differ=[r for r in cmp["metadata"] if r["differs"]],
        side_checkpoints=side_checkpoints, side_note=SIDE_NOTE,
        cgroup_caveat=CGROUP_CAVEAT,
        same=[r for r in cmp["metadata"] if not r["differs"]])


def render(cmp: dict[str, Any], form: str = "table") -> str:
    if form == "table":
        return tables(cmp, "simple")
    if form == "markdown":
        return tables(cmp, "github")
    if form == "json":
        return render_json(cmp)
    if form == "html":
        return render_html(cmp)
    raise InputError(f"unknown format {form!r}; expected one of {', '.join(FORMATS)}")
