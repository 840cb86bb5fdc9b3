"""Kernels for VMs: a Debian cloud kernel by version, a vmlinuz file, or this machine's.

``fetch("6.1")`` resolves the newest ``linux-image-6.1*-cloud-amd64`` in Debian's archive
(:mod:`.debindex` on the lists of :mod:`.archive`'s private apt configuration: 5.10 to
7.x), downloads its ``.deb`` files (from 6.19 also ``linux-binary-*``, ``linux-modules-*``
and ``linux-base-*``), unpacks them with ``dpkg-deb -x`` and keeps, under
``<cache>/kernels/<16 hex of cache_key()>/``:

* ``vmlinuz``: the kernel; ``config``: its build configuration;
* ``modules.img``: an ext4 image labelled :data:`MODULES_LABEL` holding ``<release>/``
  of ``/lib/modules`` with ``modules.dep`` made by ``depmod -b`` (the VM's init finds it
  by that label and mounts it read-only on /lib/modules, so one root filesystem image
  serves every kernel);
* ``kernel.json``: what was fetched (packages, version, suite, release, hashes).

The key comes from the index's SHA256 of the packages, so a second run finds the kernel
without downloading anything, and a new package version is a new folder. Kernels given by
path are :mod:`.vmlinuz`'s.

The kernel must boot from the root filesystem on qemu's NVMe disk without an initramfs:
NVMe, ext4 and MBR partition tables built in (every Debian cloud kernel from 5.10 has
them). Network drivers may be modules: the VM's init loads virtio_pci and virtio_net.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import InputError, RunError
from . import archive
from .cache import cache_dir, cache_lock
from .debindex import IndexKernel, KernelIndex

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
    sha256: str | None = None  # the cache key: .deb(s) (apt); vmlinuz, modules, config (path)
    cached: bool = False  # True when nothing was fetched or built for this run
    seconds: float = 0.0  # fetch + unpack + image time when it was built
    suite: str | None = None  # apt: the suite the image package came from
    debs: list[str] | None = None  # apt: every package unpacked (7.x: binary + modules)

    def to_dict(self) -> dict:
        return asdict(self)


def say(message: str) -> None:
    """Progress of the index (a refresh) on stderr: stdout may carry --json."""
    print(message, file=sys.stderr)


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def is_path(spec: str) -> bool:
    return "/" in spec or spec.endswith(("vmlinuz", ".bzImage")) or spec.startswith("vmlinuz")


_INDEX: KernelIndex | None = None


def index(log: Log = say) -> KernelIndex:
    """Debian's cloud kernels (private apt lists, refreshed at most daily), once per process."""
    global _INDEX
    if _INDEX is None:
        _INDEX = archive.load_index(log)
    return _INDEX


def resolve(spec: str, log: Log = say) -> IndexKernel:
    """The newest Debian cloud kernel ``spec`` names. Raises InputError naming what exists."""
    found = index(log).resolve(spec)
    if found is None:
        raise InputError(f"kernel {spec!r}: {index(log).why_not(spec)}; "
                         "or give a path to a vmlinuz")
    return found


def expand(names: list[str], log: Log = say) -> list[str]:
    """``all`` -> the newest kernel of every series Debian's archive offers, then ``host``."""
    if "all" not in names:
        return names
    out: list[str] = []
    for name in names:
        extra = index(log).series() + ["host"] if name == "all" else [name]
        out += [n for n in extra if n not in out]
    return out


def check_specs(specs: Iterable[str]) -> None:
    """Refuse, before anything starts, a kernel that does not exist or cannot boot:
    versions against the index, paths by :func:`.vmlinuz.precheck`; ``host`` passes."""
    from .vmlinuz import precheck

    for spec in sorted(set(specs) - {"host"}):
        if is_path(spec):
            precheck(spec)
        else:
            resolve(spec)


def fetch(spec: str, log: Log = print) -> Kernel:
    """A bootable kernel for ``spec`` (a version, a package name, a vmlinuz path, "host")."""
    if spec == "host" or is_path(spec):
        from . import vmlinuz

        return vmlinuz.host_kernel() if spec == "host" else vmlinuz.from_path(spec, log)
    return from_apt(spec, log)


def load_cached(directory: Path) -> Kernel | None:
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


