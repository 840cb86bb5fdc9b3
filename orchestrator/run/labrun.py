"""Execute a plan: hosts up, sides started, the steps in order, result saved, teardown.

The phases only: the sides are in sides.py, the steps in steps.py, checkpoints in
checkpoint.py, teardown and the reported error in ending.py, the result dict in
results/build.py. Teardown is the journal's undo and
runs on success, on error, on Ctrl-C and on SIGTERM. A run that fails part-way still
saves what it measured, marked incomplete.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import faults, sysctls
from ..backends import Backend, LabHost, backend_class
from ..backends.vm.reuse import VmPool, pool_key
from ..conditions.session import LinkSession, asked_record
from ..errors import LabError, RunError
from ..journal import HostLock, Journal, state_root
from ..ledger.session import LedgerSession
from ..measure.kernel import read_slab_aliases
from ..measure.timeline import Sampler
from ..plan import Plan
from ..results import build_result, new_run_dir, write_json_atomic
from ..ui import UI
from .checkpoint import Checkpoints
from .ending import Interrupted, explained, teardown
from .sides import Sides, start_sides
from .steps import StepState, run_step


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; cleaned up", signum)


class LabRun:
    def __init__(self, plan: Plan, ui: UI, followed: bool = False,
                 pool: VmPool | None = None) -> None:
        self.plan, self.ui = plan, ui
        self.followed = followed  # another run of this command follows on the same hosts
        self.pool = pool  # VMs kept across this command's runs (backends/vm/reuse.py)
        self.results_dir = plan.options.results_dir or plan.options.root / "results"
        self.backend: Backend | None = None
        self.sides: Sides | None = None
        self.sampler: Sampler | None = None
        self.state: StepState | None = None  # what the steps share, once the sides run
        self.hosts: dict[str, LabHost] = {}
        self.events: dict[str, Any] = {}
        self.ledger: LedgerSession | None = None
        self.link: LinkSession | None = None

    def execute(self) -> Path:
        plan = self.plan
        lock = HostLock(f"{plan.scenario.name}/{plan.profile.name}",
                        wait=plan.options.lock_wait, note=self.ui.note)
        lock.acquire()  # before anything is created: a refused run leaves nothing behind
        try:
            run_dir = new_run_dir(self.results_dir, plan.scenario.name, plan.profile.name)
            try:
                journal = Journal.create(run_dir.name)
            except OSError as exc:  # nothing exists yet: no journal, no run directory
                run_dir.rmdir()
                raise RunError(f"cannot create the run's journal in {state_root()}: "
                               f"{exc.strerror}; tcplab records there what it creates so that "
                               "it can always remove it: make it writable, or set "
                               "TCPLAB_STATE_DIR to a writable directory") from None
        except BaseException:
            lock.release()
            raise
        backend = self.backend = backend_class(plan.backend)(
            plan.lab, run_dir.name, journal, plan.options.root, self.ui.line,
            family=plan.options.family)
        if self.pool is not None:  # a VM run may take the kept VMs; any other stops them
            use = getattr(backend, "use_pool", None)
            if use is not None:
                use(self.pool, pool_key(plan))
            else:
                self.pool.discard()
        old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        started, error = time.time(), None
        try:
            backend.preflight()
            self._up(run_dir)
            self._steps()
        except LabError as exc:
            error = explained(exc, self.backend)
        except KeyboardInterrupt as exc:  # Interrupted (a signal) or a plain Ctrl-C
            error = exc if isinstance(exc, Interrupted) else Interrupted(
                "interrupted; cleaned up")
        except OSError as exc:  # the run's own files (raw snapshots): a full disk, say
            error = RunError(f"cannot write the run's files in {run_dir}: {exc.strerror}; "
                             "free some disk space or choose another results directory "
                             "(--results DIR)")
        finally:
            for s in old:
                signal.signal(s, signal.SIG_IGN)  # teardown must finish
            try:
                self._save(run_dir, started, error)
            finally:
                snapshots = self.state.checkpoints.snapshots if self.state else []
                if self.ledger is not None:
                    self.ledger.close()  # bpftrace first: the journal's undo would, later
                if self.link is not None:
                    self.link.close()  # the delay lines, reaped (the undo would kill them)
                teardown(backend, self.sides, snapshots, self.ui.line,
                         followed=self.followed, release_wait=self.plan.options.release_wait)
                if self.pool is not None and error is not None:
                    self.pool.discard()  # a failed run's VMs are not trusted again
                lock.release()
                for s, handler in old.items():
                    signal.signal(s, handler)
        if error is not None:
            self._incomplete_report(run_dir)
            raise error
        return run_dir

    def _save(self, run_dir: Path, started: float, error: LabError | Interrupted | None) -> None:
        """result.json, or no run directory at all: one the result could not be written
        into (a full disk) would be a partial result no command reads."""
        try:
            write_json_atomic(run_dir / "result.json", self._result(run_dir, started, error))
        except LabError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise RunError(f"{exc}; {run_dir.name} was removed"
                           + (f" (the run had already failed: {error})" if error else "")) from None

    def _incomplete_report(self, run_dir: Path) -> None:
        """report.html of a failed run, with the INCOMPLETE banner; never hides the error."""
        from ..report.html import write_report

        try:
            self.ui.line(f"report: {write_report(run_dir)} (incomplete run)")
        except Exception as exc:  # noqa: BLE001 - the run's own error is the one to show
            self.ui.line(f"note: no report.html for this incomplete run: {exc}")

    def _up(self, run_dir: Path) -> None:
        plan, backend, opts = self.plan, self.backend, self.plan.options
        assert backend is not None
        self.ui.phase("hosts", f"creating {', '.join(h.name for h in plan.lab.hosts)} "
                      f"({plan.backend})")
        sysctls.set_host_journalled(plan.global_sysctls, backend.journal, self.ui.note)
        hosts = self.hosts = backend.up(plan.host_sysctls)
        faults.pause("setup")
        pinned = sum(len(v) for v in plan.host_sysctls.values())
        self.ui.note(", ".join(f"{h.name} {h.address}" for h in hosts.values())
                     + f" · {pinned} sysctls pinned, verified")
        if plan.link is not None and plan.link_asked is not None:
            record = self.events["link"] = asked_record(plan.link_asked, plan.link,
                                                        plan.link_engine, plan.link_why)
            self.link = LinkSession(plan.link, plan.link_engine, plan.lab, backend, hosts,
                                    opts.family, self.ui.line, record)
            self.link.apply()
        kernel = backend.measured_kernel()
        # Hosts on kernels of their own (VMs, remote machines) sample them themselves.
        sides = self.sides = start_sides(backend, hosts, plan, sample=not kernel.local)
        sides.measured = {h: -offset for h, offset in backend.clock_offsets().items()}
        self.sampler = Sampler(sides.sockstat_paths(backend, hosts)).start()
        sides.hello()
        workers = sides.prepare()
        self.events["workers"] = {sides.label(h): w for h, w in workers.items()}
        if opts.ledger:
            self.ledger = LedgerSession(backend.journal, run_dir / "raw", hosts,
                                        plan.scenario.connections)
        weights = {c: sum(n for _, n in s) for c, s in plan.client_shards.items()}
        checkpoints = Checkpoints(self.ui, backend, hosts, kernel, sides, run_dir / "raw",
                                  opts.stall, self.sampler, self.ledger, weights)
        checkpoints.link = self.link
        self.state = StepState(plan, self.ui, backend, hosts, sides, checkpoints, self.events,
                               plan.scenario.expectations())

    def _steps(self) -> None:
        assert self.state is not None and self.sides is not None
        self.ui.phase("ramp", f"{self.plan.scenario.connections:,} connections over "
                      f"{len(self.plan.shards)} server port(s), {self.sides.workers('client')} "
                      "client worker(s)")
        for step in self.plan.scenario.steps:
            run_step(self.state, step)

    def _result(self, run_dir: Path, started: float, error: LabError | Interrupted | None) -> dict[str, Any]:
        backend, cps = self.backend, self.state.checkpoints if self.state else None
        kernel = backend.measured_kernel() if backend else None
        timeline = self.sampler.stop() if self.sampler else None
        if timeline and kernel and not kernel.local and self.sides and error is None:
            timeline = self.sides.timeline(timeline, kernel, self.ui.note)  # sides' samples
        return build_result(
            plan=self.plan, run_id=run_dir.name, started=started, error=error, backend=backend,
            hosts=self.hosts, snapshots=cps.snapshots if cps else [],
            checkpoints=cps.records if cps else [], events=self.events,
            aliases=cps.aliases if cps else read_slab_aliases(),
            kernel_local=kernel.local if kernel else True, timeline=timeline)


def run_plan(plan: Plan, ui: UI, on_done: Callable[[Path], None] | None = None,
             followed: bool = False, pool: VmPool | None = None) -> Path:
    run_dir = LabRun(plan, ui, followed, pool).execute()
    if on_done:
        on_done(run_dir)
    return run_dir
