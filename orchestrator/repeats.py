"""Repetitions of one setup: median, spread and coefficient of variation per figure."""

from __future__ import annotations

import statistics
from typing import Any

from tabulate import tabulate

from .results.model import Result

CV_WARN = 0.02  # warn above 2%

FIGURES = (("total", "socket slab B/conn"), ("objects_total", "objects B/conn"),
           ("tcp_mem_charged", "TCP mem charged B/conn"))


def spread(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "mean": mean, "cv": sd / mean if mean else 0.0}


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """One row per (profile, checkpoint, figure) over complete results."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for result in results:
        if result.status != "complete":
            continue
        for cp in result.measured():
            pcb = cp.per_connection()
            for key, label in FIGURES:
                value = getattr(pcb, key)
                if value is not None:
                    groups.setdefault((result.profile.name, cp.name, label),
                                      []).append(float(value))
    return [{"profile": p, "checkpoint": c, "figure": f, **spread(v)}
            for (p, c, f), v in groups.items()]


def render(rows: list[dict[str, Any]]) -> str:
    table = [[r["profile"], r["checkpoint"], r["figure"], r["n"], f"{r['median']:,.0f}",
              f"{r['min']:,.0f}..{r['max']:,.0f}", f"{r['cv']:.2%}"
              + (" !" if r["cv"] > CV_WARN and r["n"] > 1 else "")] for r in rows]
    text = tabulate(table, ["profile", "checkpoint", "figure", "runs", "median", "range", "CV"],
                    tablefmt="simple")
    unstable = [r for r in rows if r["cv"] > CV_WARN and r["n"] > 1]
    if unstable:
        text += (f"\n! coefficient of variation above {CV_WARN:.0%} for {len(unstable)} figure(s): "
                 "the machine was not quiet, or N is too small for the slab granularity")
    return text
