#!/usr/bin/env python3
"""Where a kernel sweep's time went: per run (one kernel), when it started and finished
(result.json, this machine's clock), its length, the VMs' boot and up times, the ramp,
and whether its VMs were reused or booted twice; then the span of all runs.

    python3 bench/sweep_times.py bench/results/idle-sweep-<stamp>

The folder is a sweep's --results directory (make lab ... ARGS="--results DIR").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def main(folder: Path) -> int:
    rows = []
    for result_file in sorted(folder.glob("*/result.json")):
        r = json.loads(result_file.read_text())
        meta = r["metadata"]
        vm = meta.get("vm") or {}
        timings = vm.get("timings") or {}
        ramp = (r.get("ramp") or {}).get("rate")
        rows.append((r["started"], r["finished"], meta.get("kernel_label") or "host",
                     r["scenario"]["name"], r["status"], timings, ramp))
    if not rows:
        print(f"no result.json under {folder}")
        return 1
    for started, finished, label, scenario, status, timings, ramp in sorted(rows):
        extra = " ".join(f"{k} {v}" for k, v in timings.items() if not k.startswith("kernel "))
        print(f"{label:5} {scenario:10} {clock(started)}-{clock(finished)} "
              f"{finished - started:6.1f} s  {status:10} ramp "
              f"{(f'{ramp:,.0f}/s' if ramp else '-'):>8}  {extra}")
    first, last = min(r[0] for r in rows), max(r[1] for r in rows)
    print(f"runs from {clock(first)} to {clock(last)}: {last - first:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
