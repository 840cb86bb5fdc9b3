"""Booted VMs kept across the runs of one command, and the reset between two runs.

``SCENARIO="idle s2c"``, several profiles or a sysctl sweep on one kernel: booting a
pair of TCG VMs costs 20-60 s, a run at N=2,000 about as much again. A :class:`VmPool`
lets consecutive runs with the same VMs (same hosts, kernels, sizes, command line,
address family; no router, no link conditions, no ledger: see :func:`pool_key`) boot
once. The VMs, their working directory and the SSH key are journalled in the pool's own
journal (``vmpool-...``), not a run's: a run's teardown leaves them running, the pool's
close (end of the command, a failed run, Ctrl-C, SIGTERM) stops them, and `tcplab wipe`
finds them like any run's.

Before a later run uses the VMs, :func:`reset` makes them what a fresh boot would give
that run, and checks it:

* every VM still runs (its qemu alive, its kernel the one that booted: same boot_id);
* no TCP socket is left but the control network's (port 22): the previous run's sides
  are gone with their SSH channels, their connections' TIME-WAIT and orphaned FIN-WAIT
  sockets are ended with ``ss -K`` (sock_diag destroy, built into Debian's kernels),
  then the count must reach 0;
* the sysctls: every key an earlier run set and this one does not goes back to its value
  at boot, this run's are applied, and both are read back;
* the slab baseline: the previous run's teardown already waited for its kernel to free
  the run's objects (``followed``), and each run takes its own baseline checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import RunError
from ...journal import LOCAL_HANDLERS, Journal
from ...runner import Runner
from ..sshhost.backend import READ_SYSCTLS

#: The VM's TCP sockets by state, from /proc/net/tcp and tcp6, but for those of port 22
#: (sshd and tcplab's own SSH connections: the control network). Nothing else runs in a
#: lab VM, so every other socket is a run's. Standard library only: it runs in the VM.
#: Other files in the same format may be named in argv (tests read captured ones).
LAB_SOCKETS = r"""
import json, sys
names = {"01": "ESTAB", "02": "SYN-SENT", "03": "SYN-RECV", "04": "FIN-WAIT-1",
         "05": "FIN-WAIT-2", "06": "TIME-WAIT", "07": "CLOSE", "08": "CLOSE-WAIT",
         "09": "LAST-ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW-SYN-RECV"}
out = {}
for path in sys.argv[1:] or ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(path).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if len(f) < 4 or 22 in (int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)):
            continue
        state = names.get(f[3], f[3])
        out[state] = out.get(state, 0) + 1
print(json.dumps(out))
"""

#: ``ss`` filter: every TCP socket but the control network's (port 22).
NOT_CONTROL = "! ( sport = :22 or dport = :22 )"

#: How long the previous run's sockets may take to go once ``ss -K`` ended what it can
#: (TIME-WAIT lasts 60 s, an orphan in FIN-WAIT-2 tcp_fin_timeout, 60 s by default).
DRAIN_TIMEOUT_S = 75.0


def pool_key(plan: Any) -> str | None:
    """What must be equal for two runs to use the same VMs; None: this run boots its own.

    Runs with a router (its forwarding and connection-tracking state), link conditions
    (qdiscs and delay lines on the VMs' interfaces) or the allocation ledger (bpftrace in
    the VMs) always boot fresh VMs: their state is not reset here.
    """
    if plan.backend != "vm" or plan.lab.router is not None or plan.link is not None \
            or getattr(plan.options, "ledger", False):
        return None
    hosts = [(h.name, h.role, h.address, h.kernel, repr(h.vm), h.cmdline)
             for h in plan.lab.hosts]
    return json.dumps([hosts, plan.options.family])


def reset_sysctls(boot: Mapping[str, str | None], touched: Iterable[str],
                  wanted: Mapping[str, str]) -> dict[str, str]:
    """What to write in a reused VM: each key an earlier run set and this one does not
    back to its value at boot, then this run's own (pure)."""
    back = {k: boot[k] for k in touched if k not in wanted and boot.get(k) is not None}
    return {**back, **wanted}  # type: ignore[dict-item]


