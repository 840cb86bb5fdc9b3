#!/usr/bin/env python3
"""Soak: the timewait scenario back to back on both backends, checking for leaks.

    sudo .venv/bin/python bench/soak.py [MINUTES] [N] [BACKENDS]
        # defaults: 30 minutes, N=10,000, "netns docker"

After every run: the result is complete, no namespace, container or network of tcplab
is left, and the run directory is removed (results go to a tmpfs directory so the soak
itself does not grow filesystem caches). At the end: Slab (meminfo) and the machine's
open file count (/proc/sys/fs/file-nr) against their values at the start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.backends.common import short_id  # noqa: E402


def slab_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def open_files() -> int:
    return int(Path("/proc/sys/fs/file-nr").read_text().split()[0])


def leftovers() -> list[str]:
    found = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True).stdout.split() if n.startswith("tcplab-")]
    try:
        import docker

        client = docker.from_env(timeout=10)
        found += [c.name for c in client.containers.list(all=True, filters={"label": "tcplab.run"})]
        found += [n.name for n in client.networks.list(filters={"label": "tcplab.run"})]
        client.close()
    except Exception:
        pass
    return found


def settle_slab(seconds: float = 20.0) -> int:
    """Slab after dropping reclaimable caches the soak's own file churn made."""
    Path("/proc/sys/vm/drop_caches").write_text("2\n")
    time.sleep(seconds)
    return slab_kb()


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    n = sys.argv[2] if len(sys.argv) > 2 else "10000"
    backends = (sys.argv[3] if len(sys.argv) > 3 else "netns docker").split()
    results = Path("/dev/shm/tcplab-soak")
    results.mkdir(exist_ok=True)
    slab0, files0 = settle_slab(), open_files()
    deadline = time.monotonic() + minutes * 60
    runs: dict[str, list[float]] = {b: [] for b in backends}
    failures = []
    i = 0
    while time.monotonic() < deadline:
        backend = backends[i % len(backends)]
        i += 1
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "run", "--scenario", "timewait", "-n", n,
             "--backend", backend, "--results", str(results)],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TCPLAB_LOCK_WAIT": "600"})
        took = time.monotonic() - start
        dirs = list(results.iterdir())
        status = json.loads((dirs[0] / "result.json").read_text())["status"] if dirs else "none"
        if proc.returncode != 0 or status != "complete":
            failures.append(f"run {i} ({backend}): exit {proc.returncode}, {status}: "
                            f"{proc.stderr.strip().splitlines()[-1:] }")
        # Only this run's own names: another command's run may be alive at this moment.
        mine = {f"tcplab-{short_id(d.name)}" for d in dirs}
        left = [name for name in leftovers() if any(name.startswith(m) for m in mine)]
        if left:
            failures.append(f"run {i} ({backend}): left behind {left}")
        for d in dirs:
            shutil.rmtree(d)
        runs[backend].append(took)
        print(f"run {i:3d} {backend:<6} {status:<10} {took:5.1f} s  Slab {slab_kb():,} kB  "
              f"files {open_files():,}", flush=True)
    slab1, files1 = settle_slab(), open_files()
    others = leftovers()  # anything of tcplab at all, now that the soak is over
    shutil.rmtree(results, ignore_errors=True)
    print()
    for backend, times in runs.items():
        print(f"{backend}: {len(times)} runs, {sum(times) / max(len(times), 1):.1f} s each")
    print(f"Slab: {slab0:,} kB -> {slab1:,} kB ({(slab1 - slab0) / slab0:+.2%}), after drop_caches=2")
    print(f"open files: {files0:,} -> {files1:,}")
    print(f"tcplab namespaces/containers/networks left at the end: {len(others)} {others}")
    print(f"failures: {len(failures)}")
    for f in failures:
        print("  " + f)


if __name__ == "__main__":
    main()
