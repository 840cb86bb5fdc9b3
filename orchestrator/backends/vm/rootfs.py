"""The VM root filesystem: the node image's recipe, as an ext4 disk image.

Built the way docker/image.py builds the offline Docker base: ``debootstrap --variant=minbase``
of bookworm from the mirror apt is configured with, including the node recipe's
packages (``images/node/packages.txt``) plus ``kmod`` (the VM loads its network
driver). Then:

* ``/sbin/tcplab-init`` (:data:`INIT`) becomes PID 1 (``init=`` on the kernel command
  line): it mounts /proc, /sys, /dev, mounts the kernel's modules disk on /lib/modules
  (found by its ext4 label, named by ``tcplab.mods=LABEL``, never by device name),
  loads virtio_net, names the two network interfaces by MAC address, installs the run's
  SSH key and becomes sshd, listening on the control interface only;
* the node's ``sshd_config`` is installed as is; host keys are removed (each boot
  makes its own);
* ``mkfs.ext4 -d -E offset=`` turns the tree into the one partition of a disk image,
  ``<cache>/rootfs/<recipe hash, 16 hex>.img``, behind an MBR written here (no loop
  device, no fdisk) whose fixed disk signature gives the partition the id
  :data:`ROOT_PARTUUID`. The VM boots with ``root=PARTUUID=...``, which the kernel
  resolves itself (no initramfs): a device name like ``/dev/nvme0n1`` is not stable,
  since kernels from 6.12 on scan NVMe namespaces asynchronously and the modules disk
  may get that name.

The recipe hash covers the package list, the init script, sshd_config and this
module's format version: an unchanged recipe is never rebuilt. A run never writes the
cached image: each VM boots from a qcow2 overlay in the run's directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import InputError, RunError
from .cache import cache_dir, cache_lock

FORMAT = "tcplab-vm-rootfs/3"  # 2: partitioned, root=PARTUUID; 3: several lab interfaces
#: kmod: the VM loads its network driver; nftables: a NAT router masquerades with nft
EXTRA_PACKAGES = ("kmod", "nftables")
IMAGE_SIZE = "1536M"  # of the root filesystem; the disk is 1 MiB more
SECTOR = 512
PART_START = 2048  # sectors: the partition starts at 1 MiB
#: The MBR disk signature of every root image; the kernel names its first partition
#: ``<signature as 8 hex>-01``.
DISK_SIGNATURE = 0x7C1AB0F5
ROOT_PARTUUID = f"{DISK_SIGNATURE:08x}-01"
Log = Callable[[str], None]

#: PID 1 of every lab VM. Parameters come from the kernel command line:
#: tcplab.host=NAME tcplab.key=BASE64 (ed25519 public key) tcplab.ctl=MAC
#: tcplab.lab=MAC,ADDRESS/PREFIX (once per lab interface: a router has one on each network)
#: tcplab.mods=LABEL (the modules disk's ext4 label; it may appear after init starts, so
#: init waits up to 20 s for it)
INIT = r"""#!/bin/sh
# tcplab VM init (PID 1): mount the basics, bring up the control and lab interfaces,
# install the run's SSH key, then become sshd (which reaps every orphan handed to it).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "tcplab-init: $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw / 2>/dev/null
HOST=lab KEY= CTL= LAB= MODS=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tcplab.host=*) HOST=${arg#*=} ;;
        tcplab.key=*) KEY=${arg#*=} ;;
        tcplab.ctl=*) CTL=${arg#*=} ;;
        tcplab.lab=*) LAB="$LAB ${arg#*=}" ;;
        tcplab.mods=*) MODS=${arg#*=} ;;
    esac
done
hostname "$HOST"
if [ -n "$MODS" ]; then
    i=0 MODDEV=
    while [ -z "$MODDEV" ] && [ "$i" -lt 200 ]; do
        MODDEV=$(blkid -c /dev/null -o device -t "LABEL=$MODS" 2>/dev/null | head -n 1)
        [ -n "$MODDEV" ] || sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$MODDEV" ]; then say "no modules disk labelled $MODS"
    else mount -t ext4 -o ro "$MODDEV" /lib/modules || say "cannot mount the modules disk $MODDEV"
    fi
fi
for mod in virtio_pci virtio_net inet_diag tcp_diag; do modprobe -q "$mod" 2>/dev/null; done
# every lab interface and the control one, found by MAC (each may appear late)
i=0
while :; do
    CTLDEV= LABDEVS= MISSING=
    for dev in /sys/class/net/*; do
        [ "$(cat "$dev/address" 2>/dev/null)" = "$CTL" ] && CTLDEV=${dev##*/}
    done
    [ -n "$CTLDEV" ] || MISSING="ctl $CTL"
    for lab in $LAB; do
        mac=${lab%%,*} found=
        for dev in /sys/class/net/*; do
            [ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ] && found=${dev##*/}
        done
        if [ -n "$found" ]; then LABDEVS="$LABDEVS $found,${lab#*,}"
        else MISSING="$MISSING lab $mac"
        fi
    done
    [ -z "$MISSING" ] && break
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then say "network interfaces not found ($MISSING)"; break; fi
    sleep 0.1
done
ip link set lo up
ip addr add 10.0.2.15/24 dev "$CTLDEV"
ip link set "$CTLDEV" up
for lab in $LABDEVS; do
    ip addr add "${lab#*,}" dev "${lab%%,*}"
    ip link set "${lab%%,*}" up
