#!/usr/bin/env python3
"""Boot lab VMs again and again with tcplab's own qemu arguments; count those reaching SSH.

Each boot starts the VMs exactly as the vm backend does (orchestrator/vm/qemu.py:
``VmConfig.argv()``, a fresh qcow2 overlay over the cached root filesystem, the kernel's
modules disk), waits for init's ready line on the console, for sshd's banner, logs in
over SSH and runs the preflight probe (python3 over ssh), checks the VM runs the kernel
asked for, then stops qemu and removes the boot's directory. Boots run one after the
other (the machine may have 2 cores and no KVM).

    .venv/bin/python bench/vm_boots.py --kernels "6.1 6.12" -n 20
    .venv/bin/python bench/vm_boots.py --kernels 6.12 -n 20 --vms 2   # a lab's pair
    .venv/bin/python bench/vm_boots.py --kernels 6.12 -n 20 --refetch-every 5

``--refetch-every K`` removes the kernel's folder from the kernel cache before boots
1, 1+K, 1+2K, ... so those boot right after a fresh fetch (apt-get download, depmod,
modules image). A failed boot keeps its console and qemu logs in ``--keep`` (default
bench/results/vm-boots-<stamp>/). Prints one line per boot and, per kernel, a final
``K/N reached ssh`` line. Exit status 1 when any boot failed. Needs root, qemu and the
tools of docs/vm.md; uses TCPLAB_CACHE_DIR like the lab does.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import resources  # noqa: E402
from orchestrator.backends.sshhost import HostRunner, Target, probe  # noqa: E402
from orchestrator.backends.vm import kernels, qemu, rootfs  # noqa: E402
from orchestrator.backends.vm.backend import (  # noqa: E402
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MB,
    _wait_banner,
)
from orchestrator.backends.vm.network import LabNic  # noqa: E402
from orchestrator.errors import LabError  # noqa: E402

ADDRESSES = ("198.18.0.2/24", "198.18.0.3/24")
HOSTS = ("server", "client")


@dataclass
class Boot:
    kernel: str
    number: int
    fetched: bool
    ok: bool = False
    ready_s: float | None = None  # qemu start -> init's ready line (the slowest VM)
    ssh_s: float | None = None  # qemu start -> probe answered over ssh (the slowest VM)
    error: str = ""


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def refetch(spec: str) -> None:
    """Remove the kernel's folder from the cache (and its kept .debs): the next fetch
    downloads."""
    from orchestrator.backends.vm import archive

    kernel = kernels.fetch(spec, lambda m: None)
    folder = Path(kernel.vmlinuz).parent
    shutil.rmtree(folder)
    if kernel.package:
        for deb in kernels.resolve(spec, lambda m: None).debs:
            (archive.apt_dir() / "debs" / archive.deb_file(deb)).unlink(missing_ok=True)


def boot_once(kernel: kernels.Kernel, image: str, accel: str, key: Path, vms: int,
              keep: Path, label: str, append: str = "") -> tuple[float, float]:
    """One boot of ``vms`` VMs; returns (seconds to ready, seconds to ssh). Raises LabError."""
    workdir = Path(tempfile.mkdtemp(prefix="tcplab-vmboots-", dir="/var/tmp"))
    public = key.with_suffix(".pub").read_text().split()[1]
    started: list[qemu.Vm] = []
    runners: list[HostRunner] = []
    try:
        for index in range(vms):
            nic = LabNic(mac=qemu.mac(index + 1, 2), address=ADDRESSES[index],
                         socket=workdir / "lab.sock", listen=index == 0)
            config = qemu.VmConfig(
                name=f"tcplab-vmboots-{workdir.name[-8:]}-{HOSTS[index]}", host=HOSTS[index],
                index=index + 1, kernel=kernel, rootfs=image, workdir=workdir,
                labs=[nic], public_key=public, cmdline=append, memory_mb=DEFAULT_MEMORY_MB,
                cpus=DEFAULT_CPUS, accel=accel)
            if index > 0:
                first = started[0]
                qemu.wait_link(nic.socket, "the first VM's qemu", first.alive,
                               first.config.qemu_log)
            vm = qemu.start(config)
            started.append(vm)
        ready = ssh = 0.0
        for index, vm in enumerate(started):
            ready = max(ready, qemu.wait_booted(vm))
            _wait_banner(vm)
            runner = HostRunner(vm.config.host, Target("127.0.0.1", "root", vm.config.ssh_port,
                                                       str(key)), ctl_port=22, sudo=False)
            runners.append(runner)
            runner.wait_ready(timeout=30)
            facts = probe(runner, ADDRESSES[index].split("/")[0])
            if facts["release"] != kernel.release:
                raise LabError(f"{vm.config.host} runs {facts['release']}, not {kernel.release}")
            ssh = max(ssh, time.monotonic() - vm.started)
        return ready, round(ssh, 2)
    except BaseException:
        keep.mkdir(parents=True, exist_ok=True)
        for vm in started:
            for log in (vm.config.console, vm.config.qemu_log):
                if log.exists():
                    shutil.copy2(log, keep / f"{label}-{log.name}")
        raise
    finally:
        for runner in runners:
            runner.close()
        for vm in started:
            qemu.stop(vm.pid, vm.start_ticks, vm.config.name)
            vm.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def run_kernel(spec: str, n: int, vms: int, refetch_every: int, image: str, key: Path,
               keep: Path, append: str = "") -> list[Boot]:
    boots = []
    accel = None
    kernel = kernels.fetch(spec, lambda m: None)
    for number in range(1, n + 1):
        fresh = refetch_every > 0 and (number - 1) % refetch_every == 0
        boot = Boot(spec, number, fresh)
        try:
            if fresh:
                refetch(spec)
                t0 = time.monotonic()
                kernel = kernels.fetch(spec, lambda m: None)
                fetch_s = f" (fetched in {time.monotonic() - t0:.0f} s)"
            else:
                fetch_s = ""
            accel = accel or qemu.accelerator(kernel, lambda m: print(m, flush=True))
            boot.ready_s, boot.ssh_s = boot_once(kernel, image, accel, key, vms, keep,
                                                 f"{spec}-boot{number}", append)
            boot.ok = True
            print(f"{spec} boot {number}/{n}: ready {boot.ready_s:.1f} s, ssh {boot.ssh_s:.1f} s"
                  f"{fetch_s}", flush=True)
        except LabError as exc:
            boot.error = str(exc)
            print(f"{spec} boot {number}/{n}: FAILED{fetch_s}: {boot.error[:400]}", flush=True)
        boots.append(boot)
    return boots


def summary(spec: str, boots: list[Boot], vms: int) -> str:
    good = [b for b in boots if b.ok]
    line = f"{spec}: {len(good)}/{len(boots)} reached ssh"
    if good:
        ssh = [b.ssh_s for b in good if b.ssh_s is not None]
        line += (f" (x{vms} VM; to ssh: median {statistics.median(ssh):.1f} s, "
                 f"min {min(ssh):.1f}, max {max(ssh):.1f})")
    fresh = [b for b in boots if b.fetched]
    if fresh:
        line += f"; right after a fetch: {sum(b.ok for b in fresh)}/{len(fresh)}"
    return line


def use_qemu(cpu: str, accel: str) -> None:
    """Boot with ``-cpu CPU`` and/or ``-accel ACCEL`` instead of tcplab's choice (a
    measurement, not a setting)."""
    argv = qemu.VmConfig.argv

    def patched(self: qemu.VmConfig) -> list[str]:
        out = argv(self)
        for flag, value in (("-cpu", cpu), ("-accel", accel)):
            if value:
                out[out.index(flag) + 1] = value
        return out

    qemu.VmConfig.argv = patched  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default="6.1 6.12", help='e.g. "6.1 6.12"')
    parser.add_argument("-n", type=int, default=20, help="boots per kernel (default 20)")
    parser.add_argument("--vms", type=int, choices=(1, 2), default=1,
                        help="VMs per boot: 1, or 2 booting together like a lab's pair")
    parser.add_argument("--refetch-every", type=int, default=0, metavar="K",
                        help="remove the kernel from the cache before every K-th boot")
    parser.add_argument("--keep", type=Path,
                        default=ROOT / "bench" / "results" / time.strftime("vm-boots-%Y%m%d-%H%M%S"),
                        help="where failed boots' console and qemu logs are kept")
    parser.add_argument("--append", default="",
                        help="more kernel command line, as hosts.NAME.cmdline in a lab file")
    parser.add_argument("--cpu", default="",
                        help="qemu -cpu model under TCG instead of tcplab's (max)")
    parser.add_argument("--accel", default="",
                        help="qemu -accel instead of tcplab's, e.g. tcg,thread=single")
    args = parser.parse_args()
    if args.cpu or args.accel:
        use_qemu(args.cpu, args.accel)
    signal.signal(signal.SIGTERM, _sigterm)
    qemu.need_tools()
    image = rootfs.ensure(resources.images_dir(), lambda m: print(m, flush=True)).path
    results = {}
    with tempfile.TemporaryDirectory(prefix="tcplab-vmboots-key-") as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL)
        for spec in args.kernels.split():
            results[spec] = run_kernel(spec, args.n, args.vms, args.refetch_every, image, key,
                                       args.keep, args.append)
    for spec, boots in results.items():
        print(summary(spec, boots, args.vms))
    return 0 if all(b.ok for boots in results.values() for b in boots) else 1


if __name__ == "__main__":
    sys.exit(main())
