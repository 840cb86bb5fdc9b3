"""ssh and vm backends without hosts or VMs: kernel names, qemu command lines, the SSH
command wrapping, the control-connection filter of the socket summary, lab file keys."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.backends.sshhost import (
    HostRunner,
    Target,
    filtered_sockdiag_argv,
)
from orchestrator.backends.vm import kernels, qemu, rootfs
from orchestrator.backends.vm.kernels import Kernel
from orchestrator.errors import InputError
from orchestrator.measure.probes import SOCKDIAG, sockdiag_argv

NAMES = [
    "linux-image-6.1.0-48-cloud-amd64", "linux-image-6.1.0-56-cloud-amd64",
    "linux-image-6.1.0-9-cloud-amd64", "linux-image-6.12.117+deb12-cloud-amd64",
    "linux-image-6.12.115+deb12-cloud-amd64", "linux-image-6.12.117+deb12-cloud-amd64-dbg",
    "linux-image-6.12.117+deb12-cloud-amd64-unsigned", "linux-image-6.12-cloud-amd64",
    "linux-image-cloud-amd64", "linux-image-6.1.0-56-amd64",
]


@pytest.mark.parametrize("spec, want", [
    ("6.1", "linux-image-6.1.0-56-cloud-amd64"),  # newest ABI, not 6.12
    ("6.12", "linux-image-6.12.117+deb12-cloud-amd64"),  # no -dbg, no -unsigned
    ("6.1.0-48", "linux-image-6.1.0-48-cloud-amd64"),
    ("6.12.115", "linux-image-6.12.115+deb12-cloud-amd64"),
    ("linux-image-6.1.0-48-cloud-amd64", "linux-image-6.1.0-48-cloud-amd64"),
    ("5.10", None),
    ("6", "linux-image-6.12.117+deb12-cloud-amd64"),
])
def test_pick_package(spec: str, want: str | None) -> None:
    assert kernels.pick_package(spec, NAMES) == want


def test_is_path() -> None:
    assert kernels.is_path("/boot/vmlinuz-6.1.0")
    assert kernels.is_path("./vmlinuz")
    assert not kernels.is_path("6.1")
    assert not kernels.is_path("host")


def test_bzimage_release(tmp_path: Path) -> None:
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x1000).to_bytes(2, "little")
    text = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"
    image[0x1200:0x1200 + len(text)] = text
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(image))
    assert kernels.bzimage_release(path) == "6.1.0-56-cloud-amd64"
    path.write_bytes(b"not a kernel" * 100)
    assert kernels.bzimage_release(path) is None


def _config(tmp_path: Path, **kw) -> qemu.VmConfig:
    kernel = Kernel("6.1", "6.1.0-56-cloud-amd64", "/cache/vmlinuz", "/cache/modules.img", "apt")
    args = dict(name="tcplab-abc123-server", host="server", index=1, kernel=kernel,
                rootfs="/cache/root.img", workdir=tmp_path, lab_address="198.18.0.2/24",
                link=tmp_path / "lab.sock", link_server=True, public_key="AAAAKEY",
                cmdline="slab_nomerge", ssh_port=40022)
    args.update(kw)
    return qemu.VmConfig(**args)


def test_qemu_argv_tcg_nvme_private_link(tmp_path: Path) -> None:
    argv = _config(tmp_path).argv()
    line = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert "nvme-ns,drive=root,bus=nvme0,nsid=1" in argv
    assert "nvme-ns,drive=mods,bus=nvme0,nsid=2" in argv
    assert "readonly=on" in line
    # SSH only through 127.0.0.1, no way out of the VM; the lab link is a Unix socket.
    assert "user,id=ctl,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22" in argv
    assert f"stream,id=lab,server=on,addr.type=unix,addr.path={tmp_path}/lab.sock" in argv
    append = argv[argv.index("-append") + 1]
    assert "init=/sbin/tcplab-init" in append
    assert "tcplab.lab=52:54:00:7c:02:01,198.18.0.2/24" in append
    assert "tcplab.ctl=52:54:00:7c:01:01" in append
    assert append.endswith("slab_nomerge")
    client = _config(tmp_path, link_server=False, accel="kvm", index=2).argv()
    assert "server=off" in " ".join(client)
    assert client[client.index("-accel") + 1] == "kvm"


def test_root_disk_is_named_by_partition_id_not_device_name(tmp_path: Path) -> None:
    # From 6.12 NVMe namespaces are scanned asynchronously: nvme0n1 may be the modules disk.
    append = _config(tmp_path).append().split()
    assert "root=PARTUUID=7c1ab0f5-01" in append and "rootwait" in append
    assert rootfs.ROOT_PARTUUID == "7c1ab0f5-01"
    assert not [p for p in append if "/dev/" in p or "nvme" in p]
    assert "tcplab.mods=tcplab-mod" in append  # init mounts the disk with that ext4 label
    bare = Kernel("x", "6.18.0", "/cache/vmlinuz", None, "path")  # everything built in
    assert not [p for p in _config(tmp_path, kernel=bare).append().split()
                if p.startswith("tcplab.mods")]
    assert "nvme" not in rootfs.INIT and "/dev/sd" not in rootfs.INIT
    assert 'blkid -c /dev/null -o device -t "LABEL=$MODS"' in rootfs.INIT


def test_root_disk_image_is_partitioned_with_the_fixed_id(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("tcplab\n")
    disk = tmp_path / "disk.img"
    rootfs.make_disk(tree, disk, "64M")
    assert disk.stat().st_size == (1 + 64) * 2**20
    table = subprocess.run(["partx", "-g", "-o", "NR,START,SECTORS,UUID,TYPE", str(disk)],
                           capture_output=True, text=True, check=True).stdout.split()
    assert table == ["1", "2048", "131072", "7c1ab0f5-01", "0x83"]
    fs = subprocess.run(["blkid", "-p", "-O", str(2048 * 512), "-o", "export", str(disk)],
                        capture_output=True, text=True, check=True).stdout
    assert "LABEL=tcplab-root" in fs and "TYPE=ext4" in fs
    cat = subprocess.run(["debugfs", "-R", "cat /etc/hostname", f"{disk}?offset={2048 * 512}"],
                         capture_output=True, text=True, check=True).stdout
    assert cat == "tcplab\n"


def test_panic_cause_quotes_the_panic_and_the_error_before_it() -> None:
    console = (Path(__file__).parents[1] / "data" / "vm" /
               "console-6.12-root-on-modules-disk.log").read_text()
    assert qemu.panic_cause(console) == (
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(259,0) "
        "(after: nvme0n1: I/O Cmd(0x1) @ LBA 2, 2 blocks, I/O Error (sct 0x2 / sc 0x80))")
    assert qemu.panic_cause("[ 1.0] booting\n") == "(no panic line)"


def test_mbr_layout() -> None:
    sector = rootfs.mbr(0x7C1AB0F5, 2048, 1000)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert sector[440:444] == bytes.fromhex("f5b01a7c")  # little-endian disk signature
    assert sector[446 + 4] == 0x83
    assert int.from_bytes(sector[446 + 8:446 + 12], "little") == 2048
    assert int.from_bytes(sector[446 + 12:446 + 16], "little") == 1000
    assert sector[462:510] == bytes(48)  # partitions 2-4 empty


def test_accelerator_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPLAB_VM_ACCEL", "tcg")
    assert qemu.accelerator(None) == "tcg"
    monkeypatch.setenv("TCPLAB_VM_ACCEL", "kvm")
    assert qemu.accelerator(None) == "kvm"


def test_undo_vm_touches_only_a_named_qemu(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "qemu.pid"
        pidfile.write_text(f"{sleeper.pid}\n")
        qemu.undo_vm({"name": "tcplab-abc-server", "pidfile": str(pidfile)})
        assert sleeper.poll() is None  # not a qemu of that name: left alone
        qemu.undo_vm({"name": "x", "pidfile": str(tmp_path / "missing.pid")})
    finally:
        sleeper.kill()
        sleeper.wait()


def test_host_runner_sudo_and_filter() -> None:
    target = Target("10.1.2.3", "lab", 2222, "/nonexistent/key")
    runner = HostRunner("server", target, peer="198.18.0.3")
    assert runner.sudo and runner.ctl_port == 2222
    assert runner.command(["cat", "/proc/slabinfo"]) == "sudo -n -- sh -c 'cat /proc/slabinfo'"
    swapped = filtered_sockdiag_argv(sockdiag_argv(False), 2222, "198.18.0.3")
    assert swapped[2] == SOCKDIAG.read_text()
    assert swapped[3:] == ["--no-mem", "--skip-port", "2222", "--keep-peer", "198.18.0.3"]
    root = HostRunner("client", Target("10.1.2.4", key="/k"))
    assert not root.sudo
    assert root.command(["cat", "x"]) == "cat x"
    assert filtered_sockdiag_argv(["python3", "-c", "print(1)"], 22, "1.2.3.4") == \
        ["python3", "-c", "print(1)"]


def _summary(argv: list[str]) -> dict:
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def test_sockdiag_filter_drops_only_the_control_connection() -> None:
    """A 'control' listener and one connection to it; the filter drops the accepted end
    (local port = the control port, peer not the lab peer), keeps everything else."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = lsock.accept()
    try:
        argv = [sys.executable, "-c", SOCKDIAG.read_text()]
        plain = _summary(argv)
        filtered = _summary([sys.executable if a == "python3" else a for a in
                             filtered_sockdiag_argv(["python3", "-c", SOCKDIAG.read_text()],
                                                    port, "198.18.0.3")])
        assert filtered["states"].get("ESTAB", 0) == plain["states"].get("ESTAB", 0) - 1
        # with the lab peer being the connecting address, the socket is lab traffic: kept
        kept = _summary([sys.executable if a == "python3" else a for a in
                         filtered_sockdiag_argv(["python3", "-c", SOCKDIAG.read_text()],
                                                port, "127.0.0.1")])
        assert kept["states"].get("ESTAB", 0) == plain["states"].get("ESTAB", 0)
    finally:
        for s in (client, server, lsock):
            s.close()


