"""Snapshots of kernel memory: what is read at each checkpoint, and from where.

Global counters (slabinfo, meminfo) come from the measured kernel; socket counters
(sockstat, ``ss``) from each lab host, since they are per network namespace. Raw
text is saved gzip-compressed beside the result, so any figure can be re-derived.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import resources
from ..backends.base import LabHost
from ..runner import Runner
from . import parsers

SS_ALL = ["ss", "-t", "-a", "-n", "-m", "-i", "-H"]  # -a: TIME-WAIT and SYN-RECV too
RAW_SS_MAX = 20_000  # above this many sockets per host, keep the sock_diag summary only
SOCKDIAG = resources.sockdiag_script()


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
    # Several measured kernels (VMs, remote machines): each one's own counters, by label.
    # Empty for one kernel; then slab/meminfo above are that kernel's, else their sum.
    kernels: dict[str, KernelSnapshot] = field(default_factory=dict)
    aliases: dict[str, list[str]] | None = None  # SLUB merges of the measured kernel(s)


@dataclass
class KernelSnapshot:
    """One kernel's global counters at a checkpoint, and the lab hosts it runs."""

    label: str
    hosts: list[str]
    slab: dict[str, parsers.SlabLine]
    meminfo: dict[str, int]
    release: str | None = None
    aliases: dict[str, list[str]] = field(default_factory=dict)


class KernelSet:
    """The measured kernels of a run whose hosts do not run on this machine's kernel.

    ``kernels``: {label: (runner on that kernel, [lab host names])}, as returned by
    ``Backend.kernels()``. A backend's ``kernel_runner()`` may return one: reading a /proc
    file through :func:`read_text` then gives the sum over every kernel (slabinfo and
    meminfo), and :func:`take` keeps each kernel's counters beside the sum.
    """

    def __init__(self, kernels: dict[str, tuple[Runner | None, list[str]]],
                 releases: dict[str, str] | None = None) -> None:
        self.kernels = kernels
        self.releases = dict(releases or {})
        self._aliases: dict[str, dict[str, list[str]]] = {}

    def read_each(self, path: str) -> dict[str, str]:
        if not self.kernels:
            return {}
        with ThreadPoolExecutor(max_workers=len(self.kernels)) as pool:
            texts = pool.map(lambda item: read_text(item[1][0], path), self.kernels.items())
            return dict(zip(self.kernels, texts, strict=False))

    def aliases(self, label: str) -> dict[str, list[str]]:
        """SLUB merge groups of one kernel (read once: they do not change while it runs)."""
        if label not in self._aliases:
            runner = self.kernels[label][0]
            if runner is None:
                self._aliases[label] = read_slab_aliases()
            else:
                out = runner.run(["python3", "-c", _SLAB_LINKS], timeout=60).stdout
                self._aliases[label] = parsers.slab_alias_groups(json.loads(out))
        return self._aliases[label]


#: Prints /sys/kernel/slab as {entry: symlink target or None} (JSON), on a lab host.
_SLAB_LINKS = (
    "import json, os\n"
    "d = '/sys/kernel/slab'\n"
    "print(json.dumps({e.name: (os.readlink(e.path) if e.is_symlink() else None)"
    " for e in os.scandir(d)}))\n"
)


def merge_slab(parts: list[dict[str, parsers.SlabLine]]) -> dict[str, parsers.SlabLine]:
    """The sum of several kernels' slabinfo, per cache name (geometry of the first seen).

    Slab pages are summed as memory, so caches of different geometry still add up.
    """
    out: dict[str, parsers.SlabLine] = {}
    for part in parts:
        for name, line in part.items():
            have = out.get(name)
            if have is None:
                out[name] = line
                continue
            page_bytes = have.pagesperslab * parsers.PAGE_SIZE
            slabs = round((have.bytes() + line.bytes()) / page_bytes) if page_bytes else 0
            out[name] = parsers.SlabLine(
                name, have.active_objs + line.active_objs, have.num_objs + line.num_objs,
                have.objsize, have.objperslab, have.pagesperslab,
                have.active_slabs + line.active_slabs, slabs)
    return out


