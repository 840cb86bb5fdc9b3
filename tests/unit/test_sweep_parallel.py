"""Several VM kernels of one sweep at once: how many memory allows, and the machine-wide
lock handed from the sweep to its runs (a real flock on a real file, in real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from orchestrator.commands import sweep
from orchestrator.errors import InputError
from orchestrator.journal import HostLock


def plan(*memory: int | None) -> SimpleNamespace:
    hosts = [SimpleNamespace(vm={"memory": m} if m else None) for m in memory]
    return SimpleNamespace(lab=SimpleNamespace(hosts=hosts))


def test_each_kernel_needs_its_vms_and_qemus_own_memory() -> None:
    assert sweep.kernel_memory_mb(plan(None, None)) == 2 * (1024 + 256)
    assert sweep.kernel_memory_mb(plan(4096, None)) == 4096 + 256 + 1024 + 256


@pytest.mark.parametrize(("available", "cap", "want"), [
    (24_000, None, 2),        # memory for 8: the default cap (TCG, 2 cores)
    (24_000, 6, 6),           # memory for 8, six asked for, six kernels
    (24_000, 1, 1),           # --parallel 1: one after the other
    (2048 + 2 * 2560, 6, 2),  # memory for two pairs of 1 GiB VMs beside the reserve
    (3000, 6, 1),             # not even one beside the reserve: still one at a time
])
def test_slots_from_memory(available: int, cap: int | None, want: int) -> None:
    plans = [plan(None, None) for _ in range(6)]
    assert sweep.slots(plans, cap, available_mb=available) == want


def test_never_more_slots_than_kernels() -> None:
    assert sweep.slots([plan(None, None)] * 2, 6, available_mb=64_000) == 2


CHILD = ("import sys; from orchestrator.journal import HostLock; l = HostLock('child'); "
         "l.acquire(); print('shared' if l.shared else 'own'); l.release()")


def test_a_sweeps_runs_share_its_lock_and_others_are_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "tcplab.lock"
    monkeypatch.setenv("TCPLAB_LOCK", str(path))
    sweep_lock = HostLock("kernel sweep")
    sweep_lock.acquire()
    try:
        env = dict(os.environ, TCPLAB_LOCK_FD=str(sweep_lock.fd))
        child = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                               text=True, pass_fds=(sweep_lock.fd,), check=True)
        assert child.stdout.strip() == "shared"
        # the child's release left the sweep's lock held: another run is still refused
        with pytest.raises(InputError, match="another tcplab run is measuring"):
            HostLock("other", wait=0).acquire()
        # a descriptor of another file does not stand for the lock
        other = os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT)
        monkeypatch.setenv("TCPLAB_LOCK_FD", str(other))
        with pytest.raises(InputError, match="another tcplab run is measuring"):
            HostLock("forged", wait=0).acquire()
        os.close(other)
    finally:
        sweep_lock.release()
    monkeypatch.delenv("TCPLAB_LOCK_FD")
    lock = HostLock("after")
    lock.acquire()  # released by the sweep: free again
    assert not lock.shared
    lock.release()


def _args(**kw):
    from argparse import Namespace

    base = dict(repeat=1, bundle=None, parallel=None, quiet=True, verbose=False, wait=0)
    return Namespace(**{**base, **kw})


def _vm_plan() -> SimpleNamespace:
    p = plan(None, None)
    p.backend = "vm"
    return p


@pytest.mark.parametrize(("kernels", "args", "profiles"), [
    (["6.1", "host"], _args(), [None]),                        # one VM kernel
    (["6.1", "6.12"], _args(repeat=3), [None]),                # repetitions: one at a time
    (["6.1", "6.12"], _args(), ["a", "b"]),                    # several profiles
    (["6.1", "6.12"], _args(parallel=1), [None]),              # PARALLEL=1
    (["6.1", "6.12"], _args(bundle="x.tar.gz"), [None]),       # a bundle
])
def test_sweeps_that_run_one_kernel_after_the_other(kernels, args, profiles, monkeypatch) -> None:
    from orchestrator.commands.run import _parallel

    monkeypatch.delenv("TCPLAB_LOCK_FD", raising=False)
    plans = []
    for k in kernels:
        p = _vm_plan()
        if k == "host":
            p.backend = "netns"
        plans.append(p)
    assert _parallel(args, kernels, plans, profiles) == {}
