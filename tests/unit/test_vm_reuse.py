"""Reusing booted VMs across the runs of one command: which runs may, and the reset between
two runs (sockets drained, sysctls back to a fresh boot's). A fake VM stands for the
guest: its sockets and sysctls are plain data the commands change like the kernel would."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.backends.vm import reuse
from orchestrator.config import HostSpec
from orchestrator.errors import RunError
from orchestrator.runner import Command, LineChannel, Result, Runner

DATA = Path(__file__).resolve().parents[1] / "data" / "vm_reuse"


class FakeVm(Runner):
    """A lab VM: ``sockets`` by state (``ss -K`` ends those in ``killable``), ``sysctls``
    (written by the apply program unless ``frozen``), ``boot_id``."""

    def __init__(self, host: str, sockets: dict[str, int] | None = None,
                 sysctls: dict[str, str] | None = None, killable: tuple[str, ...] = (),
                 frozen: bool = False) -> None:
        self.host = host
        self.sockets = dict(sockets or {})
        self.sysctls = dict(sysctls or {})
        self.killable, self.frozen = killable, frozen
        self.written: list[dict[str, str]] = []
        self.killed = 0

    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result:
        argv = [str(c) for c in cmd]
        if argv[:2] == ["ss", "-K"]:
            assert argv[-1] == reuse.NOT_CONTROL  # never the control network's sockets
            self.killed += 1
            self.sockets = {s: n for s, n in self.sockets.items() if s not in self.killable}
            return self._ok("")
        if argv[:2] == ["python3", "-c"] and argv[2] == reuse.LAB_SOCKETS:
            return self._ok(json.dumps(self.sockets))
        if argv[:2] == ["python3", "-c"] and argv[2] == reuse.READ_SYSCTLS:
            return self._ok(json.dumps({k: self.sysctls.get(k) for k in json.loads(argv[3])}))
        raise RunError(f"{self.host}: the fake VM has no answer to {argv[:3]}")

    def write(self, wanted: dict[str, str]) -> None:
        self.written.append(dict(wanted))
        if not self.frozen:
            self.sysctls.update(wanted)

    def _ok(self, out: str) -> Result:
        return Result("fake", self.host, 0, out, "")

    def spawn(self, cmd: Command) -> LineChannel:
        raise NotImplementedError

    def stream(self, cmd: Command):
        return iter(())


# -- which runs share VMs ----------------------------------------------------------------

def _plan(kernel: str = "6.1", backend: str = "vm", router: object = None, link: object = None,
          ledger: bool = False, family: str = "ipv4", memory: int | None = None) -> SimpleNamespace:
    vm = {"memory": memory} if memory else None
    hosts = (HostSpec("server", "server", "198.18.0.2", kernel=kernel, vm=vm),
             HostSpec("client", "client", "198.18.0.3", kernel=kernel, vm=vm))
    return SimpleNamespace(backend=backend, link=link, lab=SimpleNamespace(hosts=hosts, router=router),
                           options=SimpleNamespace(family=family, ledger=ledger))


def test_runs_with_the_same_vms_share_a_key_others_do_not():
    key = reuse.pool_key(_plan())
    assert key is not None and key == reuse.pool_key(_plan())  # scenario, profile, N: free
    assert reuse.pool_key(_plan(kernel="6.12")) != key
    assert reuse.pool_key(_plan(memory=2048)) != key
    assert reuse.pool_key(_plan(family="ipv6")) != key


@pytest.mark.parametrize("plan", [_plan(backend="netns"), _plan(router=object()),
                                  _plan(link=object()), _plan(ledger=True)])
def test_runs_whose_state_is_not_reset_always_boot_their_own(plan):
    assert reuse.pool_key(plan) is None


# -- sysctls ---------------------------------------------------------------------------------

def test_keys_an_earlier_run_set_go_back_to_their_boot_value():
    boot = {"net.ipv4.tcp_rmem": "4096 131072 6291456", "net.core.somaxconn": "4096"}
    write = reuse.reset_sysctls(boot, {"net.ipv4.tcp_rmem"}, {"net.core.somaxconn": "1024"})
    assert write == {"net.ipv4.tcp_rmem": "4096 131072 6291456", "net.core.somaxconn": "1024"}
    # a key both runs set takes this run's value
    assert reuse.reset_sysctls(boot, {"net.core.somaxconn"}, {"net.core.somaxconn": "64"}) \
        == {"net.core.somaxconn": "64"}


def test_drift_names_each_key_not_as_a_fresh_boot_would_have_it():
    boot = {"a": "1", "b": "2"}
    assert reuse.drift({"a": "1", "b": "9"}, boot, {"a"}, {"b": "9"}) == {}
    assert reuse.drift({"a": "5", "b": "9"}, boot, {"a"}, {"b": "9"}) == {"a": ("5", "1")}
    assert reuse.drift({"a": "1", "b": "2"}, boot, {"a"}, {"b": "9"}) == {"b": ("2", "9")}


def _booted(vm: FakeVm, boot: dict[str, str], touched: set[str]) -> reuse.Booted:
    return reuse.Booted(booted_by="run-1", vms={}, runners={vm.host: vm}, facts={}, info={},
                        kernels_used={}, rootfs=None, accel="tcg", hubs=[], timings={},
                        boot_sysctls={vm.host: dict(boot)}, touched={vm.host: set(touched)})


def test_a_second_run_gets_the_first_runs_sysctls_undone_and_its_own_set():
    boot = {"net.ipv4.tcp_max_tw_buckets": "4096", "net.ipv4.tcp_fin_timeout": "60"}
    vm = FakeVm("server", sysctls={"net.ipv4.tcp_max_tw_buckets": "12274",  # run 1 set it
                                   "net.ipv4.tcp_fin_timeout": "60", "net.core.somaxconn": "4096"})
    booted = _booted(vm, boot, {"net.ipv4.tcp_max_tw_buckets"})
    wanted = {"net.core.somaxconn": "1024"}  # run 2: a key run 1 did not touch
    write = reuse.reset_host_sysctls(vm, "server", booted, wanted)
    assert write == {"net.ipv4.tcp_max_tw_buckets": "4096", "net.core.somaxconn": "1024"}
    assert booted.boot_sysctls["server"]["net.core.somaxconn"] == "4096"  # read before writing
    vm.write(write)
    reuse.check_sysctls(vm, "server", booted, wanted)
    assert booted.touched["server"] == {"net.ipv4.tcp_max_tw_buckets", "net.core.somaxconn"}
    # run 3 sets nothing: both keys go back to their boot values
    write = reuse.reset_host_sysctls(vm, "server", booted, {})
    assert write == {"net.ipv4.tcp_max_tw_buckets": "4096", "net.core.somaxconn": "4096"}
    vm.write(write)
    reuse.check_sysctls(vm, "server", booted, {})


def test_a_sysctl_that_did_not_go_back_fails_the_run_naming_it():
    vm = FakeVm("client", sysctls={"net.ipv4.tcp_max_tw_buckets": "12274"}, frozen=True)
    booted = _booted(vm, {"net.ipv4.tcp_max_tw_buckets": "4096"}, {"net.ipv4.tcp_max_tw_buckets"})
    vm.write(reuse.reset_host_sysctls(vm, "client", booted, {}))
    with pytest.raises(RunError) as err:
        reuse.check_sysctls(vm, "client", booted, {})
    assert str(err.value) == ("client: the reused VM's sysctls are not back to a fresh boot's: "
                              "net.ipv4.tcp_max_tw_buckets: '12274', expected '4096'")


# -- sockets -------------------------------------------------------------------------------

def test_the_previous_runs_sockets_are_ended_and_counted_to_zero():
    server = FakeVm("server", sockets={"TIME-WAIT": 2000, "FIN-WAIT-2": 3},
                    killable=("TIME-WAIT", "FIN-WAIT-2"))
    client = FakeVm("client")
    assert reuse.drain({"server": server, "client": client}, print, timeout=5) < 5
    assert server.killed == 1 and client.killed == 1 and server.sockets == {}


def test_sockets_that_stay_fail_the_run_with_their_states():
    server = FakeVm("server", sockets={"LAST-ACK": 7, "TIME-WAIT": 10}, killable=("TIME-WAIT",))
    said: list[str] = []
    with pytest.raises(RunError) as err:
        reuse.drain({"server": server}, said.append, timeout=0.05, interval=0.01)
    assert str(err.value) == ("the reused VMs still hold the previous run's sockets after 0 s "
                              "(server LAST-ACK 7); this run would count them: run the "
                              "scenarios in separate commands")
    assert said == ["      waiting for the previous run's sockets to go (server LAST-ACK 7)"]


def test_the_socket_count_leaves_out_port_22_on_captured_proc_files():
    """The program the VM runs, on /proc/net/tcp{,6} captured beside `ss -tan`."""
    out = subprocess.run([sys.executable, "-c", reuse.LAB_SOCKETS, str(DATA / "proc_net_tcp.txt"),
                          str(DATA / "proc_net_tcp6.txt")], capture_output=True, text=True,
                         check=True).stdout
    expected: dict[str, int] = {}
    for line in (DATA / "ss_tan.txt").read_text().splitlines()[1:]:
        state, _rq, _sq, local, peer = line.split()[:5]
        if local.endswith(":22") or peer.endswith(":22"):
            continue
        expected[state] = expected.get(state, 0) + 1
    assert json.loads(out) == expected == {"LISTEN": 2, "ESTAB": 4, "CLOSE-WAIT": 1,
                                           "TIME-WAIT": 1, "FIN-WAIT-2": 1}


# -- the pool ------------------------------------------------------------------------------

class Closing:
    def __init__(self, host: str) -> None:
        self.host, self.closed = host, False

    def close(self) -> None:
        self.closed = True


def test_the_pool_hands_kept_vms_to_a_matching_run_and_stops_them_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(tmp_path))
    pool = reuse.VmPool(print)
    assert pool.offer("k1") is None  # nothing booted yet
    journal = pool.journal()
    made = tmp_path / "vm-workdir"
    made.mkdir()
    journal.record("path", path=str(made))
    runner = Closing("server")
    booted = dataclasses.replace(_booted(FakeVm("server"), {}, set()), runners={"server": runner})
    pool.keep(booted)
    assert pool.offer("k1") is booted and not runner.closed and made.exists()
    assert pool.offer("k2") is None  # another setup: the kept VMs are stopped first
    assert runner.closed and not made.exists() and not journal.dir.exists()
    assert pool.booted is None


def test_closing_the_pool_removes_what_it_journalled(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(tmp_path))
    pool = reuse.VmPool(print)
    pool.offer("k")
    made = tmp_path / "work"
    made.mkdir()
    pool.journal().record("path", path=str(made))
    assert [j.name for j in (tmp_path / "runs").iterdir()][0].startswith("vmpool-")
    assert pool.close() == []
    assert not made.exists() and list((tmp_path / "runs").iterdir()) == []


# -- the lock across runs on kept VMs ------------------------------------------------------

def test_runs_on_kept_vms_hold_the_lock_from_first_to_last(tmp_path, monkeypatch):
    import fcntl
    import os
    from argparse import Namespace

    from orchestrator.commands.run import _hold_lock

    lock_file = tmp_path / "tcplab.lock"
    monkeypatch.setenv("TCPLAB_LOCK", str(lock_file))
    monkeypatch.delenv("TCPLAB_LOCK_FD", raising=False)
    args = Namespace(wait=0)
    assert _hold_lock(args, [_plan(), _plan(kernel="6.12")], {}) is None  # nothing kept
    release = _hold_lock(args, [_plan(), _plan()], {})
    assert release is not None
    fd = int(os.environ["TCPLAB_LOCK_FD"])
    other = os.open(lock_file, os.O_RDWR)
    with pytest.raises(BlockingIOError):  # held for the whole command
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert "runs on kept VMs" in lock_file.read_text() and fd > 2
    release()
    assert "TCPLAB_LOCK_FD" not in os.environ
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(other)


# -- a boot that panicked is booted again ------------------------------------------------

def test_the_vms_of_a_panicked_boot_are_stopped_and_their_files_cleared(tmp_path):
    """Stand-in qemus (a sleep whose command line names the VM, as qemu's does): the one
    whose console shows a panic makes the boot count as panicked; both are stopped, their
    overlays, logs and link socket removed, the consoles kept as *-console-failed.log."""
    import time as _time

    from orchestrator.backends.vm import qemu
    from orchestrator.backends.vm.backend import VmBackend
    from orchestrator.backends.vm.network import LabLinks, LabNic
    from orchestrator.journal import process_start_time

    link = tmp_path / "lab0.sock"
    link.write_text("")
    backend = VmBackend.__new__(VmBackend)
    backend.vms = {}
    for index, host in enumerate(("server", "client"), 1):
        name = f"tcplab-unit{index}-{host}"
        proc = subprocess.Popen(["bash", "-c", f'exec -a "qemu-system-x86_64 -name {name}" '
                                 "sleep 300"], start_new_session=True)
        _time.sleep(0.2)
        nic = LabNic(mac=qemu.mac(index, 2), address=f"198.18.0.{index + 1}/24", socket=link,
                     listen=index == 1)
        config = qemu.VmConfig(name=name, host=host, index=index, kernel=None, rootfs="",
                               workdir=tmp_path, labs=[nic], public_key="")
        for path in (config.overlay, config.qemu_log, config.pidfile):
            path.write_text("x")
        config.console.write_text("[5.9] Kernel panic - not syncing: Fatal exception in "
                                  "interrupt\n" if host == "client" else "booting\n")
        backend.vms[host] = qemu.Vm(config, proc, _time.monotonic(), proc.pid,
                                    process_start_time(proc.pid))
    assert backend._panicked()
    procs = [vm.proc for vm in backend.vms.values()]
    backend._stop_vms(LabLinks(nics={}, hubs=[]))
    assert all(p.poll() is not None for p in procs) and backend.vms == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client-console-failed.log",
                                                          "server-console-failed.log"]
    assert "Kernel panic" in (tmp_path / "client-console-failed.log").read_text()
