"""Compare saved results: figures per checkpoint, differences, sysctl and metadata diffs.

Results that share (scenario, profile, kernel release, N, BYTES, backend, link) are
repetitions of one setup and form a group: each figure is shown as the group's median
with its spread (min..max). Every group is compared with the first one (difference and
ratio). A difference is judged by an exact two-sided Mann–Whitney U test over the
groups' runs (exact_test.py): "significant" when p < ALPHA, and never with fewer than
MIN_RUNS runs on either side ("too few runs": 2 vs 2 runs split apart by chance one time
in three). With a single run on either side nothing is judged.

The comparison is a plain dict (``compare``), made from loaded ``Result`` objects;
``render`` (compare_render.py) turns it into a table, markdown, JSON or a
self-contained HTML page.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..measure.counters import NOTABLE
from ..results import RESULT_FILE
from ..results.model import Buffers, Result
from .exact_test import mann_whitney_p

SCHEMA = "tcplab.compare/1"
FORMATS = ("table", "markdown", "json", "html")
TOP_CACHES = 5
SIGNIFICANT, NOT_SIGNIFICANT, TOO_FEW = "significant", "not significant", "too few runs"
ALPHA = 0.05  # two-sided significance level of the exact test
MIN_RUNS = 3  # below this many runs on a side, no difference is called significant

BASE_FIGURES = [
    ("total", "total per connection (attributed)"),
    ("meminfo_slab", "Slab (meminfo) per connection"),
    ("tcp_mem_charged", "TCP mem charged per connection"),
    ("rmem_receiver", "receiver rmem_alloc per socket (median)"),
    ("wmem_sender", "sender wmem_queued per socket (median)"),
]
METADATA_FIELDS: list[tuple[str, Callable[[Result], Any]]] = [
    ("kernel release", lambda r: r.metadata.kernel.release),
    ("backend", lambda r: r.metadata.backend),
    ("link", lambda r: _link_summary(r)),
    ("image", lambda r: r.metadata.image),
    ("tool version", lambda r: r.metadata.tool_version),
    ("git commit", lambda r: (r.metadata.git_commit or "")[:12] or None),
    ("scenario", lambda r: r.scenario.name),
    ("profile", lambda r: r.profile.name),
    ("N", lambda r: r.scenario.connections),
    ("BYTES", lambda r: r.scenario.bytes),
    ("status", lambda r: r.status),
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

def group_key(result: Result) -> dict[str, Any]:
    sc, meta = result.scenario, result.metadata
    return {"scenario": sc.name, "profile": result.profile.name,
            "kernel": meta.kernel.release, "connections": sc.connections,
            "bytes": sc.bytes, "backend": meta.backend,
            # link conditions set a different setup (left out without any: older keys stay)
            **({"link": _link_summary(result)} if meta.get("link") else {})}


def _median(buf: dict[str, Buffers], host: str | None, metric: str) -> float | None:
    """The host's median; without a sender/receiver (no data sent): the largest host's."""
    if host and host in buf:
        return getattr(buf[host], metric).median
    values = [getattr(b, metric).median for b in buf.values()]
    return max(values) if values else None


def figures(result: Result) -> dict[str, dict[str, float | None]]:
    """{checkpoint: {figure: value}} for every measured checkpoint of one result."""
    sender, receiver = result.flow()
    out: dict[str, dict[str, float | None]] = {}
    for cp in result.measured():
        pcb = cp.per_connection()
        fig = {"total": pcb.total, "meminfo_slab": pcb.meminfo_slab,
               "tcp_mem_charged": pcb.tcp_mem_charged,
               "rmem_receiver": _median(cp.buffers, receiver, "rmem_alloc"),
               "wmem_sender": _median(cp.buffers, sender, "wmem_queued")}
        for cache, value in pcb.attributed().items():
            fig[f"cache:{cache}"] = value
        out[cp.name] = fig
    return out


SIDES = ("server", "client")
# what a per-side figure is, by where it comes from
SIDE_SOURCES = {"vm": "VM slab", "ssh": "host slab"}
CGROUP_SOURCE = "cgroup kmem"


def side_figures(result: Result) -> dict[str, Any] | None:
    """{"checkpoint", "source", "server", "client", "total"} at the last measured
    checkpoint, or None. ``total`` is the run's whole figure per connection (both ends).

    With ``per_kernel`` (vm, ssh: each side its own kernel): that side's kernel total per
    connection (slab pages of the caches attributed to sockets). With
    ``memory_per_connection`` (docker): that side's container cgroup kmem per connection,
    which misses the accepted socket (CGROUP_CAVEAT). Sides by host role.
    """
    cp = result.last_measured()
    if not cp:
        return None
    if cp.per_kernel:
        values = result.side_totals(cp)
        source = SIDE_SOURCES.get(result.metadata.backend or "", "kernel slab")
    elif cp.memory_per_connection:
        values = dict.fromkeys(SIDES)
        for host, fig in cp.memory_per_connection.items():
            role = result.role_of(host)
            if role in values and fig.get("kmem") is not None:
                values[role] = fig["kmem"]
        source = CGROUP_SOURCE
    else:
        return None
    if all(values.get(side) is None for side in SIDES):
        return None
    return {"checkpoint": cp.name, "source": source,
            **{side: values.get(side) for side in SIDES},
            "total": cp.per_connection().total}


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


def significance(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """{"significance": verdict or None, "p_value": exact two-sided p or None}.

    Not judged (None) when a group is missing or has a single run; "too few runs" (with
    its p-value, for the record) when a side has fewer than MIN_RUNS; otherwise
    significant when p < ALPHA. 3 vs 3 runs cannot go below p = 0.1: a difference needs
    4 vs 4 (or 3 vs 5) runs to be called significant at 0.05.
    """
    if not a or not b or min(a["n"], b["n"]) < 2:
        return {"significance": None, "p_value": None}
    p = mann_whitney_p(a["values"], b["values"])
    if min(a["n"], b["n"]) < MIN_RUNS:
        verdict = TOO_FEW
    else:
        verdict = SIGNIFICANT if p < ALPHA else NOT_SIGNIFICANT
    return {"significance": verdict, "p_value": p}


def _letters(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"G{i + 1}"


def compare(results: list[Result]) -> dict[str, Any]:
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
        groups[index[token]]["runs"].append(result.run_id)
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
        rows = [row for key, label in keys
                if (row := _row(key, label, [[figs.get(cp, {}) for figs in runs]
                                             for runs in per_group],
                                key.startswith("cache:"))) is not None]
        out_cps.append({"name": cp, "rows": rows})

    return {
        "schema": SCHEMA,
        # bytes moved and kernel counters: only when some run has them (older ones do not)
        **{k: v for k, v in (("moved", moved_rows(groups)), ("counters", counter_rows(groups)))
           if v},
        "groups": [{"label": g["label"], "key": g["key"], "runs": g["runs"], "n": len(g["runs"]),
                    "status": [r.status for r in g["results"]]} for g in groups],
        "checkpoints": out_cps,
        "sides": sides_table(groups),
        "sysctls": sysctl_diff(groups),
        "metadata": metadata_diff(groups),
    }


def _row(key: str, label: str, per_group: list[list[dict[str, float | None]]],
         zero_if_absent: bool = False) -> dict[str, Any] | None:
    """One figure across the groups (each a list of its runs' figures): every group's
    median and spread, and each one against the first; None when no run has it.
    ``zero_if_absent``: a run that has the checkpoint but not the figure counts 0."""
    cells: list[dict[str, Any] | None] = []
    for runs in per_group:
        values = [figs[key] if key in figs else (0.0 if zero_if_absent and figs else None)
                  for figs in runs]
        values = [v for v in values if v is not None]
        cells.append(_stats(values) if values else None)
    if all(c is None for c in cells):
        return None
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
        versus.append({"diff": diff, "ratio": ratio, **significance(first, cell)})
    return {"figure": key, "label": label, "groups": cells, "vs_first": versus}


def moved_figures(result: Result) -> dict[str, float]:
    """Bytes moved: per transfer (by its read step), goodput in total and per connection."""
    out: dict[str, float] = {}
    for t in result.transfers:
        name = f"step {t.step} {t.sender}→{t.receiver}"
        out[f"{name} goodput (all)"] = t.total.goodput
        out[f"{name} goodput per connection (mean)"] = t.total.mean
    return out


def moved_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goodput rows (bytes/s) of every group, beside the memory ones."""
    per_group = [[moved_figures(r) for r in g["results"]] for g in groups]
    keys: list[str] = []
    for runs in per_group:
        for figs in runs:
            keys += [k for k in figs if k not in keys]
    return [row for k in keys if (row := _row(k, k, per_group)) is not None]


def counter_figures(result: Result) -> dict[str, dict[str, float]]:
    """{checkpoint: {"<host role> <counter>": change since the baseline}}: hosts by role so
    that differently named hosts line up (by name where a role has several)."""
    roles = result.hosts_by_role()
    out: dict[str, dict[str, float]] = {}
    for cp in result.measured():
        figs: dict[str, float] = {}
        for host, moved in cp.counters.items():
            role = result.role_of(host)
            who = role if role and len(roles.get(role, [])) == 1 else host
            figs.update({f"{who} {name}": float(v) for name, v in moved.items()})
        if cp.counters:
            out[cp.name] = figs
    return out


def counter_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkpoint, the counters whose change differs between groups (all that moved,
    with one group); a run without the counter counts 0 (it did not move)."""
    per_group = [[counter_figures(r) for r in g["results"]] for g in groups]
    out = []
    names: list[str] = []
    for runs in per_group:
        for figs in runs:
            names += [c for c in figs if c not in names]
    for cp in names:
        keys = sorted({k for runs in per_group for figs in runs for k in figs.get(cp, {})},
                      key=lambda k: (k.split(" ")[0], _notable(k.split(" ", 1)[1]), k))
        rows = []
        for key in keys:
            row = _row(key, key, [[figs.get(cp, {}) for figs in runs] for runs in per_group],
                       zero_if_absent=True)
            if row is None:
                continue
            medians = {c["median"] if c else None for c in row["groups"]}
            if len(groups) == 1 or len(medians) > 1:
                rows.append(row)
        if rows:
            out.append({"name": cp, "rows": rows})
    return out


def _notable(counter: str) -> int:
    return NOTABLE.index(counter) if counter in NOTABLE else len(NOTABLE)


def _host_sysctls(result: Result) -> dict[str, dict[str, str]]:
    """{role: net sysctls read back} (roles so that differently named hosts line up), with
    each interface's keys named by the interface's role (see :func:`by_interface_role`)."""
    return {host.role or name: by_interface_role(host.net_sysctls,
                                                 host.raw.get("lab_interface"))
            for name, host in result.metadata.hosts.items()}


#: net.ipv4.conf.<if>.X, net.ipv6.neigh.<if>.X ...: one key per interface.
INTERFACE_KEY = re.compile(r"^(net\.ipv[46]\.(?:conf|neigh))\.([^.]+)\.(.+)$")
LAB_INTERFACE = "<lab>"  # the interface holding the host's lab address
OTHER_INTERFACES = "other interfaces (not compared)"


def by_interface_role(values: dict[str, Any], lab_interface: str | None) -> dict[str, Any]:
    """Per-interface keys renamed by role: ``<lab>`` (the lab address's interface, eth0 in a
    namespace, ens3 on a real host), ``lo``, ``all``, ``default``. Keys of other interfaces
    (a real host's management interface, docker0) have no counterpart elsewhere: left out,
    their names kept under :data:`OTHER_INTERFACES`. Without a recorded lab interface (the
    local backends), the one interface besides lo/all/default is the lab's."""
    fixed = ("lo", "all", "default")
    names = {m.group(2) for m in map(INTERFACE_KEY.match, values) if m}
    if lab_interface is None:
        rest = names - set(fixed)
        lab_interface = next(iter(rest)) if len(rest) == 1 else None
    out: dict[str, Any] = {}
    for key, value in values.items():
        m = INTERFACE_KEY.match(key)
        if m is None:
            out[key] = value
        elif m.group(2) == lab_interface or m.group(2) in fixed:
            role = LAB_INTERFACE if m.group(2) == lab_interface else m.group(2)
            out[f"{m.group(1)}.{role}.{m.group(3)}"] = value
    others = sorted(names - set(fixed) - {lab_interface})
    if others:
        out[OTHER_INTERFACES] = ", ".join(others)
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
    linked = any(r.metadata.get("link") for g in groups for r in g["results"])
    for field, get in METADATA_FIELDS:
        if field == "link" and not linked:
            continue  # no run had link conditions: nothing to say (older comparisons unchanged)
        values = [_joined([get(r) for r in g["results"]]) for g in groups]
        rows.append({"field": field, "values": values, "differs": len(set(map(str, values))) > 1})
    return rows


def render(cmp: dict[str, Any], form: str = "table") -> str:
    """The comparison as ``form`` (table, markdown, json, html): see compare_render."""
    from .compare_render import render as render_as

    return render_as(cmp, form)


def _link_summary(result: Result) -> str:
    from .link import summary

    return summary(result)
