#!/usr/bin/env python3
"""Cost of the allocation ledger: the same run with and without --ledger, and the ledger's
cross-check against slabinfo at each checkpoint.

    sudo .venv/bin/python bench/ledger_overhead.py [N] [SCENARIO ...]
(default N=10000, scenarios idle c2s timewait; each runs once with --ledger, idle also
without). Prints ramp rate, snapshot time, bpftrace attach and dump time, the whole run's
wall time, and ledger vs slabinfo per checkpoint. Needs root and bpftrace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(scenario: str, n: int, ledger: bool, results: Path) -> tuple[dict, float]:
    args = [sys.executable, "-m", "orchestrator.cli", "run", "--scenario", scenario, "-n",
            str(n), "--backend", "netns", "--results", str(results)]
    if ledger:
        args.append("--ledger")
    env = dict(os.environ, TCPLAB_LOCK_WAIT=os.environ.get("TCPLAB_LOCK_WAIT", "3600"))
    start = time.monotonic()
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.monotonic() - start
    (run_dir,) = [d for d in results.iterdir() if d.is_dir()]
    return json.loads((run_dir / "result.json").read_text()), wall


def report(label: str, result: dict) -> None:
    cps = [c for c in result["checkpoints"] if c["name"] != "baseline"]
    collect = [c["collect_seconds"] for c in cps]
    line = (f"{label:<22} ramp {result['ramp']['rate']:>7,.0f} conn/s · snapshot "
            f"{sum(collect) / len(collect):.2f} s · run {result['finished'] - result['started']:.1f} s")
    led = [c["ledger"] for c in cps if c.get("ledger")]
    if led:
        line += (f" · attach {led[0]['start_seconds']:.1f} s · dump "
                 f"{sum(x['dump_seconds'] for x in led) / len(led):.2f} s")
    print(line)
    for c in cps:
        if c.get("ledger"):
            x = c["ledger"]["crosscheck"]
            print(f"    {c['name']:<12} ledger {x['ledger_per_connection']:>8,.1f} vs slabinfo "
                  f"{x['slabinfo_per_connection']:>8,.1f} B/conn ({x['difference_pct']:+.2f}%)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    scenarios = sys.argv[2:] or ["idle", "c2s", "timewait"]
    for scenario in scenarios:
        for ledger in ((False, True) if scenario == scenarios[0] else (True,)):
            with tempfile.TemporaryDirectory() as tmp:
                result, _wall = run(scenario, n, ledger, Path(tmp))
            report(f"{scenario} N={n:,}{' --ledger' if ledger else ''}", result)


if __name__ == "__main__":
    main()
