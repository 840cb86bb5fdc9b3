"""Charts for the HTML report: matplotlib ``Figure`` objects, returned as inline SVG strings.

Figures are made with ``matplotlib.figure.Figure`` and never through pyplot: importing
tcplab leaves matplotlib's backend and pyplot's figure list alone (a notebook keeps its
inline plotting), and nothing here needs a GUI or the Agg backend to write SVG.

Every chart is drawn from a saved result alone. The SVG carries no external reference:
the XML prologue, DOCTYPE and RDF metadata matplotlib writes are dropped, text stays
text (``svg.fonttype = none``) in a system font stack, and element ids get a per-chart
prefix so several charts can live in one HTML page.
"""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..results.model import Result
from . import text as report_text

FONT_STACK = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', "
              "'DejaVu Sans', Arial, sans-serif")
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e4e7eb"
DRIFT = "#b8bec6"
CONNTRACK = "#e0b84d"
OTHER = "#cfd4da"

#: Fixed colours so a cache looks the same in every chart and every report.
CACHE_COLOURS = {
    "TCP": "#3b6fb6",
    "sock_inode_cache": "#e08a3c",
    "filp": "#4a9d6b",
    "dentry": "#c9504f",
    "eventpoll_epi": "#8470b8",
    "tcp_bind_bucket": "#8470b8",
    "tw_sock_TCP": "#9a7556",
    "skbuff_small_head": "#d17fb5",
    "skbuff_head_cache": "#b9a94c",
    "pool_workqueue": "#4fb3c8",
    "skbuff_fclone_cache": "#4fb3c8",
    "request_sock_TCP": "#6c8f3b",
    "lsm_inode_cache": "#9fb4d6",
    "lsm_file_cache": "#a9d3b6",
}
SPARE = ["#5c7d99", "#c47f6b", "#7fa37a", "#a88fc2", "#d4a85a", "#6fa8a0", "#b06f8e",
         "#8d9b4a"]
METRIC_COLOURS = {"rmem_alloc": "#3b6fb6", "wmem_queued": "#e08a3c", "fwd_alloc": "#b8c7dc"}
SERIES = {"mem": "#3b6fb6", "slab": "#c9504f"}
HOST_COLOURS = ["#4a9d6b", "#8470b8", "#e08a3c", "#4fb3c8"]

_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "tcplab",  # deterministic ids: the same result gives the same file
    "font.family": "DejaVu Sans",  # metrics for layout; the SVG text uses FONT_STACK
    "font.size": 9,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}


def cache_colour(cache: str, index: int = 0) -> str:
    return CACHE_COLOURS.get(cache, SPARE[index % len(SPARE)])


def cache_label(cache: str, aliases: list[str] | None = None) -> str:
    """The slabinfo name, with the socket object it stands for when SLUB merged them."""
    aliases = aliases or []
    if any(a.startswith("tcp_bind") for a in aliases):
        return f"{cache} (≈ bind buckets)"
    hint = sorted((a for a in aliases if re.match(r"(tcp_|skbuff|sock|tw_|request_sock)", a)),
                  key=len)
    return f"{cache} (≈ {hint[0]})" if hint else cache


def _bytes(value: float, _pos: Any = None) -> str:
    return f"{value:,.0f}"


def subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` without pyplot: a ``Figure`` and its axes, nothing global touched
    (no backend switched, no figure registered). Draw inside ``style()``."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def style() -> Any:
    """The charts' rc settings, for drawing and saving a figure."""
    return matplotlib.rc_context(_STYLE)


# -- SVG plumbing --------------------------------------------------------------------------

def to_svg(fig: Any, prefix: str, title: str = "") -> str:
    """Serialise a figure as an inline <svg> element with no external reference."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.08,
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return clean_svg(buf.getvalue(), prefix, title)


def clean_svg(svg: str, prefix: str, title: str = "") -> str:
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = svg.replace('xmlns:xlink="http://www.w3.org/1999/xlink" ', "")
    svg = svg.replace("xlink:href=", "href=")  # SVG 2 / HTML: plain href
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if ids:
        pattern = re.compile(r'(\bid="|href="#|url\(#)(' + "|".join(map(re.escape, ids)) + r')(?=["\)])')
        svg = pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    svg = re.sub(r"font-family: [^;\"]+", "font-family: " + FONT_STACK.replace("'", "&#39;"), svg)
    # scale with the page: keep the viewBox, drop the fixed size
    head = svg[:svg.index(">") + 1]
    width = re.search(r'width="([\d.]+)pt"', head)
    new_head = re.sub(r'\s(width|height)="[\d.]+pt"', "", head)
    max_w = f"max-width:{float(width.group(1)) * 4 / 3:.0f}px;" if width else ""
    new_head = new_head.replace(
        "<svg ", f'<svg class="chart-svg" role="img" style="width:100%;height:auto;{max_w}" ', 1)
    svg = new_head + svg[len(head):]
    if title:
        svg = svg.replace(">", f"><title>{_escape(title)}</title>", 1)
    return svg.strip()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _style_axes(ax: Any) -> None:
    ax.grid(axis="y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(length=0)
    ax.spines["left"].set_visible(False)


# -- 1. memory per connection, stacked by cache -------------------------------------------

def memory_bars(result: Result) -> str | None:
    """Stacked attributed caches per checkpoint; drift (and conntrack) in a panel apart."""
    cps = result.measured()
    if not cps:
        return None
    caches = report_text.top_caches(cps)
    aliases = result.metadata.slab_aliases
    names = [cp.name for cp in cps]
    with style():
        fig, (ax, side) = subplots(1, 2, figsize=(11, 3.9),
                                   gridspec_kw={"width_ratios": [4.2, 1], "wspace": 0.12})
        for a in (ax, side):
            _style_axes(a)
        x = list(range(len(cps)))
        width = 0.58
        up = [0.0] * len(cps)
        down = [0.0] * len(cps)
        series = [(c, cache_label(c, aliases.get(c)), cache_colour(c, i))
                  for i, c in enumerate(caches)]
        series.append(("__other__", "other attributed caches", OTHER))
        values: dict[str, list[float]] = {}
        for cp in cps:
            pcb = cp.per_connection()
            by = pcb.attributed()
            shown = {c: by.get(c, 0.0) for c in caches}
            shown["__other__"] = pcb.total - sum(shown.values())
            for key, val in shown.items():
                values.setdefault(key, []).append(val)
        for key, label, colour in series:
            vals = values.get(key, [])
            if not any(abs(v) >= 0.5 for v in vals):
                continue
            bottoms = [up[i] if v >= 0 else down[i] for i, v in enumerate(vals)]
            ax.bar(x, vals, width, bottom=bottoms, color=colour, label=label,
                   edgecolor="white", linewidth=0.6)
            for i, v in enumerate(vals):
                if v >= 0:
                    up[i] += v
                else:
                    down[i] += v
        top = max(up + [1.0])
        for i, cp in enumerate(cps):
            total = cp.per_connection().total
            ax.text(i, up[i] + top * 0.015, f"{total:,.0f} B", ha="center", va="bottom",
                    fontsize=9.5, fontweight="bold", color=INK)
        ax.set_xticks(x, names)
        ax.tick_params(axis="x", labelsize=9.5, labelcolor=INK)
        ax.set_xlim(-0.6, len(cps) - 0.4)
        ax.set_ylim(min(min(down), 0) * 1.15, top * 1.12)
        ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
        ax.set_ylabel("bytes per connection (both ends)")
        ax.set_title("attributed to sockets", loc="left", fontsize=9, color=MUTED,
                     fontweight="normal")
        ax.axhline(0, color="#9aa5b1", linewidth=0.8)
        # drift and conntrack apart: not socket memory, on their own scale
        drift = [cp.per_connection().drift or 0.0 for cp in cps]
        conn = [cp.per_connection().conntrack or 0.0 for cp in cps]
        has_conn = any(conn)
        bw = 0.38 if has_conn else 0.55
        dpos = [i - bw / 2 if has_conn else i for i in x]
        side.bar(dpos, drift, bw, color="white", edgecolor=DRIFT, hatch="////", linewidth=0.9,
                 label="drift (not attributed)")
        if has_conn:
            side.bar([i + bw / 2 for i in x], conn, bw, color=CONNTRACK,
                     label="nf_conntrack (not socket memory)")
        span = max([abs(v) for v in drift + conn] + [10.0])
        for i, v in zip(dpos, drift, strict=False):
            side.text(i, v + (span * 0.04 if v >= 0 else -span * 0.04), f"{v:,.0f}",
                      ha="center", va="bottom" if v >= 0 else "top", fontsize=7.5, color=MUTED)
        side.axhline(0, color="#9aa5b1", linewidth=0.8)
        side.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        side.set_ylim(min(min(drift + conn), 0) - span * 0.25, max(max(drift + conn), 0) + span * 0.3)
        side.yaxis.set_major_formatter(FuncFormatter(_bytes))
        side.yaxis.set_major_locator(MaxNLocator(4))
        side.set_title("drift, shown apart", loc="left", fontsize=9, color=MUTED,
                       fontweight="normal")
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = side.get_legend_handles_labels()
        side.legend(handles[::-1] + h2, labels[::-1] + l2, loc="upper left",
                    bbox_to_anchor=(1.06, 1.02))
        return to_svg(fig, "mem", "Kernel memory per connection by slab cache, per checkpoint")


# -- 2. socket buffers per checkpoint -------------------------------------------------------

def buffer_bars(result: Result) -> str | None:
    cps = [cp for cp in result.measured() if cp.buffers]
    if not cps:
        return None
    hosts = list(cps[0].buffers)
    metrics = [("rmem_alloc", "rmem_alloc (receive)"), ("wmem_queued", "wmem_queued (send)"),
               ("fwd_alloc", "fwd_alloc (forward allocation)")]
    with style():
        fig, axes = subplots(1, len(hosts), figsize=(11, 3.4), sharey=True, squeeze=False)
        peak = max([getattr(cp.buffers[h], m).median for cp in cps for h in hosts
                    for m, _ in metrics] + [1.0])
        limits = {}
        for h in hosts:
            r = result.sysctl_ints(h, "net.ipv4.tcp_rmem")
            w = result.sysctl_ints(h, "net.ipv4.tcp_wmem")
            limits[h] = (r[0] if r else None, w[0] if w else None)
        lim_peak = max([v for pair in limits.values() for v in pair if v] + [0])
        ymax = max(peak, lim_peak) * 1.18
        for ax, host in zip(axes[0], hosts, strict=False):
            _style_axes(ax)
            x = list(range(len(cps)))
            bw = 0.24
            for j, (metric, label) in enumerate(metrics):
                vals = [getattr(cp.buffers[host], metric).median for cp in cps]
                pos = [i + (j - 1) * bw for i in x]
                ax.bar(pos, vals, bw * 0.92, color=METRIC_COLOURS[metric], label=label)
                for p, v in zip(pos, vals, strict=False):
                    if v:
                        ax.text(p, v + ymax * 0.01, f"{v:,.0f}", ha="center", va="bottom",
                                fontsize=7.5, color=INK)
            rmin, wmin = limits[host]
            if rmin:
                ax.axhline(rmin, color=METRIC_COLOURS["rmem_alloc"], linestyle="--", linewidth=1)
                ax.text(len(cps) - 0.45, rmin, f" tcp_rmem[0] {rmin:,}", va="bottom", ha="right",
                        fontsize=7.5, color=METRIC_COLOURS["rmem_alloc"])
            if wmin:
                ax.axhline(wmin, color=METRIC_COLOURS["wmem_queued"], linestyle=":", linewidth=1.2)
                ax.text(-0.45, wmin, f"tcp_wmem[0] {wmin:,} ", va="bottom", ha="left",
                        fontsize=7.5, color=METRIC_COLOURS["wmem_queued"])
            role = result.role_of(host)
            ax.set_title(host if not role or role == host else f"{host} ({role})", loc="left")
            ax.set_xticks(x, [cp.name for cp in cps])
            ax.tick_params(axis="x", labelcolor=INK)
            ax.set_xlim(-0.5, len(cps) - 0.5)
            ax.set_ylim(0, ymax)
            ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
            ax.yaxis.set_major_locator(MaxNLocator(5))
        axes[0][0].set_ylabel("bytes per socket (median)")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return to_svg(fig, "buf", "Socket buffer memory per socket, median, per checkpoint")


# -- 3. timeline -----------------------------------------------------------------------------

def timeline_chart(result: Result) -> str | None:
    tl = result.timeline
    cols = tl.columns
    t = cols.get("t") or []
    if len(t) < 2:
        return None
    page = result.metadata.page_size or 4096
    mib = 1024 * 1024
    known = list(result.metadata.hosts)
    hosts = sorted({k.split(".", 1)[0] for k in cols if "." in k},
                   key=lambda h: known.index(h) if h in known else 99)
    mem_col = next((cols[f"{h}.mem"] for h in hosts if f"{h}.mem" in cols), None)
    slab = cols.get("slab_kb") or []
    with style():
        fig, (top, bottom) = subplots(2, 1, figsize=(11, 4.6), sharex=True,
                                      gridspec_kw={"height_ratios": [1.15, 1], "hspace": 0.12})
        for ax in (top, bottom):
            _style_axes(ax)
        if mem_col:
            top.plot(t, [v * page / mib for v in mem_col], color=SERIES["mem"], linewidth=1.8,
                     label="TCP mem (sockstat, machine-wide)")
        if slab:
            top.plot(t, [(v - slab[0]) / 1024 for v in slab], color=SERIES["slab"], linewidth=1.8,
                     label="Slab growth since start (meminfo)")
        top.set_ylabel("MiB")
        if top.get_legend_handles_labels()[0]:  # a VM run's timeline may have no series here
            top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        for i, host in enumerate(hosts):
            colour = HOST_COLOURS[i % len(HOST_COLOURS)]
            bottom.plot(t, cols.get(f"{host}.inuse", []), color=colour,
                        linewidth=3.6 if i == 0 else 1.6, alpha=0.55 if i == 0 else 1.0,
                        label=f"{host} sockets in use")
            tw = cols.get(f"{host}.tw", [])
            if any(tw):
                bottom.plot(t, tw, color=colour, linewidth=1.6, linestyle="--",
                            label=f"{host} TIME-WAIT")
        orphan = next((cols[f"{h}.orphan"] for h in hosts if any(cols.get(f"{h}.orphan", []))),
                      None)
        if orphan:
            bottom.plot(t, orphan, color=MUTED, linewidth=1.2, linestyle=":",
                        label="orphans (machine-wide)")
        bottom.set_ylabel("sockets")
        bottom.set_xlabel("seconds since the run started")
        bottom.yaxis.set_major_formatter(FuncFormatter(_bytes))
        bottom.yaxis.set_major_locator(MaxNLocator(5, integer=True))
        if bottom.get_legend_handles_labels()[0]:  # a VM run's timeline may have no series here
            bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        top.set_ylim(bottom=min(0, top.get_ylim()[0]))
        bottom.set_ylim(bottom=0)
        y_top = top.get_ylim()[1]
        top.set_ylim(top=y_top * 1.18)
        x_end = max(t[-1], max((m["t"] for m in tl.marks), default=0)) * 1.02
        last_x, level = -1.0, 0
        for mark in tl.marks:
            for ax in (top, bottom):
                ax.axvline(mark["t"], color="#9aa5b1", linestyle=(0, (3, 3)), linewidth=0.9)
            # stagger labels of checkpoints closer than ~12 % of the axis
            level = (level + 1) % 2 if mark["t"] - last_x < x_end * 0.12 else 0
            last_x = mark["t"]
            top.text(mark["t"], y_top * (1.17 - 0.075 * level), f" {mark['name']}", ha="left",
                     va="top", fontsize=8, color=INK)
        bottom.set_xlim(0, x_end)
        return to_svg(fig, "tl", "Timeline: TCP memory, slab and socket counts, with checkpoints")


def all_charts(result: Result) -> dict[str, str | None]:
    return {"memory": memory_bars(result), "buffers": buffer_bars(result),
            "timeline": timeline_chart(result)}
