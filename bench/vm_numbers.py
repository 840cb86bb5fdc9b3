#!/usr/bin/env python3
"""Summarise the runs of bench/vm_kernels.sh: per run, the time it took once it held the
machine-wide lock (started..finished in result.json), the VM build and boot timings, the
ramp rate, and bytes per connection (total and per side).

    python3 bench/vm_numbers.py bench/results/vm-kernels-<stamp>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: Path) -> None:
    for phase in ("first", "cached"):
        for result_file in sorted((folder / phase).glob("*/result.json")):
            r = json.loads(result_file.read_text())
            meta = r["metadata"]
            label = meta.get("kernel_label") or "host"
            est = [c for c in r["checkpoints"] if c.get("connections")][-1]
            pcb = est["per_connection_bytes"]
            sides = {k: v["per_connection_bytes"]["total"]
                     for k, v in (est.get("per_kernel") or {}).items()}
            vm = meta.get("vm") or {}
            print(f"{phase:6} {label:5} {meta['kernel']['release']:24} "
                  f"run {r['finished'] - r['started']:6.1f} s  timings {vm.get('timings', {})} "
                  f"boot {vm.get('boot_seconds', {})}  ramp {r['ramp']['rate']:,.0f}/s  "
                  f"total {pcb['total']:,.0f} B  objects {pcb['objects_total']:,.0f} B  "
                  f"sides {sides}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
