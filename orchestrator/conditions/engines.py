"""Which emulator gives a link: the kernel's netem, or the fallback (the delay line).

netem (``sch_netem``) is the reference: Debian's VM kernels have it as a module, most
distribution kernels do. A kernel without it (this project's CI host) gets the same
semantics from the delay line, ``scenarios/delayline.py``: an NFQUEUE program run in the
lab namespace on this machine that holds each packet for the delay, paces it at the rate,
drops at the queue limit and at the loss rate. It runs where the lab shares this
machine's kernel (netns, docker), or inside each VM that carries a direction (vm:
invm.py), never on an ssh host.

Probing creates nothing that outlives it: a scratch network namespace (``unshare --net``)
with a veth pair, a netem qdisc tried on it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from ..errors import InputError
from .link import Link, show_rate

ENGINES = ("auto", "netem", "fallback")
#: The highest rate the delay line carries faithfully (per direction) with wire-size packets
#: (``--no-gso``, as tcplab runs it): 500 Mbit/s of full frames, about 37,000 packets/s,
#: measured with bench/delayline.py on this machine (docs/performance.md); above it the
#: fallback would be the bottleneck, not the link asked for, so such a link is refused.
FALLBACK_MAX_RATE_BPS = 500_000_000
#: Inside a VM under TCG (qemu without KVM, as here) the delay line is interpreted Python on
#: emulated CPUs sharing this machine's cores: asked for 20 Mbit/s between two TCG VMs it
#: delivered 3-7 Mbit/s between checkpoints (netem in the same VMs: 12), asked for 5 Mbit/s
#: 2-3.5 (docs/conditions.md, "netem against the fallback"). Above this it is surely the
#: bottleneck, not the link asked for; at it, it still releases late under load.
FALLBACK_VM_MAX_RATE_BPS = 5_000_000
#: Backends whose lab hosts share this machine's kernel (the fallback runs here).
LOCAL_BACKENDS = ("netns", "docker")
#: Backends whose hosts are VMs of the run: the fallback runs inside them.
VM_BACKENDS = ("vm",)

PROBE = ("ip link add tlprobe0 type veth peer name tlprobe1 && "
         "tc qdisc add dev tlprobe0 root netem delay 1ms")


@functools.lru_cache(maxsize=1)
def local_has_netem() -> bool:
    """Does this machine's kernel run netem? Tried in a throwaway network namespace."""
    if os.geteuid() != 0:
        return False
    try:
        proc = subprocess.run(["unshare", "--net", "sh", "-c", PROBE], capture_output=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def choose(requested: str, link: Link, backend: str) -> tuple[str, str]:
    """(engine, why) for a link on a backend, or InputError before anything exists.

    On vm and ssh the hosts' own kernels decide; auto picks netem there, whose presence
    is checked on the hosts when they are up (a refusal then is a RunError). On vm the
    fallback may be forced (a cross-check against netem on one kernel): the delay line
    runs inside the VMs."""
    if requested not in ENGINES:
        raise InputError(f"--link-engine: expected one of {', '.join(ENGINES)}, got {requested!r}")
    release = os.uname().release
    if backend in VM_BACKENDS and requested == "fallback":
        why = "forced (--link-engine fallback), inside the VMs"
        if link.rate_bps > FALLBACK_VM_MAX_RATE_BPS:
            raise InputError(
                f"--link/LINK: rate {show_rate(link.rate_bps)} is above what the delay line "
                f"inside a VM (the fallback engine on the {backend} backend) carries "
                f"faithfully, {show_rate(FALLBACK_VM_MAX_RATE_BPS)} (qemu without KVM); lower "
                "the rate, or use --link-engine netem")
        return "fallback", why
    if backend not in LOCAL_BACKENDS:
        if requested == "fallback":
            raise InputError(f"--link-engine fallback: the delay line runs on this machine's "
                             f"kernel or inside lab VMs, not on the {backend} backend's hosts; "
                             "use --link-engine netem or auto (netem in the hosts' own "
                             "kernels), or BACKEND=vm")
        return "netem", f"netem in the {backend} hosts' own kernels"
    has = requested != "fallback" and local_has_netem()
    if requested == "netem" and not has:
        raise InputError(f"--link-engine netem: this kernel ({release}) has no sch_netem (tc "
                         "qdisc netem); use --link-engine fallback (the delay line) or auto, "
                         "or BACKEND=vm (Debian's VM kernels have netem)")
    if requested == "netem" or (requested == "auto" and has):
        return "netem", f"this kernel ({release}) has sch_netem"
    why = ("forced (--link-engine fallback)" if requested == "fallback"
           else f"this kernel ({release}) has no sch_netem")
    if shutil.which("iptables") is None:
        raise InputError(f"--link/LINK: the delay line (the fallback engine: {why}) needs "
                         "iptables on this machine, for its NFQUEUE rules in the lab's "
                         "namespaces: apt-get install iptables")
    if link.rate_bps > FALLBACK_MAX_RATE_BPS:
        raise InputError(
            f"--link/LINK: rate {show_rate(link.rate_bps)} is above what the delay line (the "
            f"fallback engine: {why}) carries faithfully, {show_rate(FALLBACK_MAX_RATE_BPS)}; "
            "lower the rate, or use a kernel with netem (BACKEND=vm)")
    return "fallback", why
