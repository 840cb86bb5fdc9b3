"""Comparison charts: setups side by side, drawn from the loaded results.

Three inline SVG charts for ``compare-*.html`` and the site's comparison pages, one
colour per setup (the letters A, B... of ``compare.compare``):

- memory: per checkpoint, each setup's bytes per connection as a bar stacked by slab
  cache, the setups side by side (median of the setup's runs, cache by cache);
- buffers: per side (server, client), median rmem_alloc and wmem_queued per socket by
  checkpoint, with each setup's ``tcp_rmem[0]``/``tcp_wmem[0]`` marked over its bars;
- timeline: every setup's timeline on one time axis (flent's overlay plots): TCP memory
  charged and sockets in use, checkpoints marked in the setup's colour.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from ..results.model import Result
from . import text as report_text
from .charts import (
    _STYLE,
    INK,
    MUTED,
    OTHER,
    FuncFormatter,
    MaxNLocator,
    _bytes,
    _style_axes,
    cache_colour,
    plt,
    to_svg,
)
from .compare import group_key

SETUP_COLOURS = ["#3b6fb6", "#e08a3c", "#4a9d6b", "#c9504f", "#8470b8", "#4fb3c8",
                 "#b9a94c", "#d17fb5"]
SIDES = ("server", "client")
MAX_CACHES = 6


def groups_of(results: list[Result]) -> list[tuple[str, list[Result]]]:
    """(letter, runs) per setup, in the order ``compare.compare`` labels them."""
    order: dict[str, list[Result]] = {}
    for r in results:
        order.setdefault(json.dumps(group_key(r), sort_keys=True), []).append(r)
    return [(chr(ord("A") + i) if i < 26 else f"G{i + 1}", runs)
            for i, runs in enumerate(order.values())]


def setup_colour(i: int) -> str:
    return SETUP_COLOURS[i % len(SETUP_COLOURS)]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- 1. memory per connection, stacked by cache, setups side by side -------------------------

def memory_bars(groups: list[tuple[str, list[Result]]]) -> str | None:
    cps: list[str] = []
    for _, runs in groups:
        for r in runs:
            cps += [c.name for c in r.measured() if c.name not in cps]
    if not cps:
        return None
    all_cps = [c for _, runs in groups for r in runs for c in r.measured()]
    caches = report_text.top_caches(all_cps, limit=MAX_CACHES)
    n = len(groups)
    width = min(0.8 / n, 0.3)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(11, 3.9))
        _style_axes(ax)
        seen: set[str] = set()
        peak = 1.0
        for g, (letter, runs) in enumerate(groups):
            for i, name in enumerate(cps):
                measured = [c for r in runs for c in r.measured() if c.name == name]
                if not measured:
                    continue
                x = i + (g - (n - 1) / 2) * width
                by = {c: _median([cp.per_connection().attributed().get(c, 0.0) for cp in measured])
                      for c in caches}
                total = _median([cp.per_connection().total for cp in measured])
                by["__other__"] = total - sum(by.values())
                up = 0.0
                for k, cache in enumerate([*caches, "__other__"]):
                    v = by[cache]
                    if v <= 0.5:
                        continue
                    colour = OTHER if cache == "__other__" else cache_colour(cache, k)
                    label = "other caches" if cache == "__other__" else cache
                    ax.bar(x, v, width * 0.9, bottom=up, color=colour, edgecolor="white",
                           linewidth=0.5, label=None if label in seen else label)
                    seen.add(label)
                    up += v
                peak = max(peak, up)
                ax.text(x, up, f"{letter}\n{total:,.0f}", ha="center", va="bottom", fontsize=7.5,
                        color=setup_colour(g), fontweight="bold")
        ax.set_xticks(range(len(cps)), cps)
        ax.tick_params(axis="x", labelcolor=INK)
        ax.set_xlim(-0.6, len(cps) - 0.4)
        ax.set_ylim(0, peak * 1.25)
        ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
        ax.set_ylabel("bytes per connection (both ends)")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return to_svg(fig, "cmp-mem", "Bytes per connection by slab cache, setups side by side")


# -- 2. socket buffers per side against each setup's limits ---------------------------------

def _side_host(result: Result, side: str) -> str | None:
    names = result.hosts_by_role().get(side) or []
    return names[0] if names else (side if side in result.metadata.hosts else None)


def buffer_bars(groups: list[tuple[str, list[Result]]]) -> str | None:
    cps: list[str] = []
    for _, runs in groups:
        for r in runs:
            cps += [c.name for c in r.measured() if c.buffers and c.name not in cps]
    if not cps:
        return None
    metrics = [("rmem_alloc", "tcp_rmem", "receive: rmem_alloc"),
               ("wmem_queued", "tcp_wmem", "send: wmem_queued")]
    n = len(groups)
    width = min(0.8 / n, 0.3)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(2, 2, figsize=(11, 5.6), squeeze=False, sharex=True)
        for row, (metric, sysctl, title) in enumerate(metrics):
            for col, side in enumerate(SIDES):
                ax = axes[row][col]
                _style_axes(ax)
                peak = 1.0
                for g, (letter, runs) in enumerate(groups):
                    colour = setup_colour(g)
                    limits = []
                    for i, name in enumerate(cps):
                        vals = []
                        for r in runs:
                            cp, host = r.checkpoint(name), _side_host(r, side)
                            if cp and host and host in cp.buffers:
                                vals.append(getattr(cp.buffers[host], metric).median)
                        if not vals:
                            continue
                        x = i + (g - (n - 1) / 2) * width
                        v = _median(vals)
                        ax.bar(x, v, width * 0.9, color=colour,
                               label=letter if i == 0 or not limits else None)
                        if v:
                            ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=6.5,
                                    color=INK)
                        peak = max(peak, v)
                        host = _side_host(runs[0], side)
                        lim = runs[0].sysctl_ints(host, f"net.ipv4.{sysctl}") if host else None
                        if lim:
                            ax.hlines(lim[0], x - width / 2, x + width / 2, colors=colour,
                                      linestyles="--", linewidth=1.4)
                            limits.append(lim[0])
                    peak = max([peak, *limits])
                ax.set_ylim(0, peak * 1.2)
                ax.set_title(f"{side} · {title}", loc="left")
                ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
                ax.yaxis.set_major_locator(MaxNLocator(5))
                if col == 0:
                    ax.set_ylabel("bytes per socket (median)")
        for ax in axes[1]:
            ax.set_xticks(range(len(cps)), cps)
            ax.tick_params(axis="x", labelcolor=INK)
        handles, labels = axes[0][0].get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        axes[0][1].legend(uniq.values(), [f"setup {k}" for k in uniq], loc="upper left",
                          bbox_to_anchor=(1.01, 1.0))
        fig.text(0.99, 0.005, "dashed: the setup's tcp_rmem[0] / tcp_wmem[0] on that side",
                 ha="right", fontsize=7.5, color=MUTED)
        fig.tight_layout()
        return to_svg(fig, "cmp-buf", "Socket buffers per side against each setup's limits")


# -- 3. timelines overlaid --------------------------------------------------------------------

def _inuse(result: Result) -> list[float]:
    cols = result.timeline.columns
    keys = [k for k in cols if k.endswith(".inuse")]
    if not keys:
        return []
    return [sum(cols[k][i] for k in keys if i < len(cols[k])) for i in range(len(cols["t"]))]


def _mem_mib(result: Result) -> list[float]:
    cols = result.timeline.columns
    key = next((k for k in cols if k.endswith(".mem")), None)
    page = result.metadata.page_size or 4096
    return [v * page / 2**20 for v in cols[key]] if key else []


def timeline_overlay(groups: list[tuple[str, list[Result]]]) -> str | None:
    firsts = [(letter, runs[0]) for letter, runs in groups
              if len(runs[0].timeline.columns.get("t") or []) >= 2]
    if not firsts:
        return None
    with plt.rc_context(_STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 4.8), sharex=True,
                                          gridspec_kw={"hspace": 0.14})
        for ax in (top, bottom):
            _style_axes(ax)
        for g, (letter, r) in enumerate(groups):
            if (letter, r[0]) not in firsts:
                continue
            res = r[0]
            t = res.timeline.columns["t"]
            colour = setup_colour(g)
            mem = _mem_mib(res)
            if mem:
                top.plot(t[:len(mem)], mem, color=colour, linewidth=1.6, label=f"setup {letter}")
            inuse = _inuse(res)
            if inuse:
                bottom.plot(t[:len(inuse)], inuse, color=colour, linewidth=1.6,
                            label=f"setup {letter}")
            for mark in res.timeline.marks:
                for ax in (top, bottom):
                    ax.axvline(mark["t"], color=colour, linestyle=(0, (2, 3)), linewidth=0.8,
                               alpha=0.8)
                top.text(mark["t"], 1.0, f" {letter}:{mark['name']}", transform=top.get_xaxis_transform(),
                         rotation=90, va="top", ha="left", fontsize=6.5, color=colour)
        top.set_ylabel("TCP mem (MiB)")
        bottom.set_ylabel("sockets in use (all hosts)")
        bottom.set_xlabel("seconds since each run started")
        top.set_ylim(bottom=0)
        bottom.set_ylim(bottom=0)
        bottom.yaxis.set_major_formatter(FuncFormatter(_bytes))
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return to_svg(fig, "cmp-tl", "Timelines of the setups overlaid on one time axis")


def comparison_charts(results: list[Result]) -> dict[str, str | None]:
    groups = groups_of(results)
    return {"memory": memory_bars(groups), "buffers": buffer_bars(groups),
            "timeline": timeline_overlay(groups),
            "colours": {letter: setup_colour(i) for i, (letter, _) in enumerate(groups)}}


def render_html(results: list[Result], links: dict[str, Any] | None = None) -> str:
    """The comparison page of ``results`` with its charts (``compare --format html``,
    ``PROFILES="a b"``, the site's comparison pages; ``links``: the site's navigation)."""
    from .compare import compare
    from .compare_render import render_html as render_page

    return render_page(compare(results), charts=comparison_charts(results), links=links)
