"""A run's timeline: cheap counters sampled through the whole run, and the merge of the
samples sides took of their own kernels (VMs, remote hosts) onto this machine's clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from . import parsers

SAMPLE_INTERVAL = 0.1  # seconds between timeline samples (local sampler and side sampling)


def merge_side_timelines(local: dict[str, Any], sides: dict[str, dict[str, Any]],
                         offsets: dict[str, float], kernels: dict[str, list[str]]
                         ) -> dict[str, Any]:
    """A run's timeline from the samples each side took of its own kernel.

    ``local`` is this machine's sampler (its start, marks and interval are kept);
    ``sides`` maps a host to its side's ``timeline`` reply. A side's clock may be off
    from ours (a VM's by seconds): its samples are shifted by ``offsets[host]``, our
    clock minus its own, estimated from every reply of the run (the smallest difference:
    off by the quickest reply's latency). The first host's sample times are the
    timeline's; every other host contributes, at each of them, its latest sample not
    after it. ``slab_kb`` is the sum over the measured kernels (``kernels``: label ->
    hosts; one host's Slab per kernel).
    """
    start = float(local.get("start") or 0.0)
    series: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    for host, reply in sides.items():
        cols = reply.get("columns") or {}
        shift = offsets.get(host, 0.0)
        times = [t + shift - start for t in cols.get("t", [])]
        if times:
            series[host] = (times, cols)
    if not series:
        return local
    base = next(iter(series.values()))[0]
    columns: dict[str, list[float]] = {"t": [round(t, 3) for t in base]}
    aligned: dict[str, dict[str, list[float]]] = {}
    for host, (times, cols) in series.items():
        at, picked = 0, []
        for t in base:
            while at + 1 < len(times) and times[at + 1] <= t:
                at += 1
            picked.append(at)
        aligned[host] = {k: [v[i] for i in picked] for k, v in cols.items()
                         if k != "t" and len(v) == len(times)}
        for key in ("inuse", "tw", "orphan", "mem"):
            columns[f"{host}.{key}"] = aligned[host].get(key, [0] * len(base))
    slab_hosts = [next((h for h in names if h in aligned), None) for names in kernels.values()]
    slab_hosts = [h for h in slab_hosts if h] or list(aligned)
    columns["slab_kb"] = [sum(aligned[h]["slab_kb"][i] for h in slab_hosts)
                          for i in range(len(base))]
    return {**local, "columns": columns, "source": "sides",
            "interval": float(next(iter(sides.values())).get("interval") or local["interval"])}


class Sampler:
    """Samples cheap counters about every ``interval`` s through a whole run.

    meminfo ``Slab`` (machine-wide) and each host's sockstat TCP line, read from
    ``/proc/<pid>/net/sockstat`` of a process inside the host's network namespace, so a
    sample costs a few small file reads and no process spawn (well under 1% of a core).
    """

    def __init__(self, sockstat_paths: dict[str, Path], interval: float = SAMPLE_INTERVAL) -> None:
        self.paths = sockstat_paths
        self.interval = interval
        self.t0 = time.time()
        self.columns: dict[str, list[float]] = {"t": [], "slab_kb": []}
        for host in sockstat_paths:
            for key in ("inuse", "tw", "orphan", "mem"):
                self.columns[f"{host}.{key}"] = []
        self.marks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def mark(self, name: str) -> None:
        self.marks.append({"t": round(time.time() - self.t0, 3), "name": name})

    def sample(self) -> None:
        try:
            slab = next(int(line.split()[1]) for line in open("/proc/meminfo")
                        if line.startswith("Slab:"))
            rows = {h: parsers.parse_sockstat(p.read_text()).get("TCP", {})
                    for h, p in self.paths.items()}
        except (OSError, StopIteration, parsers.ParseError):
            return  # a host went away (teardown): skip the sample
        self.columns["t"].append(round(time.time() - self.t0, 3))
        self.columns["slab_kb"].append(slab)
        for host, tcp in rows.items():
            for key in ("inuse", "tw", "orphan", "mem"):
                self.columns[f"{host}.{key}"].append(tcp.get(key, 0))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        return {"interval": self.interval, "start": self.t0, "columns": self.columns,
                "marks": self.marks}
