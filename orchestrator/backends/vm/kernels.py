"""Kernels for VMs: a Debian cloud kernel by version, a vmlinuz file, or this machine's.

``fetch("6.1")`` resolves the newest ``linux-image-6.1*-cloud-amd64`` package apt knows
(bookworm carries 6.1 and 6.12), downloads it with ``apt-get download``, unpacks it with
``dpkg-deb -x`` and keeps, under ``<cache>/kernels/<sha256 of the .deb, 16 hex>/``:

* ``vmlinuz``: the kernel;
* ``modules.img``: an ext4 image labelled :data:`MODULES_LABEL` holding ``<release>/``
  of ``/lib/modules`` with ``modules.dep`` made by ``depmod -b`` (the VM's init finds it
  by that label and mounts it read-only on /lib/modules, so one root filesystem image
  serves every kernel);
* ``kernel.json``: what was fetched (package, version, release, hashes).

``<cache>/kernels/by-name/<package>.json`` points at it, so a second run resolves the
name with ``apt-cache`` (no network) and finds the kernel without downloading anything.

The kernel must boot from the root filesystem on qemu's NVMe disk without an initramfs:
NVMe, ext4 and MBR partition tables built in (both Debian cloud kernels have them). Network drivers may be
modules: the VM's init loads virtio_pci and virtio_net.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import InputError, RunError
from .cache import cache_dir, cache_lock

FLAVOR = "cloud-amd64"
#: Config options a kernel needs to boot here without an initramfs.
REQUIRED_BUILTIN = ("CONFIG_BLK_DEV_NVME", "CONFIG_EXT4_FS", "CONFIG_DEVTMPFS",
                    "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MSDOS_PARTITION")
#: The ext4 label of every modules image; the VM's init mounts the disk carrying it.
MODULES_LABEL = "tcplab-mod"
Log = Callable[[str], None]


@dataclass
class Kernel:
    label: str  # as asked: "6.1", "6.12", a path, "host"
    release: str  # uname -r inside the VM: "6.1.0-56-cloud-amd64"
    vmlinuz: str
    modules_image: str | None  # ext4 image with <release>/..., or None (all built in)
    source: str  # "apt" | "path" | "host"
    package: str | None = None
    version: str | None = None  # the package version
    sha256: str | None = None  # of the .deb (apt) or of the vmlinuz file (path)
    cached: bool = False  # True when nothing was fetched or built for this run
    seconds: float = 0.0  # fetch + unpack + image time when it was built

    def to_dict(self) -> dict:
        return asdict(self)


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def is_path(spec: str) -> bool:
    return "/" in spec or spec.endswith(("vmlinuz", ".bzImage")) or spec.startswith("vmlinuz")


_PKG = re.compile(r"^linux-image-(?P<ver>\d+\.\d+(?:[.\-]\d+)*)(?:\+deb\d+)?-" + re.escape(FLAVOR)
                  + r"$")


def _version_key(ver: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", ver))


def pick_package(spec: str, names: list[str]) -> str | None:
    """The newest package name whose kernel version is ``spec`` or below it.

    ``6.1`` matches ``linux-image-6.1.0-56-cloud-amd64`` (not 6.12…); ``6.12`` matches
    ``linux-image-6.12.117+deb12-cloud-amd64``; a whole package name matches itself.
    Debug (-dbg) and unsigned variants never match. Pure, for tests.
    """
    if spec in names and _PKG.match(spec):
        return spec
    found = []
    for name in names:
        m = _PKG.match(name)
        if not m:
            continue
        ver = m.group("ver")
        if ver == spec or ver.startswith(spec + ".") or ver.startswith(spec + "-"):
            found.append((_version_key(ver), name))
    return max(found)[1] if found else None


def apt_names(prefix: str = "linux-image-") -> list[str]:
    try:
        out = subprocess.run(["apt-cache", "pkgnames", prefix], capture_output=True, text=True,
                             timeout=60)
    except FileNotFoundError:
        raise InputError("apt-cache not found: kernels by version need Debian's apt "
                         "(or give a path to a vmlinuz)") from None
    return out.stdout.split()


def resolve(spec: str) -> str:
    """The apt package for a version like ``6.1``. Raises InputError naming what exists."""
    names = apt_names()
    pkg = pick_package(spec, names)
    if pkg is None:
        have = sorted({re.match(r"\d+\.\d+", m.group("ver")).group()
                       for n in names if (m := _PKG.match(n))}, key=_version_key)
        hint = (f"apt knows {FLAVOR} kernels {', '.join(have)}" if have else
                f"apt knows no linux-image-*-{FLAVOR} package: run apt-get update")
        raise InputError(f"kernel {spec!r}: no linux-image-{spec}*-{FLAVOR} package; {hint}; "
                         "or give a path to a vmlinuz")
    return pkg


def fetch(spec: str, log: Log = print) -> Kernel:
    """A bootable kernel for ``spec`` (a version, a package name, a vmlinuz path, "host")."""
    if spec == "host":
        return host_kernel()
    if is_path(spec):
        return from_path(spec, log)
    return from_apt(spec, log)


def host_kernel() -> Kernel:
    release = platform.release()
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    if not vmlinuz.is_file():
        raise InputError(
            f"kernel 'host': this machine's kernel {release} has no {vmlinuz} to boot in a VM; "
            "in KERNELS, 'host' runs on this machine itself (netns backend)")
    return from_path(str(vmlinuz), print, label="host", modules=Path("/lib/modules") / release)


def _load(directory: Path) -> Kernel | None:
    try:
        data = json.loads((directory / "kernel.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    kernel = Kernel(**data)
    if not Path(kernel.vmlinuz).is_file():
        return None
    if kernel.modules_image and not Path(kernel.modules_image).is_file():
        return None
    return kernel


def from_apt(spec: str, log: Log = print) -> Kernel:
    package = resolve(spec)
    index = kernels_dir() / "by-name" / f"{package}.json"
    with cache_lock(f"kernel-{package}"):
        try:
            sha = json.loads(index.read_text())["sha256"]
        except (OSError, json.JSONDecodeError, KeyError):
            sha = None
        if sha:
            kernel = _load(kernels_dir() / sha[:16])
            if kernel is not None:
                kernel.label, kernel.cached, kernel.seconds = spec, True, 0.0
                return kernel
        kernel = _build_apt(spec, package, log)
        index.parent.mkdir(parents=True, exist_ok=True)
        _write_json(index, {"sha256": kernel.sha256, "package": package})
        return kernel


def _build_apt(spec: str, package: str, log: Log) -> Kernel:
    _need_tools(("apt-get", "dpkg-deb", "depmod", "mkfs.ext4"))
    started = time.monotonic()
    kernels_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=kernels_dir()))
    try:
        log(f"kernel {spec}: apt-get download {package}")
        os.chmod(work, 0o755)  # apt's _apt user writes the download here when it can
        proc = subprocess.run(["apt-get", "download", "-q", package], cwd=work,
                              capture_output=True, text=True, timeout=900)
        debs = sorted(work.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise RunError(f"kernel {spec}: apt-get download {package} failed: {tail}; "
                           "check that apt reaches its mirror (apt-get update)")
        deb = debs[0]
        sha = _sha256(deb)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                 text=True).stdout.strip() or None
        tree = work / "x"
        _run(["dpkg-deb", "-x", str(deb), str(tree)], f"kernel {spec}: unpacking {deb.name}")
        vmlinuz = _one(tree / "boot", "vmlinuz-*", spec)
        release = vmlinuz.name.removeprefix("vmlinuz-")
        _check_config(tree / "boot" / f"config-{release}", spec)
        final = kernels_dir() / sha[:16]
        staging = work / "out"
        staging.mkdir()
        shutil.copy2(vmlinuz, staging / "vmlinuz")
        shutil.copy2(tree / "boot" / f"config-{release}", staging / "config")
        modules = tree / "lib" / "modules"
        if (modules / release).is_dir():
            log(f"kernel {spec}: depmod and modules image for {release}")
            modules_image(modules, release, staging / "modules.img")
        kernel = Kernel(spec, release, str(final / "vmlinuz"),
                        str(final / "modules.img") if (staging / "modules.img").exists() else None,
                        "apt", package, version, sha, False, round(time.monotonic() - started, 1))
        _write_json(staging / "kernel.json", kernel.to_dict())
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        log(f"kernel {spec}: {release} ready in {kernel.seconds:.0f} s ({final})")
        return kernel
    finally:
        shutil.rmtree(work, ignore_errors=True)


def from_path(spec: str, log: Log = print, label: str | None = None,
              modules: Path | None = None) -> Kernel:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"kernel {spec!r}: no such file (expected a version like 6.1, "
                         "a path to a vmlinuz, or host)")
    sha = _sha256(path)
    final = kernels_dir() / sha[:16]
    with cache_lock(f"kernel-{sha[:16]}"):
        kernel = _load(final)
        if kernel is not None:
            kernel.label, kernel.cached = label or spec, True
            return kernel
        started = time.monotonic()
        release = bzimage_release(path) or path.name.removeprefix("vmlinuz-")
        kernels_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="path-", dir=kernels_dir()))
        try:
            shutil.copy2(path, staging / "vmlinuz")
            if modules is None:  # a modules tree beside it: DIR/vmlinuz + DIR/lib/modules/REL
                for cand in (path.parent / "lib" / "modules",
                             path.parent.parent / "lib" / "modules"):
                    if (cand / release).is_dir():
                        modules = cand / release
                        break
            has_modules = modules is not None and Path(modules).is_dir()
            if has_modules:
                assert modules is not None
                log(f"kernel {spec}: modules image from {modules}")
                modules_image(Path(modules).parent, release, staging / "modules.img")
            kernel = Kernel(label or spec, release, str(final / "vmlinuz"),
                            str(final / "modules.img") if has_modules else None, "path",
                            None, None, sha, False, round(time.monotonic() - started, 1))
            _write_json(staging / "kernel.json", kernel.to_dict())
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            return kernel
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def bzimage_release(path: Path) -> str | None:
    """The release string inside a bzImage (the kernel_version field of its setup header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x4000)
            if head[0x202:0x206] != b"HdrS":
                return None
            offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
            fh.seek(offset)
            text = fh.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    return text.split()[0] if text.strip() else None


