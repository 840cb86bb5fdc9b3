"""Boot and stop the qemu VMs of a run; their private network; KVM or TCG.

One VM per lab host:

* disks: one NVMe controller with two namespaces, nsid 1 the root disk (a qcow2
  overlay over the cached image, in the run's directory) and nsid 2 the kernel's
  modules image (read-only, shared). Neither is named by its device name: from 6.12
  the kernel scans namespaces asynchronously, so ``nvme0n1`` may be either. The kernel
  finds the root filesystem by its partition id (``root=PARTUUID=`` plus ``rootwait``,
  resolved without an initramfs) and init finds the modules disk by its ext4 label
  (``tcplab.mods=``);
* control network: qemu user-mode networking with ``restrict=on`` (no way out of the
  VM) and one forwarded port, ``127.0.0.1:<port>`` -> the VM's sshd;
* lab networks: one interface per network the host is on (a router has two), each
  a Unix stream socket in the run's directory (``-netdev stream``) that this qemu
  listens on or connects to: a point-to-point link to one other VM, or a hub of more
  (network.py); nothing of the lab's traffic touches a network of this machine;
* the serial console goes to ``<host>-console.log`` in the run's directory.

Every qemu is started with ``-pidfile`` and a ``-name`` naming the run, and is
journalled (kind ``vm``) before it starts, so the undo finds it even if the
orchestrator died right after starting it; the undo checks the process's command
line before it kills anything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import InputError, RunError
from ...journal import process_start_time
from .cache import cache_dir
from .kernels import MODULES_LABEL, Kernel

if TYPE_CHECKING:
    from .network import LabNic
from .rootfs import ROOT_PARTUUID

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT_S = 240.0
READY_MARK = "tcplab-init: ready"
KVM_PROBE_TIMEOUT_S = 20.0
Log = Callable[[str], None]


def need_tools() -> None:
    missing = [t for t in (QEMU, "qemu-img") if shutil.which(t) is None]
    if missing:
        raise InputError(f"the vm backend needs {', '.join(missing)}: apt-get install "
                         "--no-install-recommends qemu-system-x86 qemu-utils")


def qemu_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def accelerator(kernel: Kernel | None = None, log: Log = print) -> str:
    """"kvm" when KVM boots a kernel here, else "tcg".

    ``TCPLAB_VM_ACCEL=kvm|tcg`` decides without probing. Otherwise a probe boots the
    kernel with KVM up to its first panic (no root disk) and waits at most
    :data:`KVM_PROBE_TIMEOUT_S` for it; the answer is cached per host kernel and qemu
    version. A present but unusable /dev/kvm (a kernel that hangs, ``-cpu host``
    refused) gives "tcg".
    """
    forced = os.environ.get("TCPLAB_VM_ACCEL", "").strip()
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or kernel is None:
        return "tcg"
    key = f"{platform.release()} {qemu_version()}"
    cache = cache_dir() / "kvm-probe.json"
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return known["accel"]
    except (OSError, json.JSONDecodeError, KeyError):
        pass
    accel = "kvm" if _kvm_boots(kernel) else "tcg"
    log(f"      KVM probe: {'works' if accel == 'kvm' else 'does not boot a kernel here'}; "
        f"using {accel}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "accel": accel, "time": time.time()}))
    return accel


def _kvm_boots(kernel: Kernel) -> bool:
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", kernel.vmlinuz,
            "-append", "console=ttyS0 panic=-1 root=/dev/tcplab-probe-none"]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    try:
        out, _ = proc.communicate(timeout=KVM_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False
    return b"Kernel panic" in out or b"VFS:" in out


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (qemu binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mac(index: int, kind: int) -> str:
    """A locally administered MAC: kind 1 control, 2 and up the lab interfaces in order;
    index the host's number in the start order (1-based)."""
    return f"52:54:00:7c:{kind:02x}:{index:02x}"


@dataclass
class VmConfig:
    name: str  # qemu -name: tcplab-<short id>-<host>
    host: str  # lab host name
    index: int
    kernel: Kernel
    rootfs: str
    workdir: Path
    labs: list[LabNic]  # its lab interfaces (network.plan_links)
    public_key: str  # the base64 body of an ssh-ed25519 key
    cmdline: str = ""
    memory_mb: int = 1024
    cpus: int = 2
    accel: str = "tcg"
    ssh_port: int = 0

    @property
    def overlay(self) -> Path:
        return self.workdir / f"{self.host}-root.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.host}-qemu.pid"

    @property
    def console(self) -> Path:
        return self.workdir / f"{self.host}-console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / f"{self.host}-qemu.log"

    def append(self) -> str:
        params = [
            "console=ttyS0", f"root=PARTUUID={ROOT_PARTUUID}", "rootwait", "rw",
            "init=/sbin/tcplab-init", "quiet", "loglevel=4", "panic=-1", "net.ifnames=0",
            f"tcplab.host={self.host}", f"tcplab.key={self.public_key}",
            f"tcplab.ctl={mac(self.index, 1)}",
            *(f"tcplab.lab={nic.mac},{nic.address}" for nic in self.labs),
        ]
        if self.kernel.modules_image:
            params.append(f"tcplab.mods={MODULES_LABEL}")
        return " ".join(params + self.cmdline.split())

    def argv(self) -> list[str]:
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=multi", "-cpu", "max"]
        argv = [
            QEMU, "-name", f"{self.name},process={self.name}", "-machine", "q35",
            *accel, "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", self.kernel.vmlinuz, "-append", self.append(),
            "-drive", f"file={self.overlay},if=none,id=root,format=qcow2,cache=unsafe",
            "-device", "nvme,id=nvme0,serial=tcplab",
            "-device", "nvme-ns,drive=root,bus=nvme0,nsid=1",
        ]
        if self.kernel.modules_image:
            argv += ["-drive", f"file={self.kernel.modules_image},if=none,id=mods,format=raw,"
                               "readonly=on",
                     "-device", "nvme-ns,drive=mods,bus=nvme0,nsid=2"]
        argv += [
            "-netdev", f"user,id=ctl,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev=ctl,mac={mac(self.index, 1)}",
        ]
        for i, nic in enumerate(self.labs):
            argv += ["-netdev", f"stream,id=lab{i},server={'on' if nic.listen else 'off'},"
                                f"addr.type=unix,addr.path={nic.socket}",
                     "-device", f"virtio-net-pci,netdev=lab{i},mac={nic.mac}"]
        argv += [
            "-serial", f"file:{self.console}",
            "-pidfile", str(self.pidfile),
        ]
        return argv