LAB = """\
name: t
backend: {backend}
network: {{subnet: {subnet}}}
hosts:
  server:
    role: server
    address: {server}
{extra}
  client:
    role: client
    address: {client}
"""


def _lab(tmp_path: Path, extra: str = "", backend: str = "vm", subnet: str = "198.18.0.0/24",
         server: str = "198.18.0.2", client: str = "198.18.0.3") -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.format(backend=backend, subnet=subnet, server=server, client=client,
                               extra=extra))
    return path


def test_lab_keys_for_ssh_and_vm(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    lab = config.load_lab(_lab(tmp_path, "    kernel: \"6.1\"\n    cmdline: slab_nomerge  quiet\n"
                                         "    vm: {memory: 2048, cpus: 1}\n"
                                         "    ssh: {address: 10.0.0.5, port: 2200, key: id}"))
    server = lab.host("server")
    assert server.kernel == "6.1" and server.cmdline == "slab_nomerge quiet"
    assert server.vm == {"memory": 2048, "cpus": 1}
    assert server.ssh == {"address": "10.0.0.5", "user": "root", "port": 2200, "key": str(key)}
    hosts = lab.to_dict()["hosts"]
    assert hosts["server"]["kernel"] == "6.1"
    # a host without the new keys serialises exactly as before
    assert not {"ssh", "kernel", "cmdline", "vm"} & set(hosts["client"])


@pytest.mark.parametrize("extra, message", [
    ("    ssh: {address: 10.0.0.5, key: missing}", "ssh.key: expected an SSH private key"),
    ("    ssh: {address: 10.0.0.5, key: id, port: 0}", "ssh.port: expected a TCP port"),
    ("    ssh: {key: id}", "ssh.address"),
    ("    cmdline: tcplab.host=x", "cmdline: expected kernel command-line options"),
    ("    kernel: [6.1]", "kernel: expected a kernel version"),
    ("    kernel: 6.10", 'hosts.server.kernel: YAML reads 6.10 as the number 6.1 (6.10 would '
                       'become 6.1, 5.10 5.1); quote the version: kernel: "6.10"'),
    ("    kernel: 5.10", 'hosts.server.kernel: YAML reads 5.10 as the number 5.1'),
    ("    vm: {memory: 10}", "vm.memory: expected an integer from 256"),
    ("    vm: {disk: 10}", "unknown key"),
])
def test_lab_key_errors(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "id").write_text("k")
    with pytest.raises(InputError) as info:
        config.load_lab(_lab(tmp_path, extra))
    assert message in str(info.value)


def test_ssh_labs_may_use_real_addresses(tmp_path: Path) -> None:
    lab = config.load_lab(_lab(tmp_path, backend="ssh", subnet="10.20.0.0/24",
                               server="10.20.0.2", client="10.20.0.3"))
    assert lab.subnet == "10.20.0.0/24"
    with pytest.raises(InputError, match="198.18.0.0/15"):
        config.load_lab(_lab(tmp_path, backend="vm", subnet="10.20.0.0/24",
                             server="10.20.0.2", client="10.20.0.3"))


def test_diagnose_names_a_killed_vm() -> None:
    """A VM killed during a run: the error leads with it, not with the SSH refusal that
    follows (checked by hand too: docs/errors.md, faults)."""
    import signal as _signal
    import subprocess as _subprocess
    from types import SimpleNamespace

    from orchestrator.backends.vm.backend import VmBackend

    dead = _subprocess.Popen(["sleep", "30"])
    dead.send_signal(_signal.SIGKILL)
    dead.wait()
    alive = _subprocess.Popen(["sleep", "30"])
    try:
        backend = VmBackend.__new__(VmBackend)
        backend.vms = {"server": SimpleNamespace(proc=dead, pid=dead.pid, boot_seconds=21.5),
                       "client": SimpleNamespace(proc=alive, pid=alive.pid, boot_seconds=20.0)}
        assert backend.diagnose() == [
            f"server: its VM (qemu pid {dead.pid}) was killed by SIGKILL during the run"]
        backend.vms["server"] = SimpleNamespace(proc=dead, pid=dead.pid, boot_seconds=None)
        assert backend.diagnose() == [  # it never reached its init's ready line
            f"server: its VM (qemu pid {dead.pid}) was killed by SIGKILL while booting, "
            "before its init was ready"]
    finally:
        alive.kill()
        alive.wait()
