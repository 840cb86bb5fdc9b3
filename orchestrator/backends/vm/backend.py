"""vm backend: each lab host is a qemu VM booting a kernel of your choice.

The kernel comes from the lab file (``hosts.NAME.kernel: "6.1"``) or the command line
(``--kernels 6.1``, ``make lab KERNELS=6.1``): a Debian cloud kernel fetched with apt,
or a path to a vmlinuz (see orchestrator/vm/kernels.py). The root filesystem is the
node image's recipe as an ext4 image (orchestrator/vm/rootfs.py); both are cached by
content hash under /var/cache/tcplab and built on first use.

Each VM is then reached over SSH exactly like an ssh-backend host (this class is the
ssh backend with VMs behind it): a forwarded port on 127.0.0.1 leads to the VM's sshd
on its control interface, the lab's traffic goes over private links between the VMs
(qemu ``-netdev stream`` on Unix sockets in the run's directory; a switch process for a
network of more than two: network.py, hub.py), and each VM is its own kernel, so every
checkpoint has per-host figures. A topology (several clients, a router VM, NAT) is built
as on netns: the same networks, routes and NAT table (common.py), set inside the VMs.

KVM is used when it boots a kernel here, else TCG (``-accel tcg,thread=multi``); see
orchestrator/vm/qemu.py. Sysctls are set inside the VMs, which die with the run: no
``--allow-host-sysctls`` needed and nothing to restore.

Resources, each journalled before it exists: the run's directory under /var/tmp (qcow2
overlays, the link sockets, console logs), and each qemu (kind ``vm``: found again by
its pidfile and checked by its command line; plus a ``process`` entry with pid and
start time). A switch process is journalled (``process``) once started and exits by
itself when its socket goes with the directory. Teardown, Ctrl-C and ``tcplab wipe``
stop the VMs and switches and remove the files.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ... import resources
from ...config import HostSpec
from ...errors import InputError, RunError
from ...journal import LOCAL_HANDLERS, Journal, process_start_time
from ...runner import wait_for
from ..base import LabHost
from ..common import (
    make_key,
    nat_ruleset,
    object_name,
    peer_address,
    read_fd_limits,
    route_argvs,
    short_id,
)
from ..sshhost import HostRunner, SshBackend, Target, probe
from . import network, qemu, reuse
from .kernels import Kernel
from .reuse import VmPool

DEFAULT_KERNEL = "6.1"
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 2
#: A router forwards (and with NAT tracks) but holds no sockets: a small VM unless the
#: lab file sizes it (hosts.NAME.vm).
ROLE_SIZES = {"router": (512, 1)}
WORK_PARENT = Path("/var/tmp")


def vm_size(spec: HostSpec) -> tuple[int, int]:
    """(memory MiB, vCPUs) of a host's VM: the lab file's hosts.NAME.vm, else its role's
    default (ROLE_SIZES), else 1024 MiB and 2 vCPUs."""
    memory, cpus = ROLE_SIZES.get(spec.role, (DEFAULT_MEMORY_MB, DEFAULT_CPUS))
    size = spec.vm or {}
    return int(size.get("memory", memory)), int(size.get("cpus", cpus))


class VmBackend(SshBackend):
    name = "vm"
    journal_sysctls = False  # the VMs die with the run

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vms: dict[str, qemu.Vm] = {}
        self.hubs: list[subprocess.Popen] = []
        self.kernels_used: dict[str, Kernel] = {}
        self.rootfs: Any = None
        self.accel: str | None = None
        self.workdir = WORK_PARENT / f"tcplab-vm-{short_id(self.run_id)}"
        self.timings: dict[str, float] = {}
        self.pool: VmPool | None = None  # booted VMs kept across this command's runs
        self.pool_key: str | None = None

    def use_pool(self, pool: VmPool, key: str | None) -> None:
        """Take the VMs from ``pool`` when its kept ones match ``key`` (reuse.pool_key),
        else boot them there for the runs that follow; a None key boots as usual."""
        if key is not None:
            self.pool, self.pool_key = pool, key
        else:
            pool.discard()

    def _pooled(self) -> bool:
        """The pool holds this run's VMs: they outlive the run."""
        pool = getattr(self, "pool", None)
        return pool is not None and pool.booted is not None \
            and pool.booted.vms is self.vms

    def kernel_spec(self, name: str) -> str:
        spec = next(h for h in self.lab.hosts if h.name == name)
        return spec.kernel or DEFAULT_KERNEL

    # -- checks (nothing created) ----------------------------------------------------------
    def preflight(self) -> None:
        from .kernels import check_specs

        qemu.need_tools()
        check_specs(self.kernel_spec(spec.name) for spec in self.lab.hosts)

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        from . import kernels, rootfs

        started = time.monotonic()
        if self.pool is not None:
            booted = self.pool.offer(self.pool_key)
            if booted is not None:
                return self._reuse(booted, sysctls, started)
        journal = self.pool.journal() if self.pool is not None else self.journal
        if self.pool is not None:  # the VMs are the pool's: named after it, not this run
            self.workdir = WORK_PARENT / f"tcplab-vm-{short_id(journal.run_id)}"
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
        journal.record("path", path=str(self.workdir))
        self.workdir.mkdir(mode=0o700)
        key = make_key(journal.dir, journal.run_id)
        public = key.with_suffix(".pub").read_text().split()[1]
        links = network.plan_links(self.lab, self.workdir)
        order = network.start_order(self.lab)
        t0 = time.monotonic()
        openers: dict[Path, tuple[str, Callable[[], bool], Path | None]] = {}
        for path in links.hubs:
            hub = self._start_hub(path, journal)
            openers[path] = (f"the switch of {path.name} (pid {hub.pid})",
                             lambda hub=hub: hub.poll() is None, None)
        for attempt in (1, 2):
            self._start_vms(journal, public, links, order, dict(openers))
            try:
                for spec in order:
                    qemu.wait_booted(self.vms[spec.name])
                break
            except RunError as exc:
                if attempt == 2 or not self._panicked():
                    raise
                self.log(f"      {exc}; booting the VMs again, once (under TCG a kernel can "
                         "trip over its own code patching while it boots: docs/vm.md)")
                self._stop_vms(links)
                self.timings["boot_retries"] = 1
        for spec in order:
            vm = self.vms[spec.name]
            seconds = vm.boot_seconds or 0.0
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
        for host in self.hosts.values():  # as on netns: routes via the router, its NAT table
            for argv in route_argvs(self.lab, host.spec):
                host.runner.run(argv)
            if host.spec.nat:  # loads nf_conntrack: its sysctls exist from here on
                host.runner.run(["nft", "-f", "-"], stdin=nat_ruleset(self.lab))
        boot_values: dict[str, dict[str, str | None]] = {}
        for name, host in self.hosts.items():
            wanted = dict(sysctls.get(name, {}))
            _refuse_missing(host, wanted, self.facts[name]["release"])
            if self.pool is not None:  # what a later run's reset restores
                boot_values[name] = reuse.read_boot_sysctls(host.runner, wanted)
            host.sysctls = self.apply_sysctls(host, wanted)
            read_fd_limits(host)
        self.timings["up"] = round(time.monotonic() - started, 1)
        if self.pool is not None:
            self.pool.keep(reuse.Booted(
                booted_by=self.run_id, vms=self.vms, runners=self.runners, facts=self.facts,
                info={name: host.info for name, host in self.hosts.items()},
                kernels_used=self.kernels_used, rootfs=self.rootfs, accel=self.accel,
                hubs=self.hubs, timings=dict(self.timings), boot_sysctls=boot_values,
                touched={name: set(sysctls.get(name, {})) for name in self.hosts}))
        return self.hosts

    def _start_vms(self, journal: Journal, public: str, links: network.LabLinks,
                   order: list[HostSpec],
                   openers: dict[Path, tuple[str, Callable[[], bool], Path | None]]) -> None:
        """Start every VM's qemu (journalled first), in ``order``: a connecting qemu waits
        for its link's socket, which a listening VM (or a switch: ``openers``) opens."""
        for index, spec in enumerate(order, 1):
            memory, cpus = vm_size(spec)
            config = qemu.VmConfig(
                name=object_name(journal.run_id, spec.name), host=spec.name,
                index=index, kernel=self.kernels_used[spec.name], rootfs=self.rootfs.path,
                workdir=self.workdir, labs=links.nics[spec.name], public_key=public,
                cmdline=spec.cmdline, memory_mb=memory, cpus=cpus, accel=self.accel)
            for nic in config.labs:  # a connecting qemu finds its link's socket at start
                if not nic.listen:
                    qemu.wait_link(nic.socket, *openers[nic.socket])
            journal.record("vm", name=config.name, pidfile=str(config.pidfile), host=spec.name)
            vm = qemu.start(config)
            journal.record("process", pid=vm.pid, start=vm.start_ticks, host=spec.name)
            self.vms[spec.name] = vm
            for nic in config.labs:
                if nic.listen:
                    openers[nic.socket] = (f"{spec.name}: qemu", vm.alive, config.qemu_log)

    def _panicked(self) -> bool:
        return any("Kernel panic" in qemu.read_console(vm.config.console)
                   for vm in self.vms.values())

    def _stop_vms(self, links: network.LabLinks) -> None:
        """Stop the VMs of a failed boot and clear their files for the next (the consoles
        kept as ``<host>-console-failed.log``; the switches stay)."""
        for vm in self.vms.values():
            qemu.stop(vm.pid, vm.start_ticks, vm.config.name)
            vm.proc.wait(timeout=30)
            config = vm.config
            if config.console.exists():
                config.console.rename(config.workdir / f"{config.host}-console-failed.log")
            for path in (config.overlay, config.qemu_log, config.pidfile):
                path.unlink(missing_ok=True)
            for nic in config.labs:
                if nic.socket not in links.hubs:
                    nic.socket.unlink(missing_ok=True)
        self.vms.clear()

    def _reuse(self, booted: reuse.Booted, sysctls: Mapping[str, Mapping[str, str]],
               started: float) -> dict[str, LabHost]:
        """The VMs an earlier run of this command booted, reset to what a fresh boot would
        give this run (reuse.py) and checked; nothing is booted."""
        self.vms, self.runners, self.facts = booted.vms, booted.runners, booted.facts
        self.kernels_used, self.rootfs, self.accel = booted.kernels_used, booted.rootfs, booted.accel
        self.hubs = booted.hubs
        for name, vm in self.vms.items():
            boot_id = self.runners[name].run(["cat", "/proc/sys/kernel/random/boot_id"],
                                             check=False, timeout=30).stdout.strip()
            if not vm.alive() or boot_id != self.facts[name].get("boot_id"):
                raise RunError(f"{name}: the VM that run {booted.booted_by} booted is no "
                               f"longer running its kernel ({qemu.tail(vm.config.console)})")
        drained = reuse.drain(self.runners, self.log)
        for spec in self.lab.hosts:
            name = spec.name
            info = {**booted.info[name], "vm": {**booted.info[name]["vm"], "reused": {
                "booted_by": booted.booted_by, "run_on_vms": booted.runs + 1,
                "drain_seconds": drained}}}
            host = self.hosts[name] = LabHost(spec, self.runners[name], info=info)
            wanted = dict(sysctls.get(name, {}))
            _refuse_missing(host, wanted, self.facts[name]["release"])
            write = reuse.reset_host_sysctls(host.runner, name, booted, wanted)
            host.sysctls = self.apply_sysctls(host, write)
            reuse.check_sysctls(host.runner, name, booted, wanted)
            read_fd_limits(host)
        booted.runs += 1
        self.timings = {"boot": 0.0, "drain": drained,
                        "up": round(time.monotonic() - started, 1)}
        self.log(f"      {', '.join(self.vms)}: the VMs of run {booted.booted_by} again (run "
                 f"{booted.runs} on them; sockets drained in {drained:.1f} s, sysctls reset "
                 "to a fresh boot's, checked)")
        return self.hosts

    def down(self) -> list[str]:
        """As the ssh backend's, but VMs the pool keeps for the next run stay up, and
        their SSH connections open: only this run's own journal is undone."""
        if not self._pooled():
            return super().down()
        problems = self.journal.undo(self.undo_handlers(), self.log)
        self._down = True
        return problems

    def _start_hub(self, path: Path, journal: Journal) -> subprocess.Popen:
        """The switch of a network of more than two VMs (hub.py), listening on ``path``.
        Journalled once started; it also exits by itself when the run's directory (and
        its socket) goes, so it never outlives the run."""
        from . import hub

        log = open(self.workdir / f"{path.stem}-switch.log", "wb")
        try:
            proc = subprocess.Popen([sys.executable, hub.__file__, str(path), self.run_id],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        journal.record("process", pid=proc.pid, start=process_start_time(proc.pid),
                       host=f"switch {path.name}")
        self.hubs.append(proc)
        return proc

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
        for hub in self.hubs:
            if hub.poll() is not None:
                notes.append(f"the switch of a lab network (pid {hub.pid}) exited with status "
                             f"{hub.returncode} during the run")
        return notes

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        return {**LOCAL_HANDLERS, **vm_undo_handlers()}

    def runners_reusable(self) -> bool:
        return self._pooled()  # else the VMs are gone after down()

    def end_time_wait(self) -> None:
        """Nothing to end where the VMs go with the run; kept VMs: this run's TIME_WAIT
        sockets ended at once (``ss -K``), the next run's reset checks none is left."""
        if self._pooled():
            super().end_time_wait()

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


#: Prints the names in argv[1:] that are not under /proc/sys on the host.
_MISSING = ("import os, sys; print(' '.join(k for k in sys.argv[1:] "
            "if not os.path.exists('/proc/sys/' + k.replace('.', '/'))))")


def _refuse_missing(host: LabHost, wanted: Mapping[str, str], release: str) -> None:
    """Sysctls of the lab file or profile that this VM's kernel does not have (probed, not
    looked up by version): a kernel older than the sysctl, or one built without it."""
    if not wanted:
        return
    out = host.runner.run(["python3", "-c", _MISSING, *sorted(wanted)], timeout=60).stdout
    missing = out.split()
    if missing:
        raise RunError(f"{host.name}: kernel {release} has no sysctl {', '.join(missing)} "
                       "(set by the lab file or the profile); leave it out for this kernel "
                       "or boot one that has it")


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
