"""``tcplab run --sweep``: the checks of a sweep, each point's options, its directory and
its report. The runs themselves are ``tcplab run``'s (orchestrator/commands/run.py)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import sweep as sweeping
from ..errors import InputError
from ..results.model import Result
from ..sweep import WHAT, Sweep
from . import _shown

SWEEP_FILE, TEXT_FILE, HTML_FILE = "sweep.json", "sweep.txt", "sweep.html"


def check(args: argparse.Namespace, profiles: list[str | None],
          kernels: list[str | None]) -> Sweep:
    """The sweep of ``args``, refused (exit 2) where it cannot run as one series."""
    if len(profiles) > 1:
        raise InputError(f"{WHAT} runs one setup over one key's values; got {len(profiles)} "
                         "profiles (--profile/PROFILES): sweep each profile on its own")
    if len(kernels) > 1:
        raise InputError(f"{WHAT} runs one setup over one key's values; got {len(kernels)} "
                         "kernels (--kernels/KERNELS): sweep each kernel on its own")
    backend = "vm" if kernels[0] not in (None, "host") else args.backend
    return sweeping.parse(args.sweep, args.allow_host_sysctls, backend)


def point_options(sweep: Sweep, value: str, args: argparse.Namespace) -> dict[str, Any]:
    """RunOptions fields of one point: a sysctl over the profile, or a merged ``--link``."""
    if sweep.kind == "link":
        return {"link": sweeping.merged_link(getattr(args, "link", None), sweep.key, value)}
    return {"sysctl_overrides": sweeping.overrides(sweep, value)}


def new_sweep_dir(results: Path, plan: Any, sweep: Sweep) -> Path:
    """``results/sweep-<YYYYmmdd-HHMMSS>-<scenario>-<key>``, never an existing one."""
    from ..results.store import new_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return new_dir(results, f"sweep-{stamp}-{plan.scenario.name}-{sweep.key.rsplit('.', 1)[-1]}",
                   "sweeps")


def write(sweep_dir: Path, doc: dict[str, Any], run_dirs: list[Path]) -> dict[str, Path]:
    """sweep.json, sweep.txt and sweep.html into the sweep's directory (atomically)."""
    from ..report import sweep as report
    from ..report.html import write_text_atomic
    from ..report.sweep_charts import render_html
    from ..results.store import write_json_atomic

    links = {d.name: f"{d.relative_to(sweep_dir)}/report.html" if d.is_relative_to(sweep_dir)
             else str(d / "report.html") for d in run_dirs}
    paths = {"json": sweep_dir / SWEEP_FILE, "text": sweep_dir / TEXT_FILE,
             "html": sweep_dir / HTML_FILE}
    write_json_atomic(paths["json"], doc)
    write_text_atomic(paths["text"], report.render(doc) + "\n")
    write_text_atomic(paths["html"], render_html(doc, links))
    return paths


def finish(sweep: Sweep, sweep_dir: Path, results: list[Result], run_dirs: list[Path],
           points: list[int], failed: list[tuple[int, str]],
           out: Callable[[str], None]) -> dict[str, Any]:
    """Summarise the sweep, print it, write its files; the ``--json`` entry of the sweep."""
    from ..report import sweep as report

    doc = report.summarize(sweep.to_dict(), results, points, failed)
    paths = write(sweep_dir, doc, run_dirs)
    out("")
    out(report.render(doc))
    out(f"sweep: {_shown(sweep_dir)}")
    out(f"sweep report: {_shown(paths['html'])}")
    return {"dir": _shown(sweep_dir), **{k: _shown(v) for k, v in paths.items()},
            "key": sweep.key, "values": list(sweep.labels)}

