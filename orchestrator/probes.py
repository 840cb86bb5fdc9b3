"""Snapshots of kernel memory: what is read at each checkpoint, and from where.

Global counters (slabinfo, meminfo) come from the measured kernel; socket counters
(sockstat, ``ss``) from each lab host, since they are per network namespace. Raw
text is saved gzip-compressed beside the result, so any figure can be re-derived.
"""

from __future__ import annotations

import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import parsers
from .backends.base import LabHost
from .runner import Runner

SS_ALL = ["ss", "-t", "-a", "-n", "-m", "-i", "-H"]  # -a: TIME-WAIT and SYN-RECV too
RAW_SS_MAX = 20_000  # above this many sockets per host, keep the sock_diag summary only
SOCKDIAG = Path(__file__).resolve().parent.parent / "scenarios" / "sockdiag.py"


def sockdiag_argv(with_mem: bool = True) -> list[str]:
    """Run scenarios/sockdiag.py on a host without copying it there (python3 -c)."""
    argv = ["python3", "-c", SOCKDIAG.read_text()]
    return argv if with_mem else argv + ["--no-mem"]


def host_summary(host: LabHost, with_mem: bool = True) -> parsers.SsSummary:
    """Every TCP socket of a host summarised through netlink sock_diag (bounded memory)."""
    data = json.loads(host.runner.run(sockdiag_argv(with_mem), timeout=120).stdout)
    return parsers.SsSummary(data["states"], data["sums"], data["medians"],
                             data.get("skmem_sockets", {}))


@dataclass
class HostSnapshot:
    sockstat: dict[str, dict[str, int]]
    ss: parsers.SsSummary
    memory: dict[str, Any] | None = None  # cgroup accounting, where the backend has it

    def to_dict(self) -> dict[str, Any]:
        return {"sockstat": self.sockstat, "ss": self.ss.to_dict(), "memory": self.memory}


@dataclass
class Snapshot:
    name: str
    time: float
    slab: dict[str, parsers.SlabLine]
    meminfo: dict[str, int]
    hosts: dict[str, HostSnapshot] = field(default_factory=dict)
    seconds: float = 0.0  # how long collecting took


def read_text(runner: Runner | None, path: str) -> str:
    if runner is None:
        return Path(path).read_text()
    return runner.run(["cat", path], timeout=30).stdout


def read_slab_aliases(root: Path = Path("/sys/kernel/slab")) -> dict[str, list[str]]:
    links: dict[str, str | None] = {}
    try:
        entries = list(os.scandir(root))
    except OSError:
        return {}
    for entry in entries:
        links[entry.name] = os.readlink(entry.path) if entry.is_symlink() else None
    return parsers.slab_alias_groups(links)


def quick_summary(host: LabHost) -> parsers.SsSummary:
    """State counts and queue sums only: cheap enough to poll while waiting."""
    return host_summary(host, with_mem=False)


SETTLE_CACHES = ("TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "tw_sock_TCP",
                 "tw_sock_TCPv6", "request_sock_TCP", "skbuff_head_cache", "skbuff_small_head")


def settle(connections: int, kernel: Runner | None, timeout: float = 3.0,
           interval: float = 0.1) -> float:
    """Wait until the socket caches stop moving; returns the seconds waited.

    Sockets, inodes and files are freed through RCU after close, a grace period later:
    a snapshot taken the moment the states are reached would still count them.
    """
    start = time.monotonic()
    tolerance = max(2, connections // 500)

    def counts() -> dict[str, int]:
        slab = parsers.parse_slabinfo(read_text(kernel, "/proc/slabinfo"))
        return {c: slab[c].active_objs for c in SETTLE_CACHES if c in slab}

    before = counts()
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        now = counts()
        if all(abs(now.get(c, 0) - before.get(c, 0)) <= tolerance for c in set(now) | set(before)):
            break
        before = now
    return time.monotonic() - start


def wait_released(baseline: dict[str, parsers.SlabLine], kernel: Runner | None,
                  timeout: float = 60.0) -> bool:
    """After teardown, wait until the run's sockets are really freed.

    Deleting a network namespace closes its sockets asynchronously (a kernel workqueue):
    300,000 sockets take seconds. A next run starting earlier would count them at its
    baseline and see them vanish during its ramp.
    """
    watched = ("TCP", "TCPv6", "tw_sock_TCP", "tw_sock_TCPv6", "sock_inode_cache")
    limit = {c: baseline[c].active_objs + max(64, baseline[c].active_objs // 100)
             for c in watched if c in baseline}
    deadline = time.monotonic() + timeout
    while True:
        slab = parsers.parse_slabinfo(read_text(kernel, "/proc/slabinfo"))
        if all(slab[c].active_objs <= v for c, v in limit.items() if c in slab):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def take(name: str, hosts: dict[str, LabHost], raw_dir: Path, kernel: Runner | None,
         memory_of: Any = None) -> Snapshot:
    """Collect one checkpoint's snapshot and save the raw text under raw_dir/name."""
    start = time.monotonic()
    out = raw_dir / name
    out.mkdir(parents=True, exist_ok=False)
    slab_text = read_text(kernel, "/proc/slabinfo")
    mem_text = read_text(kernel, "/proc/meminfo")
    snap = Snapshot(name, time.time(), parsers.parse_slabinfo(slab_text),
                    parsers.parse_meminfo(mem_text))
    def collect(host: LabHost) -> tuple[str, HostSnapshot]:
        sockstat_text = host.runner.run(["cat", "/proc/net/sockstat"]).stdout
        summary = host_summary(host)
        if sum(summary.states.values()) <= RAW_SS_MAX:  # raw per-socket text, kept for study
            with gzip.open(out / f"{host.name}-ss.txt.gz", "wt", compresslevel=3) as fh:
                for line in host.runner.stream(SS_ALL):
                    fh.write(line if line.endswith("\n") else line + "\n")
        (out / f"{host.name}-sockstat.txt").write_text(sockstat_text)
        memory = memory_of(host) if memory_of else None
        return host.name, HostSnapshot(parsers.parse_sockstat(sockstat_text), summary, memory)

    # Hosts in parallel: each dump is its own process on its own host.
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for name, host_snap in pool.map(collect, hosts.values()):
            snap.hosts[name] = host_snap
    with gzip.open(out / "slabinfo.txt.gz", "wt") as fh:
        fh.write(slab_text)
    (out / "meminfo.txt").write_text(mem_text)
    snap.seconds = time.monotonic() - start
    return snap


class Sampler:
    """Samples cheap counters about every ``interval`` s through a whole run.

    meminfo ``Slab`` (machine-wide) and each host's sockstat TCP line, read from
    ``/proc/<pid>/net/sockstat`` of a process inside the host's network namespace, so a
    sample costs a few small file reads and no process spawn (well under 1% of a core).
    """

    def __init__(self, sockstat_paths: dict[str, Path], interval: float = 0.1) -> None:
        import threading

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

    def start(self) -> "Sampler":
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