def modules_image(modules_root: Path, release: str, image: Path) -> None:
    """An ext4 image of ``modules_root/release`` (with modules.dep), for /lib/modules."""
    base = image.parent / "modtree"
    tree = base / "lib" / "modules"  # depmod -b BASE works on BASE/lib/modules/RELEASE
    shutil.copytree(modules_root / release, tree / release, symlinks=True)
    for link in ("build", "source"):  # dangling links into kernel headers
        p = tree / release / link
        if p.is_symlink():
            p.unlink()
    _run(["depmod", "-b", str(base), release], f"depmod for {release}")
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink())
    megs = int(size * 1.25 / 2**20) + 32
    _run(["mkfs.ext4", "-q", "-F", "-L", MODULES_LABEL, "-E", "root_owner=0:0", "-d", str(tree),
          str(image), f"{megs}M"], f"mkfs.ext4 for the modules of {release}")
    shutil.rmtree(base)


def _check_config(config: Path, spec: str) -> None:
    try:
        text = config.read_text()
    except OSError:
        return  # no config shipped: try to boot it anyway
    missing = [opt for opt in REQUIRED_BUILTIN if f"{opt}=y" not in text]
    if missing:
        raise InputError(f"kernel {spec}: {', '.join(missing)} not built in; the VM boots "
                         "without an initramfs, so NVMe, ext4, MBR partitions, devtmpfs and "
                         "the serial console must be built into the kernel")


def _one(directory: Path, pattern: str, spec: str) -> Path:
    found = sorted(directory.glob(pattern))
    if not found:
        raise RunError(f"kernel {spec}: the package has no {directory.name}/{pattern}")
    return found[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _need_tools(tools: tuple[str, ...]) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = {"depmod": "kmod", "mkfs.ext4": "e2fsprogs", "dpkg-deb": "dpkg",
                "apt-get": "apt"}
        raise InputError(f"missing {', '.join(missing)}: apt-get install "
                         + " ".join(sorted({pkgs.get(t, t) for t in missing})))


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RunError(f"{what} failed (exit {proc.returncode}): {tail}")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.rename(path)
