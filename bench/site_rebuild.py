"""Time ``tcplab site`` on a library of 100 runs: first build, rebuild with nothing new,
rebuild after one new run, and a first build where no run has its report.html yet.

The library is made of copies of the real runs in tests/data/results (new run ids, one
hour apart, figures shifted a little so the trend pages have something to draw).
Usage: .venv/bin/python bench/site_rebuild.py [WORKDIR]   (prints a markdown table)
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.library.site import build_site  # noqa: E402
from orchestrator.report.html import write_report  # noqa: E402

DATA = REPO / "tests" / "data" / "results"
RUNS = 100


def make_library(results: Path, with_reports: bool) -> None:
    sources = sorted(DATA.glob("2*"))
    rng = random.Random(18)
    start = 1795600000.0
    for i in range(RUNS):
        src = sources[i % len(sources)]
        data = json.loads((src / "result.json").read_text())
        stamp = start + 3600 * i
        name = time.strftime("%Y%m%d-%H%M%S", time.gmtime(stamp)) + "-" + src.name.split("-", 2)[2]
        data.update(run_id=name, started=stamp, finished=stamp + 30)
        for cp in data["checkpoints"]:
            pcb = cp.get("per_connection_bytes")
            if pcb:
                pcb["total"] = pcb["total"] * (1 + rng.uniform(-0.004, 0.004))
        run = results / name
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(data))
        if with_reports:
            write_report(run, probe_defaults=False)


def timed(results: Path, out: Path) -> tuple[float, str]:
    t = time.monotonic()
    stats = build_site(results, out)
    return time.monotonic() - t, stats.summary()


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="site-bench-"))
    rows = []
    results, out = work / "results", work / "site"
    make_library(results, with_reports=True)
    rows.append(("first build, 100 runs with their report.html", *timed(results, out)))
    rows.append(("rebuild, nothing changed", *timed(results, out)))
    src = next(iter(sorted(results.iterdir())))
    new = results / "20271231-000000-c2s-default"
    new.mkdir()
    data = json.loads((src / "result.json").read_text())
    data.update(run_id=new.name, started=1830211200.0)
    (new / "result.json").write_text(json.dumps(data))
    write_report(new, probe_defaults=False)
    rows.append(("rebuild after one new run", *timed(results, out)))
    bare, bare_out = work / "bare", work / "bare-site"
    make_library(bare, with_reports=False)
    rows.append(("first build, 100 runs without report.html (rendered)", *timed(bare, bare_out)))
    print("| build | seconds | tcplab site says |")
    print("|---|---:|---|")
    for what, seconds, summary in rows:
        print(f"| {what} | {seconds:.1f} | {summary} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
