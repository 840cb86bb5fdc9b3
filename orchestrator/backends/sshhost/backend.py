"""ssh backend: each lab host is a real machine (or anything running sshd) reached over SSH.

The lab file gives, per host, its lab address (where the lab's traffic goes) and how to
log in::

    hosts:
      server:
        role: server
        address: 198.18.0.2          # lab traffic goes to/from this address
        ssh: {address: 10.1.2.3, user: root, port: 22, key: ~/.ssh/lab_ed25519}

What differs from the local backends:

* Commands run through :class:`HostRunner`, an :class:`~orchestrator.ssh.SshRunner`
  that adds ``sudo -n`` for a non-root user and leaves the SSH control connection out
  of the socket counts (see :func:`filtered_sockdiag_argv`, transport.py): on a real
  host it is a TCP socket of the very kernel being measured.
* Preflight over SSH, creating nothing: python3 present, root or passwordless sudo,
  /proc/slabinfo readable, the kernel release, the lab address configured on the host.
* Sysctls are host-wide on a real host: the plan allows them only with
  ``--allow-host-sysctls``. Before a change the old values are journalled twice: in the
  run's journal here (kind ``remote_sysctl``, with how to reach the host) and in a file
  on the host (``/run/tcplab/remote/<run>-<host>.json``), so ``tcplab wipe`` restores
  them from this machine's journal, and ``tcplab wipe --lab FILE`` from the hosts' own
  files even when this machine's journal is lost (cleanup.py).
* Each host is its own kernel (hosts sharing one, found by ``/proc/sys/kernel/random/
  boot_id``, are one kernel): ``kernel_groups()`` gives one entry per machine, and every
  checkpoint snapshots each kernel's /proc/slabinfo and /proc/meminfo over SSH, so the
  result holds per-side figures (``per_kernel``).

* Any number of client hosts: they are driven in parallel with Fabric's group API
  (:class:`~.fanout.Fanout`): each host's clock offset is measured at ``up()`` and the
  per-host reads of every snapshot are done on all hosts at once (``read_hosts``). A
  router is refused by the plan: tcplab does not change forwarding, routes or NAT on
  machines it does not own.

The side script and the sock_diag summary run with ``python3 -c`` (nothing is copied).
A side process ends when its SSH channel closes (stdin EOF; its workers die with it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ... import resources
from ...errors import InputError, LabError, RunError
from ...journal import LOCAL_HANDLERS, process_start_time
from ..base import Backend, LabHost
from ..common import close_runners, peer_addresses
from .cleanup import REMOTE_DIR, REMOTE_JOURNAL, make_remote_undo
from .fanout import Fanout
from .transport import HostRunner, Target

#: Facts for preflight: {"uid", "release", "boot_id", "slabinfo", "address_local", ...}.
PROBE = r"""
import json, os, platform, resource, socket, sys
r = {"uid": os.geteuid(), "release": platform.release(), "version": platform.version(),
     "machine": platform.machine(), "python": sys.version.split()[0],
     "python_version": list(sys.version_info[:3]), "page_size": os.sysconf("SC_PAGE_SIZE"),
     "hostname": socket.gethostname(), "slabinfo": os.access("/proc/slabinfo", os.R_OK),
     "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}
try:
    r["boot_id"] = open("/proc/sys/kernel/random/boot_id").read().strip()
except OSError:
    r["boot_id"] = None
addr = sys.argv[1]
try:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.bind((addr, 0))
    s.close()
    r["address_local"] = True
except OSError as exc:
    r["address_local"] = False
    r["address_error"] = str(exc)
def interface_of(addr):
    # the interface holding the lab address: /proc/net/if_inet6 (IPv6), SIOCGIFADDR (IPv4)
    if ":" in addr:
        want = socket.inet_pton(socket.AF_INET6, addr).hex()
        for line in open("/proc/net/if_inet6"):
            f = line.split()
            if f[0] == want:
                return f[5]
        return None
    import fcntl, struct
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                got = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(got[20:24]) == addr:
                return name
    finally:
        probe.close()
    return None
try:
    r["lab_interface"] = interface_of(addr)
except (OSError, ValueError):
    r["lab_interface"] = None
print(json.dumps(r))
"""


#: Reads the current value of each sysctl named in argv[1] (a JSON list).
READ_SYSCTLS = r"""
import json, sys
out = {}
for name in json.loads(sys.argv[1]):
    try:
        out[name] = " ".join(open("/proc/sys/" + name.replace(".", "/")).read().split())
    except OSError:
        out[name] = None
print(json.dumps(out))
"""


def probe(runner: HostRunner, address: str, lab_path: Any = "the lab file") -> dict[str, Any]:
    """Preflight facts of one host (see PROBE). Raises InputError with the fix."""
    where = f"{runner.host} ({runner.where})"
    try:
        runner.connect()
    except RunError as exc:
        raise InputError(f"{exc} (hosts.{runner.host}.ssh in {lab_path})") from None
    runner.sudo = False  # as the user first: is it root?
    first = runner.run(["python3", "-c", PROBE, address], check=False, timeout=60)
    if first.exit_code == 127 or "python3: not found" in first.stderr:
        raise InputError(f"{where}: python3 is not installed there (the side script needs "
                         "it): apt-get install python3-minimal on that host")
    if not first.ok:
        raise InputError(f"{where}: the preflight probe failed: {first}")
    facts = json.loads(first.stdout)
    check_python(where, facts)
    if facts["uid"] != 0:
        check = runner.run(["sudo", "-n", "true"], check=False, timeout=30)
        if not check.ok:
            raise InputError(
                f"{where}: logged in as {runner.user} (uid {facts['uid']}) without "
                "passwordless sudo; /proc/slabinfo and sysctls need root: log in as root "
                f"or allow `sudo -n` for {runner.user} (NOPASSWD)")
        runner.sudo = True
        facts = json.loads(runner.run(["python3", "-c", PROBE, address], timeout=60).stdout)
        facts["sudo"] = True
    if not facts["slabinfo"]:
        raise InputError(f"{where}: /proc/slabinfo is not readable even as root (a kernel "
                         "without SLUB statistics?); this host cannot be measured")
    if not facts["address_local"]:
        raise InputError(f"{where}: the lab address {address} is not configured on the host "
                         f"({facts.get('address_error')}); set hosts.{runner.host}.address to "
                         "one of its addresses")
    return facts


OLDEST_PYTHON = (3, 7)  # the side script's syntax and standard library (docs/ssh.md)


def check_python(where: str, facts: dict[str, Any]) -> None:
    """Refuse a host whose python3 is older than the side script needs."""
    version = tuple(facts.get("python_version") or ())
    if version and version < OLDEST_PYTHON:
        raise InputError(f"{where}: python3 is {facts['python']}, the side script needs "
                         f"{'.'.join(map(str, OLDEST_PYTHON))} or newer: install a newer "
                         "python3 on that host")


class SshBackend(Backend):
    name = "ssh"
    #: sysctls on these hosts outlive the run: journal them there and restore after.
    journal_sysctls = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runners: dict[str, HostRunner] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        self._down = False
        self._kernel_set: Any = None
        self.fanout: Fanout | None = None  # every host at once (Fabric's ThreadingGroup)

    # -- where each host is ---------------------------------------------------------------
    def targets(self) -> dict[str, tuple[Target, int]]:
        """{host: (login target, sshd port inside the host)} from the lab file."""
        out = {}
        for spec in self.lab.hosts:
            if spec.ssh is None:
                raise InputError(f"{self.lab.path}: hosts.{spec.name}.ssh is missing; the ssh "
                                 "backend needs {address, user, port, key} for every host")
            target = Target.of(spec.ssh)
            out[spec.name] = (target, target.port)
        return out

    def make_runner(self, name: str, target: Target, ctl_port: int) -> HostRunner:
        return HostRunner(name, target, ctl_port=ctl_port,
                          peer=",".join(peer_addresses(self.lab, name)))

    # -- checks -----------------------------------------------------------------------------
    def preflight(self) -> None:
        """Log in to every host and probe it. The plan's check (no journal: nothing of a
        run exists yet) closes its connections; a run keeps them for up()."""
        try:
            for name, (target, ctl_port) in self.targets().items():
                runner = self.runners.get(name) or self.make_runner(name, target, ctl_port)
                self.runners[name] = runner
                self.facts[name] = probe(runner, self.lab_address(name), self.lab.path)
        except BaseException:
            close_runners(self.runners.values())
            raise
        if self.journal is None:
            close_runners(self.runners.values())

    def lab_address(self, name: str) -> str:
        return next(h.address for h in self.lab.hosts if h.name == name)

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        if not self.facts:
            self.preflight()
        for spec in (self.lab.host("server"), *self.lab.of("client")):
            runner = self.runners[spec.name]
            info = {"ssh": {"address": runner.target.address, "user": runner.target.user,
                            "port": runner.target.port},
                    "kernel": self.facts[spec.name]["release"],
                    "boot_id": self.facts[spec.name].get("boot_id"),
                    "lab_interface": self.facts[spec.name].get("lab_interface")}
            self.hosts[spec.name] = LabHost(spec, runner, info=info)
        self.measure_clocks()
        for _label, (_, names) in self.kernel_groups().items():
            if len(names) > 1:
                self.log(f"      {' and '.join(names)} share one kernel (same boot_id "
                         f"{self.facts[names[0]].get('boot_id')}): the figures are both ends "
                         "together, not per side")
        for name, host in self.hosts.items():
            wanted = dict(sysctls.get(name, {}))
            if wanted and self.journal_sysctls:
                self.journal_remote_sysctls(host, wanted)
            host.sysctls = self.apply_sysctls(host, wanted)
        return self.hosts

    def measure_clocks(self) -> None:
        """Every host's clock against this machine's, all hosts at once (Fanout): kept in
        the host's metadata (``clock``) and used to put the sides' timelines and each
        snapshot's per-host moments on this machine's clock."""
        self.fanout = Fanout([self.runners[name] for name in self.hosts])
        clocks = self.fanout.measure_clocks()
        for name, clock in clocks.items():
            self.hosts[name].info["clock"] = clock
        self.log("      clocks: " + ", ".join(
            f"{name} {c['offset_s'] * 1000:+.1f} ms (±{c['error_s'] * 1000:.1f})"
            for name, c in clocks.items()) + " against this machine")

    def clock_offsets(self) -> dict[str, float]:
        return {name: c["offset_s"] for name, c in (self.fanout.clocks if self.fanout
                                                    else {}).items()}

    def read_hosts(self, names: list[str], summary_argv: list[str], serial_limit: int
                   ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]] | None:
        """A snapshot's per-host reads on every host at once (see Fanout.snapshot); None
        where the hosts were not measured as a group (a subclass's up(): the vm backend),
        and each host is read on its own."""
        if self.fanout is None:
            return None
        return self.fanout.snapshot(names, summary_argv, serial_limit)

    def journal_remote_sysctls(self, host: LabHost, wanted: Mapping[str, str]) -> None:
        """Old values journalled here and on the host, before anything changes there."""
        runner = host.runner
        old = json.loads(runner.run(["python3", "-c", READ_SYSCTLS, json.dumps(sorted(wanted))],
                                    timeout=60).stdout)
        missing = sorted(k for k, v in old.items() if v is None)
        if missing:
            raise RunError(f"{host.name}: no such sysctl on its kernel "
                           f"({self.facts[host.name]['release']}): {', '.join(missing)}")
        path = f"{REMOTE_DIR}/{self.run_id}-{host.name}.json"
        pid = os.getpid()
        record = {"run": self.run_id, "host": host.name, "old": old, "new": dict(wanted),
                  "owner": {"hostname": socket.gethostname(), "pid": pid,
                            "start": process_start_time(pid)},
                  "created": time.time()}
        self.journal.record("remote_sysctl", host=host.name, target=runner.target.to_dict(),
                            ctl_port=getattr(runner, "ctl_port", runner.target.port),
                            path=path, old=old, run=self.run_id)
        runner.run(["python3", "-c", REMOTE_JOURNAL, "save", path, json.dumps(record)],
                   timeout=60)
        changes = ", ".join(f"{k} {old[k]} -> {v}" for k, v in sorted(wanted.items())
                            if old[k] != v)
        if changes:
            self.log(f"      {host.name}: host sysctls {changes} (journalled in {path}; "
                     "restored at the end)")

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        handlers = dict(LOCAL_HANDLERS)
        handlers["remote_sysctl"] = make_remote_undo(self.runners)
        return handlers

    def down(self) -> list[str]:
        """Undo, then close the SSH connections (the undo of remote sysctls uses them).

        Hosts that go away in the undo (VMs: ``runners_reusable`` False) have their
        connections closed first: no half-dead connection to a stopped VM.
        """
        reusable = self.runners_reusable()
        if not reusable:
            close_runners(self.runners.values())
        problems = super().down()
        self._down = True
        if reusable:
            close_runners(self.runners.values())
        return problems

    def end_time_wait(self) -> None:
        """Close this run's own TIME_WAIT sockets (lab address to lab address) at once.

        On a real host a TIME_WAIT socket holds its memory for 60 s: a next run's baseline
        would count it, and it would vanish during that run. ``ss -K`` (sock_diag destroy,
        kernels with CONFIG_INET_DIAG_DESTROY) ends them; best effort: where it cannot,
        the release wait covers them.
        """
        for name, runner in self.runners.items():
            for peer in peer_addresses(self.lab, name):
                try:
                    runner.run(["ss", "-K", "-tn", "state", "time-wait", "src",
                                self.lab_address(name), "dst", peer], check=False, timeout=60)
                except LabError as exc:
                    self.log(f"      {name}: could not end this run's TIME_WAIT sockets "
                             f"({exc})")
                    break

    # -- on the hosts ---------------------------------------------------------------------
    def side_command(self, host: LabHost) -> list[str]:
        return ["python3", "-c", resources.side_program(), "--run", self.run_id]

    def netns_pid(self, host: LabHost, side: Any) -> int | None:
        return None  # not on this machine: no sockstat sampling from here

    def kernel_groups(self) -> dict[str, tuple[Any, list[str]]]:
        """One kernel per machine: hosts with the same boot_id share one (and its runner)."""
        groups: dict[str, list[str]] = {}
        for name in self.hosts or {h.name: None for h in self.lab.hosts}:
            boot = (self.facts.get(name) or {}).get("boot_id") or name
            groups.setdefault(boot, []).append(name)
        out: dict[str, tuple[Any, list[str]]] = {}
        for names in groups.values():
            label = names[0] if len(names) == 1 else "+".join(names)
            out[label] = (self.runners.get(names[0]), names)
        return out

    def measured_kernel(self) -> Any:
        """A KernelSet over every measured kernel (made once: it caches each kernel's
        SLUB aliases); an empty one once the kernels went away with the run."""
        from ...measure.kernel import KernelSet, RemoteKernel

        if self._down and not self.runners_reusable():
            return KernelSet([])  # the kernels are gone with the run: nothing to wait for
        groups = self.kernel_groups()
        if self._kernel_set is None or [(k.label, k.runner) for k in self._kernel_set.kernels] \
                != [(label, runner) for label, (runner, _) in groups.items()]:
            self._kernel_set = KernelSet([
                RemoteKernel(runner, label, names,
                             (self.facts.get(names[0]) or {}).get("release", ""),
                             (self.facts.get(names[0]) or {}).get("page_size"))
                for label, (runner, names) in groups.items()])
        return self._kernel_set

    def runners_reusable(self) -> bool:
        """Real hosts outlive the run: their kernels can still be read after down()."""
        return True

    def metadata(self) -> dict[str, Any]:
        kernels = {}
        for label, (_, names) in self.kernel_groups().items():
            f = self.facts.get(names[0], {})
            kernels[label] = {"hosts": names, "release": f.get("release"),
                              "version": f.get("version"), "machine": f.get("machine"),
                              "boot_id": f.get("boot_id")}
            known = getattr(self._kernel_set, "known_aliases", {})
            if label in known:  # this kernel's SLUB merges (metadata.slab_aliases: the union)
                kernels[label]["slab_aliases"] = known[label]
        out: dict[str, Any] = {"backend": self.name, "image": None, "kernels": kernels}
        releases = sorted({str(k["release"]) for k in kernels.values()})
        if len(releases) == 1:  # the measured kernel (this machine's is not measured)
            k = next(iter(kernels.values()))
            out["kernel"] = {"release": k["release"], "version": k["version"],
                             "machine": k["machine"]}
        elif releases:
            out["kernel"] = {"release": " / ".join(releases), "version": None,
                             "machine": next(iter(kernels.values()))["machine"]}
        return out
