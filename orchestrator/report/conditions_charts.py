"""The pressure chart: the sockstat TCP ``mem`` timeline against tcp_mem's three marks.

Drawn when the run's conditions findings include tcp_mem pressure (conditions.pressure):
the machine-wide (one kernel) or the VM's own TCP memory in pages over the run, with
the low, pressure and high marks as horizontal lines and the checkpoints marked.
"""

from __future__ import annotations

from ..results.model import Result
from . import conditions
from .charts import INK, MUTED, SERIES, FuncFormatter, _bytes, _style_axes, style, subplots, to_svg

MARK_STYLES = (("low", "#4a9d6b", ":"), ("pressure", "#e08a3c", "--"), ("high", "#c9504f", "-"))


def pressure_chart(result: Result) -> str | None:
    marks = conditions.tcp_mem(result)
    t, mem = conditions.mem_series(result)
    if not marks or len(t) < 2 or conditions.pressure(result) is None:
        return None
    with style():
        fig, ax = subplots(1, 1, figsize=(11, 3.6))
        _style_axes(ax)
        ax.plot(t, mem, color=SERIES["mem"], linewidth=1.8, label="sockstat TCP mem (pages)")
        for (name, colour, line), value in zip(MARK_STYLES, marks, strict=True):
            ax.axhline(value, color=colour, linestyle=line, linewidth=1.2,
                       label=f"tcp_mem {name} {value:,}")
        top = max(max(mem), marks[2]) * 1.15
        for mark in result.timeline.marks:
            ax.axvline(mark["t"], color="#9aa5b1", linestyle=(0, (3, 3)), linewidth=0.9)
            ax.text(mark["t"], top * 0.99, f" {mark['name']}", ha="left", va="top", fontsize=8,
                    color=INK)
        ax.set_ylim(0, top)
        ax.set_xlim(0, max(t[-1], max((m["t"] for m in result.timeline.marks), default=0)) * 1.02)
        ax.set_ylabel("pages")
        ax.set_xlabel("seconds since the run started", color=MUTED)
        ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return to_svg(fig, "press", "TCP memory over the run against tcp_mem low, pressure, high")
