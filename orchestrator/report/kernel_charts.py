"""Trend charts of a kernel sweep (``KERNELS="5.10 6.1 ... host"``), drawn from the
comparison dict of ``kernels.compare`` alone, kernels in version order on the x axis:

- trend: per checkpoint, bytes per connection (both ends) in all and by slab cache;
  the article's 3.10 figures, where it measured the same state, as a separate hollow
  point left of a divider, labelled "published, not measured here";
- sides: per checkpoint, each side's own kernel (server, client) where the run measured
  it on its own (VMs);
- objsize: object sizes of the caches a connection lives in; a hollow marker where that
  kernel's SLUB merged the cache into another line;
- release: how long after the read began each kernel's receive memory fell back, with
  its sampling interval as the error bar, and the receiver's rmem_alloc while unread.
"""

from __future__ import annotations

from typing import Any

from .charts import (
    INK,
    MUTED,
    FuncFormatter,
    MaxNLocator,
    _bytes,
    _style_axes,
    cache_colour,
    style,
    subplots,
    to_svg,
)

MAX_CACHES = 6
PUBLISHED = "#9aa3ad"
SIDE_STYLE = {"server": ("#3b6fb6", "-"), "client": ("#e08a3c", "--")}


def tick(kernel: dict[str, Any]) -> str:
    """'6.1' over '6.1.0-57': the label and the short release."""
    release = (kernel.get("release") or "").split("-cloud")[0].split("+")[0]
    return f"{kernel['label']}\n{release}" if release and release != kernel["label"] else \
        kernel["label"]


def _panels(n: int, height: float) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(11, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _x_axis(ax: Any, kernels: list[dict[str, Any]], offset: int, published: bool) -> None:
    crowded = len(kernels) > 4  # a narrow panel: the label alone, the release in the table
    labels = ((["3.10*"] if crowded else ["3.10\n(published)"]) if published else []) + [
        k["label"] if crowded else tick(k) for k in kernels]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    if published:
        ax.axvline(offset - 0.5, color=MUTED, linestyle=":", linewidth=1)


def _headroom(ax: Any) -> None:
    """From 0 to 15 % above the highest point, markers and labels included."""
    top = max((max(line.get_ydata(), default=0) for line in ax.get_lines()), default=1)
    ax.set_ylim(0, max(float(top), 1.0) * 1.18)


def caches_of(kernels: list[dict[str, Any]], name: str, limit: int = MAX_CACHES) -> list[str]:
    """The biggest caches of a checkpoint across the kernels, biggest first."""
    weight: dict[str, float] = {}
    for k in kernels:
        for cache, v in ((k["checkpoints"].get(name) or {}).get("by_cache") or {}).items():
            weight[cache] = max(weight.get(cache, 0.0), abs(v))
    return sorted(weight, key=lambda c: -weight[c])[:limit]


def trend(cmp: dict[str, Any]) -> str | None:
    kernels = [k for k in cmp["kernels"] if k.get("checkpoints")]
    names = cmp.get("checkpoints") or []
    if not kernels or not names:
        return None
    pub = (cmp.get("published") or {}).get("checkpoints") or {}
    with style():
        fig, axes = _panels(len(names), 3.4)
        for ax, name in zip(axes, names, strict=True):
            _style_axes(ax)
            off = 1 if name in pub else 0
            xs = [off + i for i in range(len(kernels))]
            series = [("total", INK, 2.2)] + [(c, cache_colour(c, i), 1.3)
                                               for i, c in enumerate(caches_of(kernels, name))]
            for key, colour, width in series:
                ys = [((k["checkpoints"].get(name) or {}).get("total") if key == "total" else
                       ((k["checkpoints"].get(name) or {}).get("by_cache") or {}).get(key))
                      for k in kernels]
                pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
                if not pts:
                    continue
                ax.plot(*zip(*pts, strict=True), color=colour, linewidth=width, marker="o",
                        markersize=3.5, label="total" if key == "total" else key)
                if name in pub:
                    p = pub[name]["total"] if key == "total" else pub[name]["by_cache"].get(key)
                    if p is not None:
                        ax.plot([0], [p], marker="D", markersize=5, markerfacecolor="white",
                                markeredgecolor=colour, linestyle="none")
            if name in pub:
                ax.annotate(f"{pub[name]['total']:,.0f}\npublished,\nnot measured here",
                            (0, pub[name]["total"]), textcoords="offset points", xytext=(0, 8),
                            ha="center", fontsize=6, color=PUBLISHED, va="bottom")
            last = (kernels[-1]["checkpoints"].get(name) or {}).get("total")
            if last is not None:
                ax.annotate(f"{last:,.0f}", (xs[-1], last), textcoords="offset points",
                            xytext=(0, 5), ha="center", fontsize=7, color=INK)
            _x_axis(ax, kernels, off, name in pub)
            ax.set_title(f"checkpoint {name}", loc="left")
            _headroom(ax)
            ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
            ax.yaxis.set_major_locator(MaxNLocator(5))
        axes[0].set_ylabel("bytes per connection (both ends)")
        handles: dict[str, Any] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lab, h)
        fig.tight_layout()
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=8, fontsize=7.5,
                   bbox_to_anchor=(0.5, 0.0), frameon=False)
        return to_svg(fig, "ks-trend", "Bytes per connection by cache across kernels, per "
                                       "checkpoint")


