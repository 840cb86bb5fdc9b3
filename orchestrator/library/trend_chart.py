"""The trend chart of one scenario: total bytes per connection, run after run.

One panel per checkpoint; x is the order of the scenario's runs in time (as asv orders
commits: runs minutes apart and runs weeks apart stay readable), labelled with their
date; one line per setup (profile, backend, kernel, N...). A step (trends.py) is ringed
in red. Inline SVG through the report's ``to_svg`` (no external reference).
"""

from __future__ import annotations

from typing import Any

from ..report.charts import _STYLE, INK, MUTED, SPARE, _style_axes, plt, to_svg
from .trends import ScenarioTrend

SERIES_COLOURS = ["#3b6fb6", "#e08a3c", "#4a9d6b", "#c9504f", "#8470b8", "#4fb3c8",
                  "#b9a94c", "#d17fb5", *SPARE]
STEP_COLOUR = "#d0342c"
MAX_TICKS = 12


def colour(i: int) -> str:
    return SERIES_COLOURS[i % len(SERIES_COLOURS)]


def trend_svg(trend: ScenarioTrend) -> str | None:
    cps = trend.checkpoints
    if not cps:
        return None
    runs = sorted({(e.started or 0, e.run_id, e.path) for s in trend.series for e in s.entries})
    x_of = {path: i for i, (_, _, path) in enumerate(runs)}
    steps = {(st.setup, st.checkpoint, st.path) for st in trend.steps}
    ncols = min(len(cps), 2)
    nrows = (len(cps) + ncols - 1) // ncols
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(11, 2.9 * nrows + 0.4), squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= len(cps):
                ax.set_visible(False)
                continue
            cp = cps[k]
            _style_axes(ax)
            for i, s in enumerate(trend.series):
                pts = s.values(cp)
                if not pts:
                    continue
                xs = [x_of[e.path] for e, _ in pts]
                ys = [v for _, v in pts]
                ax.plot(xs, ys, color=colour(i), linewidth=1.6, marker="o", markersize=4,
                        label=series_name(trend, s.name) if k == 0 else None)
                for (e, v), x in zip(pts, xs, strict=True):
                    if (s.name, cp, e.path) in steps:
                        ax.plot([x], [v], marker="o", markersize=11, markerfacecolor="none",
                                markeredgecolor=STEP_COLOUR, markeredgewidth=1.8,
                                label="step" if k == 0 and not ax.get_legend_handles_labels()[1].count("step") else None)
            ax.set_title(cp, loc="left")
            low, high = ax.get_ylim()  # not from 0: a step of a few % must show
            pad = max((high - low) * 0.15, 40.0)
            ax.set_ylim(low - pad, high + pad)
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:,.0f}"))
            every = max(1, (len(runs) + MAX_TICKS - 1) // MAX_TICKS)
            ticks = list(range(0, len(runs), every))
            ax.set_xticks(ticks, [_stamp(runs[t][0]) for t in ticks], rotation=35, ha="right",
                          fontsize=7.5)
            ax.set_xlim(-0.6, len(runs) - 0.4)
            ax.tick_params(axis="x", labelcolor=MUTED)
            if k % ncols == 0:
                ax.set_ylabel("bytes per connection", color=INK)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 1.0),
                   fontsize=8)
        fig.tight_layout()
        return to_svg(fig, f"trend-{_safe(trend.scenario)}",
                      f"{trend.scenario}: bytes per connection by checkpoint, run after run")


def series_name(trend: ScenarioTrend, name: str) -> str:
    """The setup without the scenario (the page's title says it)."""
    return name.removeprefix(f"{trend.scenario} · ")


def _stamp(ts: float) -> str:
    import time

    return time.strftime("%m-%d %H:%M", time.gmtime(ts)) if ts else "?"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def legend_rows(trend: ScenarioTrend) -> list[dict[str, Any]]:
    return [{"name": series_name(trend, s.name), "colour": colour(i), "runs": len(s.entries)}
            for i, s in enumerate(trend.series)]
