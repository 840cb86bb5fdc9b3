"""vm backend: each lab host is a qemu VM booting a kernel of your choice.

The kernel comes from the lab file (``hosts.NAME.kernel: "6.1"``) or the command line
(``--kernels 6.1``, ``make lab KERNELS=6.1``): a Debian cloud kernel fetched with apt,
or a path to a vmlinuz (see orchestrator/vm/kernels.py). The root filesystem is the
node image's recipe as an ext4 image (orchestrator/vm/rootfs.py); both are cached by
content hash under /var/cache/tcplab and built on first use.

Each VM is then reached over SSH exactly like an ssh-backend host (this class is the
ssh backend with VMs behind it): a forwarded port on 127.0.0.1 leads to the VM's sshd
on its control interface, the lab's traffic goes over a private point-to-point link
between the two VMs (qemu ``-netdev stream`` on a Unix socket in the run's directory),
and each VM is its own kernel, so every checkpoint has per-side figures.

KVM is used when it boots a kernel here, else TCG (``-accel tcg,thread=multi``); see
orchestrator/vm/qemu.py. Sysctls are set inside the VMs, which die with the run: no
``--allow-host-sysctls`` needed and nothing to restore.

Resources, each journalled before it exists: the run's directory under /var/tmp (qcow2
overlays, the link socket, console logs), and each qemu (kind ``vm``: found again by
its pidfile and checked by its command line; plus a ``process`` entry with pid and
start time). Teardown, Ctrl-C and ``tcplab wipe`` stop the VMs and remove the files.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ... import resources
from ...errors import InputError, RunError
from ...journal import LOCAL_HANDLERS
from ...runner import wait_for
from ..base import LabHost
from ..common import make_key, object_name, peer_address, read_fd_limits, short_id
from ..sshhost import HostRunner, SshBackend, Target, probe
from . import qemu
from .kernels import Kernel

DEFAULT_KERNEL = "6.1"
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 2
WORK_PARENT = Path("/var/tmp")


class VmBackend(SshBackend):
    name = "vm"
    journal_sysctls = False  # the VMs die with the run

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vms: dict[str, qemu.Vm] = {}
        self.kernels_used: dict[str, Kernel] = {}
        self.rootfs: Any = None
        self.accel: str | None = None
        self.workdir = WORK_PARENT / f"tcplab-vm-{short_id(self.run_id)}"
        self.timings: dict[str, float] = {}

    def kernel_spec(self, name: str) -> str:
        spec = next(h for h in self.lab.hosts if h.name == name)
        return spec.kernel or DEFAULT_KERNEL

    # -- checks (nothing created) ----------------------------------------------------------
    def preflight(self) -> None:
        from .kernels import is_path, resolve

        qemu.need_tools()
        for spec in self.lab.hosts:
            kernel = self.kernel_spec(spec.name)
            if kernel == "host" or is_path(kernel):
                continue
            resolve(kernel)  # apt-cache only: an unknown version fails here

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        from . import kernels, rootfs

        started = time.monotonic()
        for spec in self.lab.hosts:
            label = self.kernel_spec(spec.name)
            if label not in {k.label for k in self.kernels_used.values()}:
                t0 = time.monotonic()
                kernel = kernels.fetch(label, lambda m: self.log(f"      {m}"))
                self.timings[f"kernel {label}"] = round(time.monotonic() - t0, 1)
            else:
                kernel = next(k for k in self.kernels_used.values() if k.label == label)
            self.kernels_used[spec.name] = kernel
        t0 = time.monotonic()
        self.rootfs = rootfs.ensure(resources.images_dir(), lambda m: self.log(f"      {m}"))
        self.timings["rootfs"] = round(time.monotonic() - t0, 1)
        self.accel = qemu.accelerator(next(iter(self.kernels_used.values())),
                                      lambda m: self.log(m))
        self.journal.record("path", path=str(self.workdir))
        self.workdir.mkdir(mode=0o700)
        key = make_key(self.journal.dir, self.run_id)
        public = key.with_suffix(".pub").read_text().split()[1]
        link = self.workdir / "lab.sock"
        prefix = self.lab.subnet.split("/")[1]
        server, client = self.lab.host("server"), self.lab.host("client")
        t0 = time.monotonic()
        for index, spec in enumerate((server, client), 1):
            size = spec.vm or {}
            config = qemu.VmConfig(
                name=object_name(self.run_id, spec.name), host=spec.name,
                index=index, kernel=self.kernels_used[spec.name], rootfs=self.rootfs.path,
                workdir=self.workdir, lab_address=f"{spec.address}/{prefix}", link=link,
                link_server=spec is server, public_key=public, cmdline=spec.cmdline,
                memory_mb=size.get("memory", DEFAULT_MEMORY_MB),
                cpus=size.get("cpus", DEFAULT_CPUS), accel=self.accel)
            self.journal.record("vm", name=config.name, pidfile=str(config.pidfile),
                                host=spec.name)
            vm = qemu.start(config)
            self.journal.record("process", pid=vm.pid, start=vm.start_ticks, host=spec.name)
            self.vms[spec.name] = vm
            if spec is server:
                qemu.wait_link(vm)  # the client's qemu connects to it at start
        for spec in (server, client):
            vm = self.vms[spec.name]
            seconds = qemu.wait_booted(vm)
            _wait_banner(vm)
            target = Target("127.0.0.1", "root", vm.config.ssh_port, str(key))
            runner = HostRunner(spec.name, target, ctl_port=22,
                                peer=peer_address(self.lab, spec.name), sudo=False)
            runner.wait_ready(timeout=30)
            self.runners[spec.name] = runner
            self.facts[spec.name] = probe(runner, spec.address)
            kernel = self.kernels_used[spec.name]
            self.log(f"      {spec.name}: VM up in {seconds:.1f} s ({self.accel}, kernel "
                     f"{self.facts[spec.name]['release']}, ssh 127.0.0.1:{vm.config.ssh_port})")
            info = {"vm": {"kernel": kernel.label, "release": self.facts[spec.name]["release"],
                           "accel": self.accel, "boot_seconds": seconds,
                           "memory_mb": vm.config.memory_mb, "cpus": vm.config.cpus,
                           "cmdline": vm.config.cmdline, "qemu": vm.config.name},
                    "kernel": self.facts[spec.name]["release"],
                    "boot_id": self.facts[spec.name].get("boot_id")}
            self.hosts[spec.name] = LabHost(spec, runner, info=info)
        self.timings["boot"] = round(time.monotonic() - t0, 1)
        for name, host in self.hosts.items():
            host.sysctls = self.apply_sysctls(host, dict(sysctls.get(name, {})))
            read_fd_limits(host)
        self.timings["up"] = round(time.monotonic() - started, 1)
        return self.hosts

    def diagnose(self) -> list[str]:
        """VMs whose qemu exited during the run (killed, crashed, powered off): the cause
        a side's lost SSH connection is only the symptom of."""
        notes = []
        for name, vm in self.vms.items():
            code = vm.proc.poll()
            if code is not None:
                how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                       and -code in signal.valid_signals() else f"exited with status {code}")
                when = ("during the run" if vm.boot_seconds is not None
                        else "while booting, before its init was ready")
                notes.append(f"{name}: its VM (qemu pid {vm.pid}) {how} {when}")
        return notes

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        return {**LOCAL_HANDLERS, **vm_undo_handlers()}

    def runners_reusable(self) -> bool:
        return False  # the VMs are gone after down()

    def metadata(self) -> dict[str, Any]:
        out = super().metadata()
        out["vm"] = {
            "accel": self.accel,
            "qemu": qemu.qemu_version() if self.vms else None,
            "rootfs": self.rootfs.to_dict() if self.rootfs else None,
            "kernels": {name: k.to_dict() for name, k in self.kernels_used.items()},
            "boot_seconds": {name: vm.boot_seconds for name, vm in self.vms.items()},
            "timings": self.timings,
        }
        labels = sorted({k.label for k in self.kernels_used.values()})
        if len(labels) == 1:
            out["kernel_label"] = labels[0]
        return out


def _wait_banner(vm: qemu.Vm, timeout: float = 30.0) -> None:
    """Wait until sshd answers with its banner through the forwarded port.

    user-mode networking accepts on 127.0.0.1 before sshd runs in the VM; waiting for
    the banner here keeps paramiko from logging failed attempts.
    """
    def banner() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", vm.config.ssh_port), timeout=2) as s:
                s.settimeout(3)
                if s.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        if not vm.alive():
            raise RunError(f"{vm.config.host}: the VM stopped after booting: "
                           f"{qemu.tail(vm.config.console)}")
        return False

    if not wait_for(banner, timeout, interval=0.2):
        raise RunError(f"{vm.config.host}: sshd in the VM does not answer on 127.0.0.1:"
                       f"{vm.config.ssh_port} after {timeout:.0f} s; console: "
                       f"{qemu.tail(vm.config.console)}")


def vm_undo_handlers() -> dict[str, Callable[[dict], None]]:
    return {"vm": qemu.undo_vm}


__all__ = ["InputError", "VmBackend", "vm_undo_handlers"]
