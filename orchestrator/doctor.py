"""``tcplab doctor``: is this machine ready for a lab run? Each failed check says the fix.

``essential()`` is what every ``tcplab run`` checks first; the rest are informative
(docker only matters for the docker backend, debootstrap only for an offline build).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import resources
from .errors import InputError


@dataclass
class Check:
    name: str
    ok: bool | None  # None: a warning, not a failure
    detail: str
    fix: str = ""
    essential: bool = False


def _root() -> Check:
    ok = os.geteuid() == 0
    return Check("root", ok, "running as root" if ok else f"uid {os.geteuid()}",
                 "run tcplab as root (sudo make lab ...)", essential=True)


def _slabinfo() -> Check:
    ok = os.access("/proc/slabinfo", os.R_OK)
    return Check("/proc/slabinfo", ok, "readable" if ok else "not readable (mode 0400)",
                 "run as root; slabinfo is readable by root only", essential=True)


def _tools() -> Check:
    missing = [t for t in ("ip", "ss", "unshare") if shutil.which(t) is None]
    return Check("iproute2, util-linux", not missing,
                 "ip, ss, unshare found" if not missing else "missing: " + ", ".join(missing),
                 "apt-get install iproute2 util-linux", essential=True)


def _fd_limit() -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Check("file descriptors", True if hard >= 4096 else None,
                 f"RLIMIT_NOFILE soft {soft:,}, hard {hard:,}: up to {max(hard - 64, 0):,} "
                 "sockets per side worker (sides shard over workers)",
                 "raise the hard limit (ulimit -Hn) for fewer worker processes")


def _port_range() -> Check:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except OSError:
        return Check("port range", None, "unreadable")
    return Check("port range", True,
                 f"host {low}-{high}; the lab sets the client's range in its own namespace "
                 "(lab/default.yaml), so the host's is not used")


def _memory() -> Check:
    avail = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
    fits = int(0.8 * avail / 10_000)
    return Check("free memory", avail > 256 << 20,
                 f"MemAvailable {avail / 2**30:.1f} GiB: about {fits:,} idle connections fit",
                 "free memory or lower N")


def _docker() -> list[Check]:
    try:
        from .backends.docker.client import ping

        client = ping(timeout=5)
        version = client.version()
    except Exception as exc:  # no SDK, no daemon, no permission
        return [Check("docker daemon", None, f"not answering ({str(exc)[:80]})",
                      "for BACKEND=docker: bash .ci/setup-docker.sh (installs docker.io, "
                      "starts dockerd); the netns backend does not need it")]
    checks = [Check("docker daemon", True, f"engine {version.get('Version')}, "
                    f"API {version.get('ApiVersion')}")]
    try:
        from .backends.docker.image import recipe_hash

        tag = f"tcplab/node:{recipe_hash(resources.images_dir())[:12]}"
        try:
            client.images.get(tag)
            checks.append(Check("node image", True, f"{tag} built"))
        except Exception:
            checks.append(Check("node image", None, f"{tag} not built yet",
                                "make images (or the first make lab BACKEND=docker builds it)"))
    except Exception as exc:
        checks.append(Check("node image", None, f"cannot tell ({str(exc)[:80]})"))
    client.close()
    return checks


def _debootstrap() -> Check:
    ok = shutil.which("debootstrap") is not None
    return Check("debootstrap", True if ok else None, "found" if ok else "not installed",
                 "apt-get install debootstrap (needed to build the image with no registry)")


def _cgroup() -> Check:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    v1 = Path("/sys/fs/cgroup/memory").is_dir()
    detail = "v2 (unified)" if v2 else ("v1 (memory controller mounted)" if v1 else "none found")
    return Check("cgroup", True if (v1 or v2) else None, detail,
                 "per-container memory attribution needs a memory cgroup")


def _stale() -> Check:
    from .journal import stale_runs

    stale = stale_runs()
    return Check("stale runs", not stale,
                 "none" if not stale else f"{len(stale)} run(s) ended without cleanup: "
                 + ", ".join(j.run_id for j in stale[:3]),
                 "tcplab wipe (make clean)", essential=True)


def _lock() -> Check:
    from .journal import HostLock

    path = HostLock.path()
    holder = ""
    if path.exists():
        proc = subprocess.run(["flock", "-n", str(path), "true"], capture_output=True)
        if proc.returncode != 0:
            holder = path.read_text().strip() or "another run"
    return Check("measuring now", None if holder else True,
                 f"busy: {holder}" if holder else "no run is measuring",
                 "wait for the other run: slab counters are machine-wide")


def _ledger() -> Check:
    from .ledger.tracer import readiness, tracefs_mounted

    missing = readiness()
    detail = ("ready (bpftrace, BTF, kmem tracepoints)" if tracefs_mounted() else
              "ready (bpftrace, BTF; tracefs is mounted by the run and unmounted after)")
    return Check("ledger (--ledger)", None if missing else True,
                 "; ".join(missing) if missing else detail,
                 "only --ledger needs it: apt-get install bpftrace, a kernel with BTF and "
                 "tracepoints")


def _link() -> Check:
    """Which engine gives link conditions (--link) on this machine's kernel."""
    from .conditions.engines import FALLBACK_MAX_RATE_BPS, local_has_netem
    from .conditions.link import show_rate

    if local_has_netem():
        return Check("link (--link)", True, "netem (sch_netem) in this kernel")
    if shutil.which("iptables") is None:
        return Check("link (--link)", None, "no netem, and no iptables for the delay line",
                     "only --link needs it: apt-get install iptables (or BACKEND=vm)")
    return Check("link (--link)", True, "no netem in this kernel: the delay line stands in "
                 f"(NFQUEUE; up to {show_rate(FALLBACK_MAX_RATE_BPS)})")


def checks() -> list[Check]:
    return [_root(), _slabinfo(), _tools(), _stale(), _lock(), _fd_limit(), _port_range(),
            _memory(), *_docker(), _debootstrap(), _cgroup(), _ledger(), _link()]


def essential() -> None:
    """Raise InputError on the first failed essential check (what make lab checks first)."""
    for check in (_root(), _slabinfo(), _tools()):
        if not check.ok:
            raise InputError(f"{check.name}: {check.detail}; {check.fix}")


def render(results: list[Check]) -> str:
    mark = {True: "✓", False: "✗", None: "!"}
    lines = []
    for c in results:
        lines.append(f" {mark[c.ok]} {c.name:<22} {c.detail}")
        if c.ok is not True and c.fix:
            lines.append(f"   {'':<22} fix: {c.fix}")
    failed = [c for c in results if c.ok is False]
    lines.append("ready for lab runs" if not failed else
                 f"{len(failed)} check(s) failed: fix them before running the lab")
    return "\n".join(lines)
