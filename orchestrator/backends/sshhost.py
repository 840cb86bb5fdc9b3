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
  of the socket counts (see :func:`filtered_sockdiag_argv`): on a real host it is a TCP
  socket of the very kernel being measured.
* Preflight over SSH, creating nothing: python3 present, root or passwordless sudo,
  /proc/slabinfo readable, the kernel release, the lab address configured on the host.
* Sysctls are host-wide on a real host: the plan allows them only with
  ``--allow-host-sysctls``. Before a change the old values are journalled twice: in the
  run's journal here (kind ``remote_sysctl``, with how to reach the host) and in a file
  on the host (``/run/tcplab/remote/<run>-<host>.json``), so ``tcplab wipe`` restores
  them from this machine's journal, and ``tcplab wipe --lab FILE`` from the hosts' own
  files even when this machine's journal is lost.
* Each host is its own kernel (hosts sharing one, found by ``/proc/sys/kernel/random/
  boot_id``, are one kernel): ``kernels()`` gives one entry per machine, and every
  checkpoint snapshots each kernel's /proc/slabinfo and /proc/meminfo over SSH, so the
  result holds per-side figures (``per_kernel``).

The side script and the sock_diag summary run with ``python3 -c`` (nothing is copied).
A side process ends when its SSH channel closes (stdin EOF; its workers die with it).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import resources
from ..errors import InputError, LabError, RunError
from ..journal import LOCAL_HANDLERS, alive, process_start_time
from ..runner import Command
from ..ssh import SshRunner, quote
from .base import Backend, LabHost

REMOTE_DIR = "/run/tcplab/remote"
SIDE = resources.side_script()