def drift(values: Mapping[str, str | None], boot: Mapping[str, str | None],
          touched: Iterable[str], wanted: Mapping[str, str]) -> dict[str, tuple[Any, Any]]:
    """Keys whose value read back is not what a fresh boot with ``wanted`` gives:
    key -> (found, expected) (pure)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(touched) | set(wanted)):
        expected = wanted.get(key, boot.get(key))
        if values.get(key) != expected:
            out[key] = (values.get(key), expected)
    return out


@dataclass
class Booted:
    """VMs booted by one run of the command, as the next run takes them over."""

    booted_by: str  # the run id that booted them
    vms: dict[str, Any]  # host -> qemu.Vm
    runners: dict[str, Any]  # host -> HostRunner (SSH connections kept open)
    facts: dict[str, dict[str, Any]]
    info: dict[str, dict[str, Any]]  # host -> LabHost.info at boot
    kernels_used: dict[str, Any]
    rootfs: Any
    accel: str | None
    hubs: list[Any]
    timings: dict[str, float]
    boot_sysctls: dict[str, dict[str, str | None]]  # host -> key -> value at boot
    touched: dict[str, set[str]] = field(default_factory=dict)  # host -> keys ever set
    runs: int = 1  # runs that used these VMs so far


class VmPool:
    """The booted VMs of one command, handed from run to run while their key matches."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.key: str | None = None
        self.booted: Booted | None = None
        self._journal: Journal | None = None

    def journal(self) -> Journal:
        """The pool's own journal (made on first use): the VMs, their directory, the key."""
        if self._journal is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self._journal = Journal.create(f"vmpool-{stamp}-{os.getpid()}")
        return self._journal

    def offer(self, key: str | None) -> Booted | None:
        """The VMs for a run whose pool key is ``key``: the kept ones if they match, else
        None (and the kept ones, if any, are stopped first)."""
        if self.booted is not None and key == self.key:
            return self.booted
        self.discard()
        self.key = key
        return None

    def keep(self, booted: Booted) -> None:
        self.booted = booted

    def discard(self) -> list[str]:
        """Stop the kept VMs and remove what the pool created (journal undo)."""
        from ..common import close_runners
        from .qemu import undo_vm

        problems: list[str] = []
        if self.booted is not None:
            close_runners(self.booted.runners.values())
        if self._journal is not None:
            problems = self._journal.undo({**LOCAL_HANDLERS, "vm": undo_vm}, self.log)
            if problems:
                self.log(f"cleanup left problems; run `tcplab wipe` ({problems[0]})")
        self.booted, self._journal, self.key = None, None, None
        return problems

    close = discard


def lab_sockets(runner: Runner) -> dict[str, int]:
    """A VM's TCP sockets but the control network's, by state."""
    out = runner.run(["python3", "-c", LAB_SOCKETS], timeout=60).stdout
    return {k: int(v) for k, v in json.loads(out).items()}


def end_sockets(runner: Runner) -> None:
    """``ss -K``: end every TCP socket of the VM but the control network's (best effort:
    a socket it cannot end is waited for by :func:`drain`)."""
    runner.run(["ss", "-K", "-tan", NOT_CONTROL], check=False, timeout=60)


def drain(runners: Mapping[str, Runner], log: Callable[[str], None],
          timeout: float = DRAIN_TIMEOUT_S, interval: float = 1.0) -> float:
    """End the previous run's sockets in every VM and wait until none is left; returns
    the seconds it took. Raises RunError naming what stayed."""
    started = time.monotonic()
    for runner in runners.values():
        end_sockets(runner)
    said = False
    while True:
        left = {name: lab_sockets(runner) for name, runner in runners.items()}
        left = {name: states for name, states in left.items() if states}
        if not left:
            return round(time.monotonic() - started, 2)
        shown = "; ".join(f"{name} " + ", ".join(f"{s} {n:,}" for s, n in sorted(st.items()))
                          for name, st in sorted(left.items()))
        if time.monotonic() - started > timeout:
            raise RunError(f"the reused VMs still hold the previous run's sockets after "
                           f"{timeout:.0f} s ({shown}); this run would count them: run the "
                           "scenarios in separate commands")
        if not said:
            log(f"      waiting for the previous run's sockets to go ({shown})")
            said = True
        time.sleep(interval)


def reset_host_sysctls(runner: Runner, host: str, booted: Booted,
                       wanted: Mapping[str, str]) -> dict[str, str]:
    """Restore and apply (see :func:`reset_sysctls`), read back, check (:func:`drift`).
    Returns what to apply through the backend (which reads every net.* value back)."""
    boot = booted.boot_sysctls.setdefault(host, {})
    touched = booted.touched.setdefault(host, set())
    # keys no earlier run set: their value at boot is their value now
    boot.update(read_boot_sysctls(runner, (k for k in wanted if k not in boot)))
    return reset_sysctls(boot, touched, wanted)


def check_sysctls(runner: Runner, host: str, booted: Booted,
                  wanted: Mapping[str, str]) -> None:
    """After the apply: every key an earlier run set at its boot value or this run's,
    read back; then this run's keys count as touched."""
    boot = booted.boot_sysctls.get(host, {})
    touched = booted.touched.setdefault(host, set())
    keys = sorted(touched | set(wanted))
    values = json.loads(runner.run(["python3", "-c", READ_SYSCTLS, json.dumps(keys)],
                                   timeout=60).stdout) if keys else {}
    bad = drift(values, boot, touched, wanted)
    if bad:
        detail = "; ".join(f"{k}: {got!r}, expected {want!r}" for k, (got, want) in bad.items())
        raise RunError(f"{host}: the reused VM's sysctls are not back to a fresh boot's: "
                       f"{detail}")
    touched.update(wanted)


def read_boot_sysctls(runner: Runner, keys: Iterable[str]) -> dict[str, str | None]:
    """The values of ``keys`` as the VM booted with them (before any run set them)."""
    keys = sorted(keys)
    if not keys:
        return {}
    return json.loads(runner.run(["python3", "-c", READ_SYSCTLS, json.dumps(keys)],
                                 timeout=60).stdout)