def cache_key(found: IndexKernel) -> str:
    """The cache folder of an index kernel: the SHA256 of its one .deb, or of the list of
    its .debs' SHA256s (from the index: a cached kernel is found without downloading)."""
    shas = [d.sha256 for d in found.debs]
    if len(shas) == 1:
        return shas[0]
    return hashlib.sha256(" ".join(shas).encode()).hexdigest()


def from_apt(spec: str, log: Log = print) -> Kernel:
    found = resolve(spec, log)
    key = cache_key(found)
    with cache_lock(f"kernel-{key[:16]}"):
        kernel = load_cached(kernels_dir() / key[:16])
        if kernel is not None and kernel.version == found.version:
            kernel.label, kernel.cached, kernel.seconds = spec, True, 0.0
            return kernel
        return _build_apt(spec, found, key, log)


def _build_apt(spec: str, found: IndexKernel, key: str, log: Log) -> Kernel:
    _need_tools(("apt-get", "dpkg-deb", "depmod", "mkfs.ext4"))
    started = time.monotonic()
    debs = archive.download(found, lambda m: log(f"kernel {spec}: {m}"))
    kernels_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=kernels_dir()))
    try:
        tree = work / "x"
        for deb in debs:  # 7.x: the kernel in linux-binary-*, its modules in linux-modules-*
            _run(["dpkg-deb", "-x", str(deb), str(tree)], f"kernel {spec}: unpacking {deb.name}")
        vmlinuz, release, config, modules = package_layout(tree, spec, found)
        _check_config(config, spec)
        final = kernels_dir() / key[:16]
        staging = work / "out"
        staging.mkdir()
        shutil.copy2(vmlinuz, staging / "vmlinuz")
        if config.is_file():
            shutil.copy2(config, staging / "config")
        if (modules / release).is_dir():
            log(f"kernel {spec}: depmod and modules image for {release}")
            modules_image(modules, release, staging / "modules.img")
        kernel = Kernel(spec, release, str(final / "vmlinuz"),
                        str(final / "modules.img") if (staging / "modules.img").exists() else None,
                        "apt", found.package, found.version, key, False,
                        round(time.monotonic() - started, 1), found.suite,
                        [d.package for d in found.debs])
        write_json(staging / "kernel.json", kernel.to_dict())
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        log(f"kernel {spec}: {release} ({found.package} {found.version}, {found.suite}) ready "
            f"in {kernel.seconds:.0f} s ({final})")
        return kernel
    finally:
        shutil.rmtree(work, ignore_errors=True)


def modules_image(modules_root: Path, release: str, image: Path) -> None:
    """An ext4 image of ``modules_root/release`` (with modules.dep), for /lib/modules."""
    base = image.parent / "modtree"
    tree = base / "lib" / "modules"  # depmod -b BASE works on BASE/lib/modules/RELEASE
    shutil.copytree(modules_root / release, tree / release, symlinks=True)
    for name in ("build", "source", "vmlinuz", "System.map"):  # headers' links; the kernel
        p = tree / release / name
        if p.is_symlink() or p.is_file():
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


def package_layout(tree: Path, spec: str, kernel: IndexKernel) -> tuple[Path, str, Path, Path]:
    """(vmlinuz, release, config, modules root) of unpacked kernel packages.

    Up to 6.18 the image package has ``boot/vmlinuz-REL``, ``boot/config-REL`` and
    ``lib/modules/REL``; from 6.19 ``linux-binary-*`` has ``usr/lib/modules/REL/vmlinuz``,
    ``linux-base-*`` its ``config`` beside it and ``linux-modules-*`` the modules.
    """
    for mods in (tree / "usr" / "lib" / "modules", tree / "lib" / "modules"):
        for found in sorted(mods.glob("*/vmlinuz")):
            release = found.parent.name
            return found, release, found.parent / "config", mods
    found_boot = sorted((tree / "boot").glob("vmlinuz-*"))
    if found_boot:
        release = found_boot[0].name.removeprefix("vmlinuz-")
        mods = next((m for m in (tree / "lib" / "modules", tree / "usr" / "lib" / "modules")
                     if (m / release).is_dir()), tree / "lib" / "modules")
        return found_boot[0], release, tree / "boot" / f"config-{release}", mods
    names = ", ".join(d.package for d in kernel.debs)
    raise RunError(f"kernel {spec}: no boot/vmlinuz-* or lib/modules/*/vmlinuz in {names}")


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


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.rename(path)
