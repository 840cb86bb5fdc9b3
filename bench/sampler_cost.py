#!/usr/bin/env python3
"""CPU cost of the timeline sampler: one sample reads /proc/meminfo and two sockstat files.

    .venv/bin/python bench/sampler_cost.py [SAMPLES]
Prints microseconds of CPU per sample and the share of one core at the 10 Hz the run uses.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestrator.measure.timeline import Sampler  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    sampler = Sampler({"server": Path("/proc/self/net/sockstat"),
                       "client": Path("/proc/self/net/sockstat")})
    start = time.process_time()
    for _ in range(count):
        sampler.sample()
    cpu = (time.process_time() - start) / count
    print(f"{cpu * 1e6:.0f} µs CPU per sample; at {1 / sampler.interval:.0f} Hz: "
          f"{cpu / sampler.interval:.2%} of one core")


if __name__ == "__main__":
    main()
