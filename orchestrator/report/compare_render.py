"""Rendering a comparison (``compare.compare``): tables, markdown, JSON or one
self-contained HTML page. Reads only the comparison dict, never a result."""

from __future__ import annotations

import json
from typing import Any

from tabulate import tabulate

from ..errors import InputError
from ..measure.analysis import CGROUP_CAVEAT
from .compare import ALPHA, FORMATS, LAB_INTERFACE, MIN_RUNS, NEITHER

LAB_NOTE = (f"interfaces by role: {LAB_INTERFACE} is the interface holding the host's lab "
            "address (eth0 in a namespace, whatever its name on a real host)")


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
    """The verdict with its exact p-value: "significant (p=0.029)", "too few runs (p=0.33)"."""
    if v is None or v["significance"] is None:
        return ""
    p = v.get("p_value")
    return v["significance"] + ("" if p is None else f" (p={p:.2g})")


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
        parts.append(f"{item}significance: not judged (an exact test needs at least "
                     f"{MIN_RUNS} runs of each setup: --repeat {MIN_RUNS})")
    elif len(labels) > 1:
        parts.append(f"{item}significance: exact two-sided Mann–Whitney U test, significant "
                     f"when p < {ALPHA}, never with fewer than {MIN_RUNS} runs a side")
    for cp in cmp["checkpoints"]:
        parts += ["", f"{heading}Checkpoint {cp['name']}", *([""] if md else []),
                  figure_table(cp["rows"], labels, judged, tablefmt, "figure (bytes)")]
    if cmp.get("moved"):
        parts += ["", f"{heading}Bytes moved (goodput, bytes/s)", *([""] if md else []),
                  figure_table(cmp["moved"], labels, judged, tablefmt, "transfer")]
    for cp in cmp.get("counters") or []:
        parts += ["", f"{heading}Kernel counters at {cp['name']} (change since the baseline"
                  + (", where the setups differ)" if len(labels) > 1 else ")"),
                  *([""] if md else []),
                  figure_table(cp["rows"], labels, judged, tablefmt, "host counter")]
    if cmp.get("sides"):
        parts += ["", *side_lines(cmp, labels, tablefmt, heading, md)]
    parts += ["", f"{heading}Sysctls that differ (net.*, read back on each host)",
              *([""] if md else [])]
    if cmp["sysctls"]:
        parts.append(tabulate([[r["host"], r["sysctl"], *r["values"]] for r in cmp["sysctls"]],
                              ["host", "sysctl", *labels], tablefmt=tablefmt))
        if any(LAB_INTERFACE in r["sysctl"] for r in cmp["sysctls"]):
            parts.append(f"{item}{LAB_NOTE}")
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


def figure_table(rows: list[dict[str, Any]], labels: list[str], judged: bool, tablefmt: str,
                 first: str) -> str:
    """Rows of figures (compare._row): each group's cell, then each against the first."""
    head = [first, *labels]
    for lab in labels[1:]:
        head += [f"{lab}−{labels[0]}", f"{lab}/{labels[0]}"] + ([f"{lab} vs {labels[0]}"] if judged else [])
    lines = []
    for row in rows:
        line = [row["label"], *[cell_text(c) for c in row["groups"]]]
        for v in row["vs_first"][1:]:
            line += [diff_text(v), ratio_text(v)] + ([sig_text(v)] if judged else [])
        lines.append(line)
    return tabulate(lines, head, tablefmt=tablefmt, colalign=("left",) + ("right",) * (len(head) - 1))


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


def render_html(cmp: dict[str, Any], charts: dict[str, Any] | None = None,
                links: dict[str, Any] | None = None) -> str:
    """``charts``: compare_charts.comparison_charts (drawn from the results); ``links``:
    the site's navigation ({"index": href, "runs": {run_id: href}})."""
    from .html import environment

    return environment().get_template("compare.html.j2").render(
        cmp=cmp, charts=charts or {}, links=links or {}, labels=[g["label"] for g in cmp["groups"]], judged=_judged(cmp),
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