@dataclass
class Vm:
    config: VmConfig
    proc: subprocess.Popen
    started: float
    pid: int
    start_ticks: int | None
    boot_seconds: float | None = None
    info: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None


def make_overlay(config: VmConfig) -> None:
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                           config.rootfs, str(config.overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunError(f"{config.host}: qemu-img create of the overlay disk failed: "
                       f"{proc.stderr.strip()[-200:]}")


def start(config: VmConfig) -> Vm:
    """Start qemu (the caller journalled it). Returns at once; see :func:`wait_booted`."""
    make_overlay(config)
    if not config.ssh_port:
        config.ssh_port = free_port()
    log = open(config.qemu_log, "wb")
    try:
        proc = subprocess.Popen(config.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    return Vm(config, proc, time.monotonic(), proc.pid, process_start_time(proc.pid))


def wait_link(path: Path, owner: str, alive: Callable[[], bool], log: Path | None = None,
              timeout: float = 20.0) -> None:
    """Wait for a lab link's socket to exist: the listening VM's qemu or a hub opens it,
    and a connecting qemu must find it at its start. ``owner`` names who opens it."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not alive():
            raise RunError(f"{owner}: exited at start" + (f": {tail(log)}" if log else ""))
        if time.monotonic() > deadline:
            raise RunError(f"{owner}: did not open the lab link socket {path} within "
                           f"{timeout:.0f} s")
        time.sleep(0.05)


def wait_booted(vm: Vm, timeout: float = BOOT_TIMEOUT_S) -> float:
    """Wait for init's ready line on the console; returns seconds since qemu started."""
    deadline = vm.started + timeout
    while True:
        text = _read(vm.config.console)
        if READY_MARK in text:
            vm.boot_seconds = round(time.monotonic() - vm.started, 2)
            line = next(ln for ln in text.splitlines() if READY_MARK in ln)
            vm.info["ready_line"] = line.strip()
            return vm.boot_seconds
        if not vm.alive():
            raise RunError(f"{vm.config.host}: the VM stopped while booting (qemu exit "
                           f"{vm.proc.returncode}): {tail(vm.config.qemu_log)} | console: "
                           f"{tail(vm.config.console)}")
        if "Kernel panic" in text:
            raise RunError(f"{vm.config.host}: kernel panic while booting "
                           f"{vm.config.kernel.release}: {panic_cause(text)}")
        if time.monotonic() > deadline:
            raise RunError(f"{vm.config.host}: no '{READY_MARK}' on the console within "
                           f"{timeout:.0f} s ({vm.config.accel}); console: "
                           f"{tail(vm.config.console)}")
        time.sleep(0.1)


def panic_cause(console: str) -> str:
    """The panic line of a console log and the first error line before it (its cause)."""
    lines = [ln.split("] ", 1)[-1].strip() for ln in console.splitlines()]
    at = next((i for i, ln in enumerate(lines) if "Kernel panic" in ln), len(lines))
    panic = lines[at] if at < len(lines) else "(no panic line)"
    first = next((ln for ln in lines[:at] if "error" in ln.lower() or "fail" in ln.lower()), "")
    return f"{panic}" + (f" (after: {first})" if first else "")


def read_console(path: Path) -> str:
    return _read(path)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 3) -> str:
    text = [ln.strip() for ln in _read(path).splitlines() if ln.strip()]
    return " | ".join(text[-lines:]) or "(empty)"


def stop(pid: int, start_ticks: int | None, name: str | None = None,
         timeout: float = 10.0) -> bool:
    """Stop one qemu: SIGTERM (qemu quits at once), SIGKILL after ``timeout``.

    Only a process whose start time matches (and whose command line names ``name``,
    when given) is touched. Returns True when something was stopped.
    """
    now = process_start_time(pid)
    if now is None or (start_ticks is not None and now != start_ticks):
        return False
    if name is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        if name not in cmdline or "qemu" not in cmdline:
            return False
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process_start_time(pid) != now:
                return True
            _reap(pid)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            _reap(pid)
            if process_start_time(pid) != now:
                break
            time.sleep(0.05)
    except ProcessLookupError:
        pass
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def undo_vm(entry: dict) -> None:
    """Journal undo of a ``vm`` entry: the qemu named in it, found by its pidfile."""
    pidfile = Path(entry["pidfile"])
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # qemu never got as far as writing it: nothing runs
    stop(pid, None, entry["name"])