@dataclass(frozen=True)
class Target:
    """How to log in to a lab host."""

    address: str
    user: str = "root"
    port: int = 22
    key: str = ""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Target:
        return cls(str(data["address"]), str(data.get("user", "root")),
                   int(data.get("port", 22)), str(data.get("key", "")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- programs run on the lab hosts (python3 -c, standard library only) ---------------------

#: Facts for preflight: {"uid", "release", "boot_id", "slabinfo", "address_local", ...}.
PROBE = r"""
import json, os, platform, resource, socket, sys
r = {"uid": os.geteuid(), "release": platform.release(), "version": platform.version(),
     "machine": platform.machine(), "python": sys.version.split()[0],
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
print(json.dumps(r))
"""

#: The sysctl journal on a host: ``save PATH JSON`` | ``restore PATH [VALUES]`` | ``list DIR``.
REMOTE_JOURNAL = r"""
import json, os, sys
op, path = sys.argv[1], sys.argv[2]
def write(name, value):
    with open("/proc/sys/" + name.replace(".", "/"), "w") as fh:
        fh.write(value + "\n")
if op == "save":
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(sys.argv[3])
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    print(json.dumps({"saved": path}))
elif op == "restore":
    values = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    if values is None:
        try:
            values = json.load(open(path))["old"]
        except (OSError, ValueError, KeyError):
            values = {}
    errors = {}
    for name, value in values.items():
        try:
            write(name, value)
        except OSError as exc:
            errors[name] = exc.strerror or str(exc)
    if not errors:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    print(json.dumps({"restored": sorted(values), "errors": errors}))
elif op == "list":
    out = []
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.endswith(".json"):
                try:
                    out.append(dict(json.load(open(os.path.join(path, name))),
                                    path=os.path.join(path, name)))
                except (OSError, ValueError):
                    pass
    print(json.dumps(out))
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

def filtered_sockdiag_argv(cmd: Command, ctl_port: int, peer: str) -> Command:
    """Add sockdiag's control-connection filter to a sock_diag summary command."""
    from ..measure.probes import SOCKDIAG

    if isinstance(cmd, str) or len(cmd) < 3 or list(cmd[:2]) != ["python3", "-c"]:
        return cmd
    if cmd[2] != SOCKDIAG.read_text():
        return cmd
    return [*cmd, "--skip-port", str(ctl_port), "--keep-peer", peer]


class HostRunner(SshRunner):
    """An SshRunner for a lab host: ``sudo -n`` for a non-root user, and the SSH control
    connection left out of every sock_diag summary.

    ``ctl_port``: the port sshd listens on *inside* the host (the local port of the
    control connection there); ``peer``: the other lab host's address (a socket to it on
    that port is lab traffic, kept).
    """

    def __init__(self, host: str, target: Target, *, ctl_port: int | None = None,
                 peer: str = "", sudo: bool | None = None, **kwargs: Any) -> None:
        super().__init__(host, target.address, target.key, user=target.user, port=target.port,
                         **kwargs)
        self.target = target
        self.ctl_port = target.port if ctl_port is None else ctl_port
        self.peer = peer
        self.sudo = (target.user != "root") if sudo is None else sudo

    def command(self, cmd: Command) -> str:
        if self.peer:
            cmd = filtered_sockdiag_argv(cmd, self.ctl_port, self.peer)
        text = quote(cmd)
        return f"sudo -n -- sh -c {shlex.quote(text)}" if self.sudo else text


def probe(runner: HostRunner, address: str) -> dict[str, Any]:
    """Preflight facts of one host (see PROBE). Raises InputError with the fix."""
    where = f"{runner.host} ({runner.where})"
    try:
        runner.connect()
    except RunError as exc:
        raise InputError(f"{exc}; check hosts.{runner.host}.ssh in the lab file") from None
    runner.sudo = False  # as the user first: is it root?
    first = runner.run(["python3", "-c", PROBE, address], check=False, timeout=60)
    if first.exit_code == 127 or "python3: not found" in first.stderr:
        raise InputError(f"{where}: python3 is not installed there (the side script needs "
                         "it): apt-get install python3-minimal on that host")
    if not first.ok:
        raise InputError(f"{where}: the preflight probe failed: {first}")
    facts = json.loads(first.stdout)
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
        peer = next(h.address for h in self.lab.hosts if h.name != name)
        return HostRunner(name, target, ctl_port=ctl_port, peer=peer)

    # -- checks -----------------------------------------------------------------------------
    def preflight(self) -> None:
        for name, (target, ctl_port) in self.targets().items():
            runner = self.runners.get(name) or self.make_runner(name, target, ctl_port)
            self.runners[name] = runner
            self.facts[name] = probe(runner, self.lab_address(name))

    def lab_address(self, name: str) -> str:
        return next(h.address for h in self.lab.hosts if h.name == name)

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        if not self.facts:
            self.preflight()
        for spec in (self.lab.host("server"), self.lab.host("client")):
            runner = self.runners[spec.name]
            info = {"ssh": {"address": runner.target.address, "user": runner.target.user,
                            "port": runner.target.port},
                    "kernel": self.facts[spec.name]["release"],
                    "boot_id": self.facts[spec.name].get("boot_id")}
            self.hosts[spec.name] = LabHost(spec, runner, info=info)
        for name, host in self.hosts.items():
            wanted = dict(sysctls.get(name, {}))
            if wanted and self.journal_sysctls:
                self.journal_remote_sysctls(host, wanted)
            host.sysctls = self.apply_sysctls(host, wanted)
        return self.hosts

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
        problems = super().down()
        self._down = True
        for runner in self.runners.values():
            try:
                runner.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        return problems

    # -- on the hosts ---------------------------------------------------------------------
    def side_command(self, host: LabHost) -> list[str]:
        return ["python3", "-c", SIDE.read_text(), "--run", self.run_id]

    def netns_pid(self, host: LabHost, side: Any) -> int | None:
        return None  # not on this machine: no sockstat sampling from here

    def kernels(self) -> dict[str, tuple[Any, list[str]]]:
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

    def kernel_runner(self) -> Any:
        """A probes.KernelSet over every measured kernel (made once: it caches each kernel's
        SLUB aliases); an empty one once the kernels went away with the run."""
        from ..measure.probes import KernelSet

        if self._down and not self.runners_reusable():
            return KernelSet({})  # the kernels are gone with the run: nothing to wait for
        kernels = self.kernels()
        if self._kernel_set is None or set(self._kernel_set.kernels) != set(kernels):
            releases = {label: (self.facts.get(names[0]) or {}).get("release", "")
                        for label, (_, names) in kernels.items()}
            self._kernel_set = KernelSet(kernels, releases)
        return self._kernel_set

    def runners_reusable(self) -> bool:
        """Real hosts outlive the run: their kernels can still be read after down()."""
        return True

    def metadata(self) -> dict[str, Any]:
        kernels = {}
        for label, (_, names) in self.kernels().items():
            f = self.facts.get(names[0], {})
            kernels[label] = {"hosts": names, "release": f.get("release"),
                              "version": f.get("version"), "machine": f.get("machine"),
                              "boot_id": f.get("boot_id")}
            known = getattr(self._kernel_set, "_aliases", {})
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


# --- undo and wipe ------------------------------------------------------------------------

def _runner_for(entry: dict, runners: Mapping[str, HostRunner] | None = None) -> HostRunner:
    name = entry["host"]
    if runners and name in runners:
        return runners[name]
    target = Target.of(entry["target"])
    return HostRunner(name, target, ctl_port=entry.get("ctl_port"))


def restore(runner: HostRunner, path: str, old: Mapping[str, str] | None) -> list[str]:
    """Write the old values back on the host and remove its journal file. Returns names."""
    argv = ["python3", "-c", REMOTE_JOURNAL, "restore", path]
    if old is not None:
        argv.append(json.dumps(dict(old)))
    data = json.loads(runner.run(argv, timeout=60).stdout)
    if data["errors"]:
        raise RunError(f"{runner.host}: could not restore "
                       + ", ".join(f"{k} ({v})" for k, v in data["errors"].items()))
    return list(data["restored"])


def make_remote_undo(runners: Mapping[str, HostRunner] | None = None
                     ) -> Callable[[dict], None]:
    def undo_remote_sysctl(entry: dict) -> None:
        runner = _runner_for(entry, runners)
        try:
            restore(runner, entry["path"], entry.get("old"))
        finally:
            if not runners or entry["host"] not in runners:
                runner.close()

    return undo_remote_sysctl


def remote_undo_handlers() -> dict[str, Callable[[dict], None]]:
    """For ``tcplab wipe``: journal entries of remote sysctls, restored over SSH."""
    return {"remote_sysctl": make_remote_undo()}


def wipe_remote(lab_path: Path, keep_runs: set[str]) -> list[str]:
    """``tcplab wipe --lab FILE``: restore sysctls that runs journalled on the lab's ssh hosts.

    A journal file of a run in ``keep_runs`` (live here), or whose orchestrator still runs
    on this machine, is left alone.
    """
    from ..config import load_lab

    lab = load_lab(Path(lab_path))
    messages: list[str] = []
    here = socket.gethostname()
    for spec in lab.hosts:
        if spec.ssh is None:
            continue
        runner = HostRunner(spec.name, Target.of(spec.ssh))
        try:
            try:
                runner.sudo = runner.target.user != "root"
                files = json.loads(runner.run(["python3", "-c", REMOTE_JOURNAL, "list",
                                               REMOTE_DIR], timeout=60).stdout)
            except LabError as exc:
                messages.append(f"{spec.name}: not reachable over SSH ({exc}); its sysctls "
                                "not checked")
                continue
            if not files:
                messages.append(f"{spec.name}: no journalled sysctls")
            for record in files:
                run = record.get("run", "?")
                owner = record.get("owner") or {}
                live = run in keep_runs or (
                    owner.get("hostname") == here and owner.get("pid")
                    and alive(int(owner["pid"]), owner.get("start")))
                if live:
                    messages.append(f"{spec.name}: run {run} still running; its sysctls left "
                                    "alone")
                    continue
                try:
                    names = restore(runner, record["path"], None)
                    messages.append(f"{spec.name}: restored {len(names)} sysctl(s) of run {run} "
                                    f"({', '.join(names)})")
                except LabError as exc:
                    messages.append(f"{spec.name}: run {run}: {exc}")
        finally:
            runner.close()
    return messages