def sides(cmp: dict[str, Any]) -> str | None:
    kernels = [k for k in cmp["kernels"] if k.get("checkpoints")]
    names = [n for n in cmp.get("checkpoints") or [] if any(
        v is not None for k in kernels
        for v in ((k["checkpoints"].get(n) or {}).get("sides") or {}).values())]
    if not names:
        return None
    pub = (cmp.get("published") or {}).get("checkpoints") or {}
    with style():
        fig, axes = _panels(len(names), 3.0)
        for ax, name in zip(axes, names, strict=True):
            _style_axes(ax)
            off = 1 if name in pub else 0
            for side, (colour, dash) in SIDE_STYLE.items():
                pts = [(off + i, v) for i, k in enumerate(kernels)
                       if (v := ((k["checkpoints"].get(name) or {}).get("sides") or {})
                           .get(side)) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=colour, linestyle=dash,
                            marker="o", markersize=3.5, label=f"{side} (own kernel)")
                if name in pub:
                    ax.plot([0], [pub[name]["sides"][side]], marker="D", markersize=5,
                            markerfacecolor="white", markeredgecolor=colour, linestyle="none")
            _x_axis(ax, kernels, off, name in pub)
            ax.set_title(f"checkpoint {name}", loc="left")
            _headroom(ax)
            ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
        axes[0].set_ylabel("bytes per connection, one side")
        axes[-1].legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        return to_svg(fig, "ks-sides", "Each side's own kernel, bytes per connection")


def objsize(cmp: dict[str, Any]) -> str | None:
    from .kernels import KEY_CACHES

    kernels = cmp["kernels"]
    caches = [c for c in cmp.get("caches") or [] if c in KEY_CACHES]  # the table has the rest
    if not kernels or not caches:
        return None
    with style():
        fig, ax = subplots(figsize=(11, 3.8))
        _style_axes(ax)
        for i, cache in enumerate(caches):
            colour = cache_colour(cache, i)
            cells = [k["objsize"].get(cache) or {} for k in kernels]
            pts = [(x, c["size"]) for x, c in enumerate(cells) if c.get("size")]
            if not pts:
                continue
            ax.plot(*zip(*pts, strict=True), color=colour, linewidth=1.3, marker="o",
                    markersize=4, label=cache)
            merged = [(x, c["size"]) for x, c in enumerate(cells)
                      if c.get("size") and c.get("line") != cache]
            if merged:
                ax.plot(*zip(*merged, strict=True), linestyle="none", marker="o",
                        markersize=7, markerfacecolor="white", markeredgecolor=colour)
        _x_axis(ax, kernels, 0, False)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
        ax.set_ylabel("object size, bytes (log scale)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
        ax.text(0.0, -0.16, "hollow ring: that kernel's SLUB merged the cache into another "
                "line (the table names it)", transform=ax.transAxes, fontsize=7, color=MUTED,
                va="top")
        return to_svg(fig, "ks-objsize", "Object sizes of the socket caches per kernel")


def release(cmp: dict[str, Any]) -> str | None:
    rec = {r.get("run_id"): r for r in (cmp.get("recycling") or {}).get("kernels") or []}
    kernels = cmp["kernels"]
    if not any(k["run_id"] in rec for k in kernels):
        return None
    with style():
        fig, (top, bottom) = subplots(1, 2, figsize=(11, 3.2))
        for ax in (top, bottom):
            _style_axes(ax)
        for x, k in enumerate(kernels):
            row = rec.get(k["run_id"])
            if row and row.get("seconds") is not None:
                top.errorbar([x], [row["seconds"]], yerr=[[min(row["interval"], row["seconds"])],
                                                          [row["interval"]]],
                             fmt="o", color="#3b6fb6", capsize=4, markersize=5)
                top.annotate(f"{row['seconds']:.2f} s", (x, row["seconds"]),
                             textcoords="offset points", xytext=(6, 2), fontsize=7)
            if row and row.get("rmem_unread") is not None:
                bottom.bar([x], [row["rmem_unread"]], 0.55, color="#3b6fb6")
                bottom.text(x, row["rmem_unread"], f"{row['rmem_unread']:,.0f}", ha="center",
                            va="bottom", fontsize=7)
        for ax in (top, bottom):
            _x_axis(ax, kernels, 0, False)
        _headroom(top)
        bottom.set_ylim(bottom=0)
        bottom.margins(y=0.15)
        top.set_title("receive memory back after the read began", loc="left")
        top.set_ylabel("seconds (bar: one sample)")
        bottom.set_title("receiver median rmem_alloc while unread", loc="left")
        bottom.yaxis.set_major_formatter(FuncFormatter(_bytes))
        bottom.set_ylabel("bytes per socket")
        fig.tight_layout()
        return to_svg(fig, "ks-release", "Buffer release time per kernel")


def sweep_charts(cmp: dict[str, Any]) -> dict[str, str | None]:
    return {"trend": trend(cmp), "sides": sides(cmp), "objsize": objsize(cmp),
            "release": release(cmp)}
