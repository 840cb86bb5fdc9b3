"""Several VM kernels of one sweep at once (``KERNELS="5.10 6.1 6.12 host"``).

Each VM kernel's run is its own ``tcplab run`` in a child process (the same options, that
one kernel, ``--json``; with several scenarios, the child runs them all on VMs it boots
once, backends/vm/reuse.py): a child journals what it creates and cleans up on its own exit,
Ctrl-C or SIGTERM exactly like a run started by hand, so nothing here owns a VM. How
many run at once is decided from memory (``slots``): each kernel needs its VMs' memory
plus qemu's own, and this machine keeps ``RESERVE_MB`` free; ``--parallel K`` caps it.

The machine-wide lock (slab counters are global) is taken once here and handed to the
children (``TCPLAB_LOCK_FD``, see journal.HostLock): several VM runs share it, since each
VM is its own kernel and its counters are its own; a run on this machine's kernel
(``host``) still runs alone afterwards, once no VM is left.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LabError

QEMU_OVERHEAD_MB = 256  # qemu's own memory per VM beyond the guest's (TCG code cache...)
RESERVE_MB = 2048  # left to this machine
DEFAULT_CAP = 2  # TCG on 2 cores: 3 kernels (6 VMs) at once stalled every ramp (performance.md)


def mem_available_mb() -> int:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    kb = next((int(line.split()[1]) for line in text.splitlines()
               if line.startswith("MemAvailable:")), 0)
    return kb // 1024


def kernel_memory_mb(plan: Any) -> int:
    """Memory one kernel's run needs here: its VMs and qemu's overhead for each."""
    from ..backends.vm.backend import DEFAULT_MEMORY_MB

    return sum((h.vm or {}).get("memory", DEFAULT_MEMORY_MB) + QEMU_OVERHEAD_MB
               for h in plan.lab.hosts)


def slots(plans: list[Any], cap: int | None, available_mb: int | None = None) -> int:
    """How many of these VM runs fit in memory at once (at least 1, at most ``cap``)."""
    if not plans:
        return 1
    available = mem_available_mb() if available_mb is None else available_mb
    need = max(kernel_memory_mb(p) for p in plans)
    fit = max((available - RESERVE_MB) // need, 1)
    return int(max(1, min(fit, len(plans), DEFAULT_CAP if cap is None else cap)))


class Child:
    """One kernel's run in a child process; its stderr is shown line by line, prefixed."""

    def __init__(self, kernel: str, args: argparse.Namespace, lock_fd: int, width: int,
                 show: Callable[[str], None]) -> None:
        self.kernel, self.show = kernel, show
        child = argparse.Namespace(**vars(args))
        child.kernels, child.json, child.wait = kernel, True, 0
        child.stall = args.stall * width  # the VMs share the CPUs with the other kernels
        fd, name = tempfile.mkstemp(prefix="tcplab-sweep-", suffix=".pickle")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(child, fh)
        self.args_file = Path(name)
        env = dict(os.environ, TCPLAB_LOCK_FD=str(lock_fd))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.commands.sweep", name], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(lock_fd,))
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self._relay, daemon=True)
        self.reader.start()
        self.stdout = ""

    def _relay(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            if line.startswith("tcplab: error: "):
                self.errors.append(line[len("tcplab: error: "):])
            else:
                self.show(f"[{self.kernel}] {line}")

    def finish(self) -> tuple[list[Path], str | None]:
        """(its runs' directories, None), or with why it failed (the runs that completed
        are kept: a child of several scenarios may fail in one); waits for the child."""
        out, _ = self.proc.communicate()
        self.reader.join(timeout=5)
        self.args_file.unlink(missing_ok=True)
        run_dirs: list[Path] = []
        try:
            runs = json.loads(out or "{}").get("runs") or []
            run_dirs = [Path(run["result"]).parent for run in runs]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
        if self.proc.returncode == 0 and run_dirs:
            return run_dirs, None
        why = self.errors[0] if self.errors else f"its run exited with status {self.proc.returncode}"
        return run_dirs, why


def run_parallel(kernels: list[str], args: argparse.Namespace, width: int, lock_fd: int,
                 show: Callable[[str], None]) -> dict[str, tuple[list[Path], str | None]]:
    """Run each kernel's VMs in a child, ``width`` at a time; kernel -> (run dir, error).

    Ctrl-C reaches the children from the terminal; SIGTERM sent to us alone is passed on.
    Either way every child cleans up, and then the sweep stops as interrupted.
    """
    from ..run.ending import Interrupted

    pending, running = list(kernels), []
    done: dict[str, tuple[list[Path], str | None]] = {}
    stopped: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        for child in running:
            if child.proc.poll() is None:
                child.proc.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        while pending or running:
            while pending and len(running) < width and not stopped:
                running.append(Child(pending.pop(0), args, lock_fd, width, show))
            for child in [c for c in running if c.proc.poll() is not None]:
                running.remove(child)
                done[child.kernel] = child.finish()
            if stopped and not running:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        stopped.append(signal.SIGINT)
        for child in running:  # the terminal sent it to them too; wait for their cleanup
            child.finish()
    finally:
        signal.signal(signal.SIGTERM, old)
    if stopped:
        raise Interrupted("interrupted; cleaned up", stopped[0])
    return done


def _child_main(args_file: str) -> int:
    """A child's whole life: ``tcplab run`` of one kernel, errors as the CLI shows them."""
    from ..cli import _one_line
    from .run import cmd_run

    with open(args_file, "rb") as fh:
        args = pickle.load(fh)
    try:
        return cmd_run(args, print)
    except LabError as exc:
        print(f"tcplab: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tcplab: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