def slabinfo_text(lines: dict[str, parsers.SlabLine]) -> str:
    """slabinfo 2.1 text of parsed lines (what parse_slabinfo reads back)."""
    out = ["slabinfo - version: 2.1",
           "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
           " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
           " <num_slabs> <sharedavail>"]
    for line in lines.values():
        out.append(f"{line.name} {line.active_objs} {line.num_objs} {line.objsize} "
                   f"{line.objperslab} {line.pagesperslab} : tunables 0 0 0 : slabdata "
                   f"{line.active_slabs} {line.num_slabs} 0")
    return "\n".join(out) + "\n"


def meminfo_text(parts: list[dict[str, int]]) -> str:
    """meminfo text of the sum of several parsed meminfo dicts (kB values)."""
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return "".join(f"{k}: {v // 1024} kB\n" for k, v in total.items()) or "MemTotal: 0 kB\n"


def read_text(runner: Runner | None, path: str) -> str:
    if isinstance(runner, KernelSet):  # several kernels: their sum
        texts = runner.read_each(path)
        if path == "/proc/slabinfo":
            if not texts:  # no kernel left (VMs gone with the run): an empty reading
                return slabinfo_text({"tcplab_none": parsers.SlabLine("tcplab_none", 0, 0, 8,
                                                                      1, 1, 0, 0)})
            return slabinfo_text(merge_slab([parsers.parse_slabinfo(t) for t in texts.values()]))
        if path == "/proc/meminfo":
            return meminfo_text([parsers.parse_meminfo(t) for t in texts.values()])
        raise ValueError(f"{path}: no sum over kernels")
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


#: Caches flushed before every slab reading: those a connection lives in.
SHRINK_CACHES = SETTLE_CACHES + ("tcp_bind_bucket", "tcp_bind2_bucket", "eventpoll_epi",
                                 "ep_head", "lsm_inode_cache", "lsm_file_cache",
                                 "skbuff_fclone_cache")
_SHRINK_SCRIPT = ("for c in " + " ".join(SHRINK_CACHES) + "; do f=/sys/kernel/slab/$c/shrink; "
                  "[ -w $f ] && echo 1 > $f; done; true")


def shrink_caches(kernel: Runner | None) -> None:
    """Flush the socket caches' per-CPU slabs (and 6.18's per-CPU sheaves) back to the node.

    /proc/slabinfo counts every object of a per-CPU slab or sheaf as in use, free or not:
    at rest here TCP showed 53 "active" objects, 3 after a flush; tw_sock_TCP 48, then 0.
    How many such phantom objects there are changes between two readings, which put a
    noise of 100-200 objects into per-connection counts. Writing 1 to
    /sys/kernel/slab/<cache>/shrink (kmem_cache_shrink: ~2.5 ms per cache) empties them;
    it frees only empty slabs and changes no setting. Skipped where not writable.
    """
    if isinstance(kernel, KernelSet):
        for runner, _ in kernel.kernels.values():
            shrink_caches(runner)
        return
    if kernel is not None:
        kernel.run(["sh", "-c", _SHRINK_SCRIPT], check=False, timeout=30)
        return
    for cache in SHRINK_CACHES:
        try:
            Path(f"/sys/kernel/slab/{cache}/shrink").write_text("1")
        except OSError:
            pass


def active_objects(kernel: Runner | None, caches: tuple[str, ...]) -> dict[str, int]:
    """Objects in use per cache, of those of ``caches`` the kernel has."""
    slab = parsers.parse_slabinfo(read_text(kernel, "/proc/slabinfo"))
    return {c: slab[c].active_objs for c in caches if c in slab}


