"""The sweep report: memory per connection (and goodput) against the swept value.

A sweep (``orchestrator.sweep``) is one run per point, times ``--repeat``. This module
reads the saved results alone: per point and checkpoint, the median of each figure over
the point's complete runs, with its spread (min..max and the coefficient of variation,
``repeats.spread``). Figures:

- slab bytes per connection (both ends; ``per_connection().total``);
- TCP mem charged per connection (sockstat ``mem`` delta: the socket buffers' pages);
- receive memory per socket on the client and the server (median ``rmem_alloc``) and the
  send queue per socket (median ``wmem_queued``): where the buffers sit;
- goodput, once runs record it (:func:`goodput`).
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..repeats import CV_WARN, spread
from ..results.model import Checkpoint, Result
from .findings import first_host
from .link import summary as link_summary

#: (key, label, unit) of each figure, in the order the report shows them.
FIGURES = (
    ("slab", "slab B/conn", "bytes per connection"),
    ("tcp_mem", "TCP mem charged B/conn", "bytes per connection"),
    ("rmem_client", "client rmem_alloc B/socket", "bytes per socket"),
    ("wmem_server", "server wmem_queued B/socket", "bytes per socket"),
    ("rmem_server", "server rmem_alloc B/socket", "bytes per socket"),
    ("wmem_client", "client wmem_queued B/socket", "bytes per socket"),
    ("goodput", "goodput MB/s (all connections)", "MB/s"),
)
LABELS = {key: label for key, label, _ in FIGURES}


TRANSFER = "transfer"  # goodput is one figure per run: shown as this pseudo-checkpoint


def goodput(result: Result) -> float | None:
    """Goodput (MB/s, all connections) of the run's largest transfer, where runs record it.

    Hook for the ``counters`` work: ``Result.goodput()`` (its ``.goodput``, bytes/s) once
    that model is merged; until then every point shows "–" and the report says goodput
    was not recorded.
    """
    method = getattr(result, "goodput", None)
    measured = method() if callable(method) else None
    rate = getattr(measured, "goodput", None)
    return float(rate) / 1e6 if isinstance(rate, (int, float)) else None


def figures(result: Result, cp: Checkpoint) -> dict[str, float]:
    """Every figure of one checkpoint of one run (those it has)."""
    pcb = cp.per_connection()
    out: dict[str, float] = {"slab": pcb.total}
    if pcb.tcp_mem_charged is not None:
        out["tcp_mem"] = pcb.tcp_mem_charged
    for role in ("client", "server"):
        host = first_host(result, role)
        buf = cp.buffers.get(host or "")
        if buf is not None:
            out[f"rmem_{role}"] = buf.rmem_alloc.median
            out[f"wmem_{role}"] = buf.wmem_queued.median
    return out


def summarize(sweep: dict[str, Any], results: list[Result], points: list[int],
              failed: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    """The sweep document (``sweep.json``): the sweep, its points and, per point,
    checkpoint and figure, the spread over the point's complete runs."""
    values: dict[tuple[int, str, str], list[float]] = {}
    checkpoints: list[str] = []
    runs: dict[int, list[str]] = {}
    links: dict[int, str] = {}  # the link each point ran over (its first run's)
    for result, point in zip(results, points, strict=True):
        runs.setdefault(point, []).append(result.run_id)
        links.setdefault(point, link_summary(result))
        if result.status != "complete":
            continue
        for cp in result.measured():
            if cp.name not in checkpoints:
                checkpoints.append(cp.name)
            for key, value in figures(result, cp).items():
                values.setdefault((point, cp.name, key), []).append(float(value))
        rate = goodput(result)
        if rate is not None:
            if TRANSFER not in checkpoints:
                checkpoints.append(TRANSFER)
            values.setdefault((point, TRANSFER, "goodput"), []).append(rate)
    shown = [key for key, _, _ in FIGURES
             if any(k == key and any(v) for (_, _, k), v in values.items())]
    rows = [{"point": p, "checkpoint": c, "figure": k, **spread(v)}
            for (p, c, k), v in sorted(values.items(), key=lambda kv: (
                kv[0][0], checkpoints.index(kv[0][1]), [f for f, _, _ in FIGURES].index(kv[0][2])))
            if k in shown]
    first = results[0] if results else None
    return {
        "schema": "tcplab.sweep/1",
        "sweep": sweep,
        "scenario": first.scenario.name if first else None,
        "profile": first.profile.name if first else None,
        "backend": first.metadata.backend if first else None,
        "kernel": first.metadata.kernel.release if first else None,
        "connections": first.scenario.connections if first else None,
        "bytes": first.scenario.bytes if first else None,
        "checkpoints": checkpoints,
        "figures": shown,
        "runs": {sweep["labels"][p]: ids for p, ids in sorted(runs.items())},
        "links": {sweep["labels"][p]: text for p, text in sorted(links.items())},
        "failed": {sweep["labels"][p]: why for p, why in (failed or [])},
        "rows": rows,
        "goodput_recorded": "goodput" in shown,
    }


