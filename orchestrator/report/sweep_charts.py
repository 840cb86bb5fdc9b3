"""The sweep report's charts and HTML page, drawn from the sweep document alone.

Each chart puts the swept value on the x axis (the points evenly spaced, labelled as the
user wrote them), one line per checkpoint through the medians of the point's runs, and
the spread of the repetitions as a bar from min to max around each median.
"""

from __future__ import annotations

from typing import Any

from .charts import (
    INK,
    FuncFormatter,
    MaxNLocator,
    _bytes,
    _style_axes,
    style,
    subplots,
    to_svg,
)
from .compare_charts import setup_colour
from .sweep import LABELS, cell, figures_at, link_lines, lookup

MEMORY = ("slab", "tcp_mem")
BUFFERS = ("rmem_client", "wmem_server", "rmem_server", "wmem_client")


def _panel(ax: Any, doc: dict[str, Any], figure: str) -> None:
    rows = lookup(doc)
    labels = doc["sweep"]["labels"]
    x = list(range(len(labels)))
    _style_axes(ax)
    for i, cp in enumerate(doc["checkpoints"]):
        got = [(p, rows[(p, cp, figure)]) for p in x if (p, cp, figure) in rows]
        if not got or not any(r["median"] for _, r in got):
            continue
        colour = setup_colour(i)
        xs = [p + (i - (len(doc["checkpoints"]) - 1) / 2) * 0.04 for p, _ in got]
        med = [r["median"] for _, r in got]
        ax.plot(xs, med, color=colour, marker="o", markersize=4.5, linewidth=1.6, label=cp)
        low = [r["median"] - r["min"] for _, r in got]
        high = [r["max"] - r["median"] for _, r in got]
        if any(low) or any(high):
            ax.errorbar(xs, med, yerr=[low, high], fmt="none", ecolor=colour, elinewidth=1.1,
                        capsize=3)
    ax.set_xticks(x, labels)
    ax.tick_params(axis="x", labelcolor=INK)
    ax.set_xlim(-0.4, len(labels) - 0.6)
    ax.set_xlabel(doc["sweep"]["key"])
    ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_title(LABELS[figure], loc="left")
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, 0), top * 1.08 if top > 0 else top)


def chart(doc: dict[str, Any], figures: tuple[str, ...], prefix: str, title: str) -> str | None:
    """One panel per figure the sweep recorded, side by side."""
    shown = [f for f in figures if f in doc["figures"]]
    if not shown:
        return None
    with style():
        fig, axes = subplots(1, len(shown), figsize=(5.4 * len(shown) + 1.6, 3.5),
                             squeeze=False)
        for ax, figure in zip(axes[0], shown, strict=True):
            _panel(ax, doc, figure)
        legend: dict[str, Any] = {}  # every checkpoint drawn in any panel, once
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        ordered = [c for c in doc["checkpoints"] if c in legend]
        if ordered:
            axes[0][-1].legend([legend[c] for c in ordered], ordered, title="checkpoint",
                               loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return to_svg(fig, prefix, title)


def sweep_charts(doc: dict[str, Any]) -> dict[str, str | None]:
    key = doc["sweep"]["key"]
    return {
        "memory": chart(doc, MEMORY, "sw-mem", f"Memory per connection against {key}"),
        "buffers": chart(doc, BUFFERS, "sw-buf", f"Socket buffers per socket against {key}"),
        "goodput": chart(doc, ("goodput",), "sw-gp", f"Goodput against {key}"),
    }


def tables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per checkpoint: a row per point, a cell per figure (median, min..max, CV)."""
    rows = lookup(doc)
    out = []
    for cp in doc["checkpoints"]:
        shown = figures_at(doc, cp)
        out.append({"checkpoint": cp, "figures": shown, "rows": [
            {"label": label, "runs": len(doc["runs"].get(label, [])),
             "cells": [cell(rows.get((p, cp, f))) for f in shown]}
            for p, label in enumerate(doc["sweep"]["labels"])]})
    return out


def render_html(doc: dict[str, Any], run_links: dict[str, str]) -> str:
    """The sweep page (``sweep.html``): charts, tables, links to every run's report."""
    from .html import environment

    return environment().get_template("sweep.html.j2").render(
        doc=doc, charts=sweep_charts(doc), tables=tables(doc), labels=LABELS,
        run_links=run_links, link_lines=link_lines(doc))