def settle(connections: int, kernel: Runner | None, timeout: float = 3.0,
           interval: float = 0.1) -> float:
    """Wait until the socket caches stop moving; returns the seconds waited.

    Sockets, inodes and files are freed through RCU after close, a grace period later:
    a snapshot taken the moment the states are reached would still count them.
    """
    start = time.monotonic()
    shrink_caches(kernel)
    tolerance = max(2, connections // 500)
    before = active_objects(kernel, SETTLE_CACHES)
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        now = active_objects(kernel, SETTLE_CACHES)
        if all(abs(now.get(c, 0) - before.get(c, 0)) <= tolerance for c in set(now) | set(before)):
            break
        before = now
    return time.monotonic() - start


#: Caches a dying network namespace frees in bulk (its sockets, asynchronously).
RELEASE_CACHES = ("TCP", "TCPv6", "tw_sock_TCP", "tw_sock_TCPv6", "request_sock_TCP",
                  "sock_inode_cache")


def quiesce(kernel: Runner | None, timeout: float = 60.0, window: float = 0.5,
            tolerance: int = 16) -> float:
    """Before a baseline: wait while the socket caches are shrinking; returns seconds waited.

    A namespace or container deleted shortly before (an earlier run killed and wiped,
    another program's) closes its sockets from a kernel workqueue, seconds later. A
    baseline taken meanwhile counts sockets that vanish during the run: negative growth.
    """
    start = time.monotonic()
    before = active_objects(kernel, RELEASE_CACHES)
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = active_objects(kernel, RELEASE_CACHES)
        if all(before.get(c, 0) - v <= tolerance for c, v in now.items()):
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
    # SLUB keeps a few slabs per CPU cached and counts their objects as in use: allow for
    # them, or the wait runs to its timeout for nothing.
    cpus = os.cpu_count() or 1
    limit = {c: baseline[c].active_objs + max(64, baseline[c].active_objs // 100,
                                              8 * cpus * baseline[c].objperslab)
             for c in RELEASE_CACHES if c in baseline}
    deadline = time.monotonic() + timeout
    while True:
        now = active_objects(kernel, RELEASE_CACHES)
        if all(now[c] <= v for c, v in limit.items() if c in now):
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
    shrink_caches(kernel)  # exact object counts: see shrink_caches
    if isinstance(kernel, KernelSet):
        snap, slab_text, mem_text = _take_kernels(name, kernel, out)
    else:
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


def _take_kernels(name: str, kernels: KernelSet, out: Path) -> tuple[Snapshot, str, str]:
    """slabinfo and meminfo of every kernel (raw text saved as <label>-slabinfo.txt.gz and
    <label>-meminfo.txt); the snapshot's own slab and meminfo are their sum. With one
    kernel, nothing but its SLUB aliases is added to what a local snapshot holds."""
    slabs = kernels.read_each("/proc/slabinfo")
    mems = kernels.read_each("/proc/meminfo")
    per: dict[str, KernelSnapshot] = {}
    for label, (_, hosts) in kernels.kernels.items():
        if len(kernels.kernels) > 1:
            with gzip.open(out / f"{label}-slabinfo.txt.gz", "wt") as fh:
                fh.write(slabs[label])
            (out / f"{label}-meminfo.txt").write_text(mems[label])
        per[label] = KernelSnapshot(label, list(hosts), parsers.parse_slabinfo(slabs[label]),
                                    parsers.parse_meminfo(mems[label]),
                                    kernels.releases.get(label), kernels.aliases(label))
    snap = Snapshot(name, time.time(), merge_slab([k.slab for k in per.values()]), {})
    totals: dict[str, int] = {}
    for k in per.values():
        for key, value in k.meminfo.items():
            totals[key] = totals.get(key, 0) + value
    snap.meminfo = totals
    aliases: dict[str, list[str]] = {}
    for k in per.values():
        for cache, others in k.aliases.items():
            aliases[cache] = sorted(set(aliases.get(cache, [])) | set(others))
    snap.aliases = aliases
    if len(per) > 1:
        snap.kernels = per
        return snap, slabinfo_text(snap.slab), meminfo_text([snap.meminfo])
    (label,) = per
    return snap, slabs[label], mems[label]


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
