"""A run's link: applied on the lab hosts once they are up, read at every checkpoint,
recorded in the result.

The hosts' namespaces (containers, VMs) carry everything netem needs and the fallback's
NFQUEUE rules, so those go away with the hosts. The delay line processes run on this
machine inside a lab namespace: each is journalled (pid and start time) as soon as it
exists, so teardown, Ctrl-C, SIGTERM and ``tcplab wipe`` stop it. On the vm backend
they run inside the VMs instead (invm.py) and die with them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import resources
from ..errors import LabError, RunError
from ..journal import process_start_time
from ..runner import LocalRunner, Runner
from . import fallback, invm, netem
from .link import Link
from .placement import Attachment, attachments, where_text

if TYPE_CHECKING:
    from ..backends import Backend, LabHost
    from ..config import Lab

READY_TIMEOUT_S = 15.0
SEED_BASE = 1000  # the delay line's random seed for direction i: SEED_BASE + i (recorded)


def asked_record(asked: Link, sized: Link, engine: str, why: str) -> dict[str, Any]:
    """What the result records before anything is applied (a run that fails early too)."""
    return {"asked": asked.to_dict(), "link": sized.to_dict(), "engine": engine,
            "engine_why": why, "hold_limit": sized.hold_limit(), "applied": []}


class LinkSession:
    """Applies one link (already sized: ``Link.sized()``) with one engine on a lab."""

    def __init__(self, link: Link, engine: str, lab: Lab, backend: Backend,
                 hosts: Mapping[str, LabHost], family: str, log: Callable[[str], None],
                 record: dict[str, Any]) -> None:
        self.link, self.engine, self.lab = link, engine, lab
        self.backend, self.hosts, self.family, self.log = backend, hosts, family, log
        self.record = record  # asked_record(): "applied" is filled in as each direction is
        self.files = Path(backend.journal.dir)
        self.devices: dict[Attachment, str] = {}
        self.pids: dict[Attachment, int] = {}  # the delay line of each direction (fallback)
        self.remote: dict[Attachment, Runner] = {}  # the delay lines inside VMs (invm.py)
        self.procs: list[subprocess.Popen] = []

    # -- applying -------------------------------------------------------------------------
    def apply(self) -> None:
        for index, att in enumerate(attachments(self.lab)):
            runner = self.backend.link_runner(self.hosts[att.host])
            dev = self._device(runner, att)
            self.devices[att] = dev
            entry: dict[str, Any] = {**att.to_dict(), "dev": dev}
            if self.engine == "netem":
                entry["how"] = self._netem(runner, att, dev)
            elif isinstance(runner, LocalRunner):
                entry["how"] = self._fallback(runner, att, dev, SEED_BASE + index)
                entry["seed"] = SEED_BASE + index
            else:
                entry.update(self._fallback_in_vm(runner, att, dev, SEED_BASE + index))
            self.record["applied"].append(entry)
        self.record["where"] = where_text(self.lab)
        self.log(f"      link {self.link.describe()} · {self.engine} "
                 f"({self.record['engine_why']}) · {self.record['where']}")

    def _device(self, runner: Runner, att: Attachment) -> str:
        """The interface carrying the host's address there (names differ by backend)."""
        out = runner.run(["ip", "-o", "addr", "show", "to", att.address], timeout=30).stdout
        words = out.split()
        if len(words) < 2:
            raise RunError(f"{att.host}: no interface has the lab address {att.address}; "
                           "cannot apply the link there")
        return words[1].split("@")[0]

    def _netem(self, runner: Runner, att: Attachment, dev: str) -> str:
        argvs = (netem.forward_argvs(dev, self.link) if att.hook == "forward"
                 else netem.ingress_argvs(dev, self.link))
        for argv in argvs:
            result = runner.run(argv, check=False, timeout=30)
            if not result.ok:
                release = runner.run(["uname", "-r"], check=False).stdout.strip() or "?"
                raise RunError(
                    f"{att.host}: `{' '.join(argv)}` failed ({result.stderr.strip()[-160:]}); "
                    f"the host's kernel ({release}) needs sch_netem"
                    + ("" if att.hook == "forward" else ", ifb, act_mirred and cls_u32")
                    + " for link conditions: use a kernel that has them, or a backend on "
                    "this machine (netns, docker) where the delay line stands in")
        if att.hook == "forward":
            return f"netem at the root of {dev} (what the router sends out there)"
        return f"ingress of {dev} redirected to {netem.IFB} (ifb) with netem at its root"

    def _fallback_in_vm(self, runner: Runner, att: Attachment, dev: str,
                        seed: int) -> dict[str, Any]:
        """The delay line inside the host's VM (invm.py): dies with the VM, so nothing is
        journalled here; the pid in the VM is recorded."""
        if getattr(self.backend, "name", "") != "vm":
            raise RunError(f"{att.host}: the delay line runs on this machine or inside a lab "
                           "VM only")
        program = resources.path(f"scenarios/{fallback.SCRIPT}").read_text()
        pid = invm.start(runner, program, att, dev, self.link, self.family, seed)
        self.pids[att] = pid
        self.remote[att] = runner
        return {"how": invm.describe(att, dev), "seed": seed,
                "process": {"pid": pid, "where": f"inside the {att.host} VM (dies with it)"}}

    def _fallback(self, runner: LocalRunner, att: Attachment, dev: str, seed: int) -> str:
        program = self.files / fallback.SCRIPT
        if not program.exists():
            shutil.copyfile(resources.path(f"scenarios/{fallback.SCRIPT}"), program)
        argv = [*runner.prefix, *fallback.delayline_argv(program, att, self.link, self.files,
                                                          seed)]
        log = fallback.log_path(self.files, att).open("w")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        self.backend.journal.record("process", pid=proc.pid,
                                    start=process_start_time(proc.pid), host=att.host,
                                    what="delayline")
        self.pids[att] = proc.pid
        self.procs.append(proc)
        self._await_ready(proc, att)
        for argv_rule in fallback.rule_argvs(att, dev, self.family):
            runner.run(argv_rule, timeout=30)
        chain = "FORWARD -o" if att.hook == "forward" else "PREROUTING -i"
        return f"delay line on NFQUEUE {att.queue_num} (iptables mangle {chain} {dev})"

    def _await_ready(self, proc: subprocess.Popen, att: Attachment) -> None:
        ready = fallback.ready_path(self.files, att)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                try:
                    tail = fallback.log_path(self.files, att).read_text().strip()
                except OSError:
                    tail = ""
                state = (f"exited with {proc.returncode}" if proc.returncode is not None
                         else f"not ready after {READY_TIMEOUT_S:.0f} s")
                raise RunError(f"{att.host}: the delay line (NFQUEUE {att.queue_num}) {state}: "
                               f"{' | '.join(tail.splitlines()[-3:]) or 'no output'}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the delay lines (they let what they hold through, write their statistics
        and exit) and reap them; the journal's undo would kill them otherwise. Those inside
        VMs are stopped there (they would die with the VM anyway)."""
        for att, runner in self.remote.items():
            try:
                invm.stop(runner, self.pids[att])
            except LabError:
                pass  # the VM or its SSH is gone: so is the delay line
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # -- reading ------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per direction (``host hook``): packets held now, dropped so far (a checkpoint's
        ``link``). On one kernel the held packets are skbs in its slab: a reader discounts
        them from the lab's figures."""
        out: dict[str, dict[str, Any]] = {}
        for att, dev in self.devices.items():
            try:
                if self.engine == "netem":
                    runner = self.backend.link_runner(self.hosts[att.host])
                    dev_of = dev if att.hook == "forward" else netem.IFB
                    text = runner.run(netem.stats_argv(dev_of), timeout=30).stdout
                    out[att.label] = netem.parse_stats(text)
                elif att in self.remote:
                    out[att.label] = invm.read_stats(self.remote[att], att, self.pids[att])
                else:
                    out[att.label] = fallback.read_stats(self.files, att, self.pids.get(att))
            except LabError as exc:
                out[att.label] = {"error": str(exc)[-200:]}
        return out