def cell(row: dict[str, Any] | None) -> str:
    """median (min..max, CV) of one figure at one point."""
    if row is None:
        return "–"
    med = row["median"]
    text = f"{med:,.0f}" if abs(med) >= 100 or med == int(med) else f"{med:,.2f}"
    if row["n"] > 1:
        cv = "–" if row["cv"] is None else f"{row['cv']:.1%}"
        text += f" ({row['min']:,.0f}..{row['max']:,.0f}, CV {cv})"
    return text


def lookup(doc: dict[str, Any]) -> dict[tuple[int, str, str], dict[str, Any]]:
    return {(r["point"], r["checkpoint"], r["figure"]): r for r in doc["rows"]}


def figures_at(doc: dict[str, Any], checkpoint: str) -> list[str]:
    """The figures recorded at a checkpoint (goodput only at the transfer), in order."""
    there = {r["figure"] for r in doc["rows"] if r["checkpoint"] == checkpoint}
    return [f for f in doc["figures"] if f in there]


def link_lines(doc: dict[str, Any]) -> list[str]:
    """The link of the sweep's runs: one line when every point ran over the same link,
    else one line per point (a link sweep, or ``--link`` beside a sysctl sweep); nothing
    when every run had a perfect link (or the document predates links)."""
    links = doc.get("links") or {}
    if not links or set(links.values()) == {"none"}:
        return []
    if len(set(links.values())) == 1:
        return [f"link: {next(iter(links.values()))}"]
    key = doc["sweep"]["key"]
    return ["link at each point:"] + [
        f"  {key}={label}: {'none (a perfect link)' if text == 'none' else text}"
        for label, text in links.items()]


def render(doc: dict[str, Any]) -> str:
    """The sweep as terminal text: one table per checkpoint, a row per point."""
    sw = doc["sweep"]
    rows = lookup(doc)
    lines = [f"Sweep of {sw['key']} ({sw['kind']}) · {doc['scenario']} · profile "
             f"{doc['profile']} · backend {doc['backend']} · kernel {doc['kernel']} · "
             f"N={doc['connections']:,} · BYTES={doc['bytes']:,}",
             *link_lines(doc),
             "each cell: median over the point's runs (min..max, coefficient of variation)"]
    for cp in doc["checkpoints"]:
        shown = figures_at(doc, cp)
        table = []
        for p, label in enumerate(sw["labels"]):
            runs = len(doc["runs"].get(label, []))
            table.append([label, runs] + [cell(rows.get((p, cp, f))) for f in shown])
        lines += ["", f"at {cp}",
                  tabulate(table, [sw["key"], "runs"] + [LABELS[f] for f in shown],
                           tablefmt="simple", disable_numparse=True)]
    unstable = [r for r in doc["rows"] if r["n"] > 1 and r["cv"] is not None
                and r["cv"] > CV_WARN]
    if unstable:
        lines.append(f"! coefficient of variation above {CV_WARN:.0%} for {len(unstable)} "
                     "figure(s): read the ranges before the medians")
    if not doc["goodput_recorded"]:
        lines.append("goodput: not recorded by these runs (no transfer timing in the results)")
    for label, why in doc["failed"].items():
        lines.append(f"! {sw['key']}={label}: a run failed: {why}")
    return "\n".join(lines)
