"""Repetitions of one setup: median, spread and coefficient of variation per figure.

Figures: per connection, socket slab, objects and TCP mem charged; per socket, the
receiver's and sender's buffers (median ``rmem_alloc``/``wmem_queued`` of a host of each
role, as the sweep report takes them); and the goodput of the largest transfer. A buffer
figure that is 0 in every run is left out.

The coefficient of variation (standard deviation over the mean) only describes figures
of one sign: over values that reach or cross zero (a TCP mem charge of -113..0) the mean
is near zero and the ratio means nothing, so the table shows the range alone there.
"""

from __future__ import annotations

import statistics
from typing import Any

from tabulate import tabulate

from .results.model import Result

CV_WARN = 0.02  # warn above 2%

FIGURES = (("total", "socket slab B/conn"), ("objects_total", "objects B/conn"),
           ("tcp_mem_charged", "TCP mem charged B/conn"))


def spread(values: list[float]) -> dict[str, Any]:
    """n, median, min, max, mean and ``cv`` (None where the values reach or cross 0)."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    one_sign = min(values) > 0 or max(values) < 0
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "mean": mean, "cv": sd / abs(mean) if one_sign else None}


def _unstable(row: dict[str, Any]) -> bool:
    return row["cv"] is not None and row["cv"] > CV_WARN and row["n"] > 1


def _cv_text(row: dict[str, Any]) -> str:
    if row["cv"] is None:
        return "– (0 in range)" if row["n"] > 1 else "–"
    return f"{row['cv']:.2%}" + (" !" if _unstable(row) else "")


#: the sweep report's per-socket figures (report/sweep.py ``figures``) also shown here
BUFFER_FIGURES = ("rmem_client", "wmem_server", "rmem_server", "wmem_client")


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """One row per (profile, checkpoint, figure) over complete results."""
    # report.sweep imports this module (spread): its figures are read at call time
    from .report.sweep import LABELS, TRANSFER, figures, goodput

    groups: dict[tuple[str, str, str], list[float]] = {}

    def add(result: Result, checkpoint: str, label: str, value: float | None) -> None:
        if value is not None:
            groups.setdefault((result.profile.name, checkpoint, label), []).append(float(value))

    for result in results:
        if result.status != "complete":
            continue
        for cp in result.measured():
            pcb = cp.per_connection()
            for key, label in FIGURES:
                add(result, cp.name, label, getattr(pcb, key))
            per_socket = figures(result, cp)
            for key in BUFFER_FIGURES:
                add(result, cp.name, LABELS[key], per_socket.get(key))
        add(result, TRANSFER, LABELS["goodput"], goodput(result))
    always = {label for _, label in FIGURES}  # the rest only where some run has them
    return [{"profile": p, "checkpoint": c, "figure": f, **spread(v)}
            for (p, c, f), v in groups.items() if f in always or any(v)]


def _num(value: float) -> str:
    """Whole numbers for bytes; two decimals for small figures (goodput in MB/s)."""
    return f"{value:,.2f}" if abs(value) < 100 and value != int(value) else f"{value:,.0f}"


def render(rows: list[dict[str, Any]]) -> str:
    table = [[r["profile"], r["checkpoint"], r["figure"], r["n"], _num(r["median"]),
              f"{_num(r['min'])}..{_num(r['max'])}", _cv_text(r)] for r in rows]
    text = tabulate(table, ["profile", "checkpoint", "figure", "runs", "median", "range", "CV"],
                    tablefmt="simple", disable_numparse=True,
                    colalign=("left", "left", "left", "right", "right", "right", "right"))
    if any(r["cv"] is None and r["n"] > 1 for r in rows):
        text += ("\n– (0 in range): the values reach or cross zero, where a coefficient of "
                 "variation means nothing; read the range")
    unstable = [r for r in rows if _unstable(r)]
    if unstable:
        text += (f"\n! coefficient of variation above {CV_WARN:.0%} for {len(unstable)} figure(s): "
                 "the machine was not quiet, or N is too small for the slab granularity")
    return text