done
umask 077
mkdir -p /root/.ssh /run/sshd
echo "ssh-ed25519 $KEY tcplab" > /root/.ssh/authorized_keys
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
umask 022
ulimit -n 1048576 2>/dev/null
say "ready: $HOST ctl $CTLDEV lab$LABDEVS kernel $(uname -r)"
exec /usr/sbin/sshd -D -e -o ListenAddress=10.0.2.15
"""


@dataclass
class RootfsImage:
    path: str
    recipe_hash: str
    packages: list[str]
    cached: bool
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def recipe(images_dir: Path) -> tuple[str, list[str], str]:
    """(recipe hash, packages, sshd_config text) of the VM root filesystem."""
    from ..recipe import DEBIAN_SUITE, node_recipe_dir, recipe_packages

    packages = sorted(set(recipe_packages(images_dir)) | set(EXTRA_PACKAGES))
    sshd_config = (node_recipe_dir(images_dir) / "sshd_config").read_text()
    digest = hashlib.sha256()
    for part in (FORMAT, DEBIAN_SUITE, " ".join(packages), INIT, sshd_config, IMAGE_SIZE,
                 ROOT_PARTUUID):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest(), packages, sshd_config


def rootfs_dir() -> Path:
    return cache_dir() / "rootfs"


def ensure(images_dir: Path, log: Log = print) -> RootfsImage:
    """The root filesystem image of the recipe in ``images_dir``, built if missing."""
    full, packages, sshd_config = recipe(images_dir)
    image = rootfs_dir() / f"{full[:16]}.img"
    with cache_lock(f"rootfs-{full[:16]}"):
        if image.is_file():
            return RootfsImage(str(image), full, packages, True)
        return _build(image, full, packages, sshd_config, log)


def _build(image: Path, full: str, packages: list[str], sshd_config: str, log: Log) -> RootfsImage:
    from ..recipe import DEBOOTSTRAP_PARENT, debian_mirror, remove_rootfs, run_debootstrap

    missing = [t for t in ("debootstrap", "mkfs.ext4") if shutil.which(t) is None]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: apt-get install debootstrap e2fsprogs")
    mirror = debian_mirror()
    started = time.monotonic()
    DEBOOTSTRAP_PARENT.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix="tcplab-vmroot-", dir=DEBOOTSTRAP_PARENT))
    rootfs_dir().mkdir(parents=True, exist_ok=True)
    partial = image.with_suffix(".partial")
    try:
        log(f"rootfs {full[:16]}: debootstrap bookworm from {mirror} into {tree} (30-90 s)")
        run_debootstrap(tree, mirror, packages)
        customise(tree, sshd_config)
        log(f"rootfs {full[:16]}: mkfs.ext4 -d ({IMAGE_SIZE}, partition {ROOT_PARTUUID})")
        partial.unlink(missing_ok=True)
        make_disk(tree, partial)
        partial.rename(image)
        seconds = round(time.monotonic() - started, 1)
        meta = {"recipe_hash": full, "packages": packages, "mirror": mirror, "format": FORMAT,
                "partuuid": ROOT_PARTUUID, "built": time.time(), "seconds": seconds}
        image.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        log(f"rootfs {full[:16]}: built in {seconds:.0f} s ({image})")
        return RootfsImage(str(image), full, packages, False, seconds)
    finally:
        partial.unlink(missing_ok=True)
        remove_rootfs(tree, log)


def make_disk(tree: Path, disk: Path, size: str = IMAGE_SIZE) -> None:
    """A partitioned disk image: an MBR, then ``tree`` as ext4 in partition 1 (at 1 MiB)."""
    proc = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "tcplab-root",
                           "-E", f"offset={PART_START * SECTOR}", "-d", str(tree), str(disk),
                           size], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunError(f"mkfs.ext4 of the VM root filesystem failed: "
                       f"{proc.stderr.strip()[-300:]}; is there space in {disk.parent}?")
    sectors = disk.stat().st_size // SECTOR - PART_START
    with open(disk, "r+b") as fh:
        fh.write(mbr(DISK_SIGNATURE, PART_START, sectors))


def mbr(signature: int, start: int, sectors: int) -> bytes:
    """A 512-byte MBR with one Linux partition (type 0x83) of ``sectors`` from ``start``.

    CHS fields hold the "use LBA" value (0xfe 0xff 0xff), as fdisk writes beyond 8 GiB.
    The kernel reads the disk signature at byte 440: ``root=PARTUUID=<8 hex>-01``.
    """
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    return (bytes(440) + struct.pack("<IH", signature, 0) + entry + bytes(48)
            + b"\x55\xaa")


def customise(tree: Path, sshd_config: str) -> None:
    """Turn a debootstrap tree into a lab VM's root (init, sshd, no host keys, no caches)."""
    init = tree / "sbin" / "tcplab-init"
    init.write_text(INIT)
    init.chmod(0o755)
    (tree / "etc" / "ssh" / "sshd_config").write_text(sshd_config)
    for key in (tree / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (tree / junk).glob("*"):
            if path.is_file():
                path.unlink()
    for sub in ("lib/modules", "root/.ssh"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    (tree / "etc" / "hostname").write_text("tcplab\n")
    (tree / "etc" / "fstab").write_text("# tcplab VM: everything is mounted by /sbin/tcplab-init\n")
