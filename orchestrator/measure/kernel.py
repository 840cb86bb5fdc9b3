"""The measured kernel: where slabinfo and meminfo are read, and how its caches are flushed.

Network namespaces and containers share this machine's kernel (:class:`LocalKernel`); an
ssh host or a VM runs a kernel of its own, reached through a runner (:class:`RemoteKernel`);
a lab of several machines or VMs measures each of them (:class:`KernelSet`, whose readings
are the sum). The backend gives the run one of these (``Backend.measured_kernel()``);
probes and the run never ask which kind it is.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ..runner import Runner
from . import parsers

SETTLE_CACHES = ("TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "tw_sock_TCP",
                 "tw_sock_TCPv6", "request_sock_TCP", "skbuff_head_cache", "skbuff_small_head")

#: Caches flushed before every slab reading: those a connection lives in.
SHRINK_CACHES = SETTLE_CACHES + ("tcp_bind_bucket", "tcp_bind2_bucket", "eventpoll_epi",
                                 "ep_head", "lsm_inode_cache", "lsm_file_cache",
                                 "skbuff_fclone_cache")
_SHRINK_SCRIPT = ("for c in " + " ".join(SHRINK_CACHES) + "; do f=/sys/kernel/slab/$c/shrink; "
                  "[ -w $f ] && echo 1 > $f; done; true")

#: Prints /sys/kernel/slab as {entry: symlink target or None} (JSON), on a lab host.
_SLAB_LINKS = (
    "import json, os\n"
    "d = '/sys/kernel/slab'\n"
    "print(json.dumps({e.name: (os.readlink(e.path) if e.is_symlink() else None)"
    " for e in os.scandir(d)}))\n"
)


class MeasuredKernel(Protocol):
    """A kernel whose global counters a run measures (or several, summed)."""

    label: str
    hosts: list[str]  # the lab hosts running on it
    release: str | None
    #: this machine's own kernel: its /proc is ours, the sampler and host sysctls see it
    local: bool
    #: bytes per page of that kernel's machine (sockstat ``mem`` and slabs count pages)
    page_size: int

    def read(self, path: str) -> str:
        """The text of a /proc file (a set: the sum of slabinfo or meminfo)."""
        ...

    def shrink_caches(self) -> None:
        """Flush the socket caches' per-CPU slabs; see :func:`probes.settle`."""
        ...

    def slab_aliases(self) -> dict[str, list[str]]:
        """SLUB merge groups (read once: they do not change while the kernel runs)."""
        ...

    def parts(self) -> list[MeasuredKernel]:
        """The single kernels measured: itself, or a set's members."""
        ...


def read_slab_aliases(root: Path = Path("/sys/kernel/slab")) -> dict[str, list[str]]:
    """This machine's SLUB merge groups."""
    links: dict[str, str | None] = {}
    try:
        entries = list(os.scandir(root))
    except OSError:
        return {}
    for entry in entries:
        links[entry.name] = os.readlink(entry.path) if entry.is_symlink() else None
    return parsers.slab_alias_groups(links)


class LocalKernel:
    """This machine's kernel (netns, docker): /proc and /sys read directly."""

    local = True
    release = None

    def __init__(self, hosts: list[str], label: str = "local") -> None:
        self.label = label
        self.hosts = hosts
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self._aliases: dict[str, list[str]] | None = None

    def read(self, path: str) -> str:
        return Path(path).read_text()

    def shrink_caches(self) -> None:
        for cache in SHRINK_CACHES:
            try:
                Path(f"/sys/kernel/slab/{cache}/shrink").write_text("1")
            except OSError:
                pass

    def slab_aliases(self) -> dict[str, list[str]]:
        if self._aliases is None:
            self._aliases = read_slab_aliases()
        return self._aliases

    def parts(self) -> list[MeasuredKernel]:
        return [self]


class RemoteKernel:
    """The kernel of another machine or a VM, read through a runner on it."""

    local = False

    def __init__(self, runner: Runner, label: str, hosts: list[str],
                 release: str | None = None, page_size: int | None = None) -> None:
        self.runner = runner
        self.label = label
        self.hosts = hosts
        self.release = release
        self.page_size = page_size or parsers.PAGE_SIZE  # the preflight probe's reading
        self.aliases_read: dict[str, list[str]] | None = None

    def read(self, path: str) -> str:
        return self.runner.run(["cat", path], timeout=30).stdout

    def shrink_caches(self) -> None:
        self.runner.run(["sh", "-c", _SHRINK_SCRIPT], check=False, timeout=30)

    def slab_aliases(self) -> dict[str, list[str]]:
        if self.aliases_read is None:
            out = self.runner.run(["python3", "-c", _SLAB_LINKS], timeout=60).stdout
            self.aliases_read = parsers.slab_alias_groups(json.loads(out))
        return self.aliases_read

    def parts(self) -> list[MeasuredKernel]:
        return [self]


def read_each(kernels: list[MeasuredKernel], path: str) -> dict[str, str]:
    """A /proc file of every kernel, read in parallel, by label."""
    if not kernels:
        return {}
    with ThreadPoolExecutor(max_workers=len(kernels)) as pool:
        return dict(zip([k.label for k in kernels], pool.map(lambda k: k.read(path), kernels),
                        strict=True))


class KernelSet:
    """The measured kernels of a lab whose hosts run on kernels of their own (ssh, vm).

    Reading slabinfo or meminfo gives their sum; :func:`probes.take` keeps each kernel's
    counters beside it. An empty set (the kernels went away with the run) reads as empty.
    """

    release = None

    def __init__(self, kernels: list[MeasuredKernel]) -> None:
        self.kernels = kernels
        self.label = "+".join(k.label for k in kernels)
        self.hosts = [h for k in kernels for h in k.hosts]
        self.local = bool(kernels) and all(k.local for k in kernels)
        # one figure for sums over kernels: the first one's (each keeps its own)
        self.page_size = kernels[0].page_size if kernels else parsers.PAGE_SIZE

    def read(self, path: str) -> str:
        texts = read_each(self.kernels, path)
        if path == "/proc/slabinfo":
            if not texts:  # no kernel left (VMs gone with the run): an empty reading
                return slabinfo_text({"tcplab_none": parsers.SlabLine("tcplab_none", 0, 0, 8,
                                                                      1, 1, 0, 0)})
            return slabinfo_text(merge_slab([parsers.parse_slabinfo(t) for t in texts.values()]))
        if path == "/proc/meminfo":
            return meminfo_text([parsers.parse_meminfo(t) for t in texts.values()])
        raise ValueError(f"{path}: no sum over kernels")

    def shrink_caches(self) -> None:
        for kernel in self.kernels:
            kernel.shrink_caches()

    def slab_aliases(self) -> dict[str, list[str]]:
        return union_aliases([k.slab_aliases() for k in self.kernels])

    def parts(self) -> list[MeasuredKernel]:
        return list(self.kernels)

    @property
    def known_aliases(self) -> dict[str, dict[str, list[str]]]:
        """By label, the SLUB merges of the kernels whose aliases were read so far."""
        out = {}
        for k in self.kernels:
            read = getattr(k, "aliases_read", None)
            if read is not None:
                out[k.label] = read
        return out


def union_aliases(parts: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = {}
    for part in parts:
        for cache, others in part.items():
            aliases[cache] = sorted(set(aliases.get(cache, [])) | set(others))
    return aliases


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
            page_bytes = have.pagesperslab * parsers.PAGE_SIZE  # page size cancels out
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
