"""A kernel given by path (``--kernels /path/to/vmlinuz``, and ``host`` in a VM).

Before anything boots, the kernel is checked for what the VM needs (:func:`boot_needs`):
the drivers :data:`NEEDED_MODULES` either built in (its config says ``=y``, or the
modules tree's ``modules.builtin`` lists them) or present as modules in a tree beside
it, and the options :data:`~.kernels.REQUIRED_BUILTIN` built in when its config is
known. Missing ones are named with where tcplab looked.

Looked for beside ``DIR/vmlinuz[-RELEASE]``: the modules in ``DIR/lib/modules/RELEASE``,
``DIR/../lib/modules/RELEASE`` (and ``/lib/modules/RELEASE`` for a kernel in /boot);
the config in ``DIR/config-RELEASE``, ``DIR/config``, ``DIR/.config`` or
``MODULES/build/.config``.

The cache folder is keyed by everything that goes into the VM's kernel and modules
image (:func:`image_key`): the vmlinuz's SHA256, the modules tree's file list (path,
size, modification time, symlink target) and the config's SHA256, so a modules tree
added or changed later is used.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

from ...errors import InputError
from .cache import cache_lock, sha256_file
from .kernels import (
    REQUIRED_BUILTIN,
    Kernel,
    Log,
    kernels_dir,
    load_cached,
    modules_image,
    write_json,
)

#: module -> its config option: the VM's init loads these (network, then ss's sock_diag).
NEEDED_MODULES = {"virtio_pci": "CONFIG_VIRTIO_PCI", "virtio_net": "CONFIG_VIRTIO_NET",
                  "inet_diag": "CONFIG_INET_DIAG", "tcp_diag": "CONFIG_INET_TCP_DIAG"}


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


def find_modules(path: Path, release: str) -> Path | None:
    """The modules tree (``…/lib/modules/RELEASE``) beside a vmlinuz, if any."""
    cands = [path.parent / "lib" / "modules", path.parent.parent / "lib" / "modules"]
    if path.parent == Path("/boot"):
        cands.append(Path("/lib/modules"))
    return next((c / release for c in cands if (c / release).is_dir()), None)


def find_config(path: Path, release: str, modules: Path | None) -> Path | None:
    cands = [path.parent / f"config-{release}", path.parent / "config", path.parent / ".config"]
    if modules is not None:
        cands.append(modules / "build" / ".config")
    return next((c for c in cands if c.is_file()), None)


def _module_names(tree: Path) -> set[str]:
    names = set()
    for _dirpath, _dirs, files in os.walk(tree / "kernel"):
        for f in files:
            m = re.match(r"^(.+?)\.ko(\.\w+)?$", f)
            if m:
                names.add(m.group(1).replace("-", "_"))
    return names


def _builtin(tree: Path) -> set[str]:
    try:
        text = (tree / "modules.builtin").read_text()
    except OSError:
        return set()
    return {Path(line.strip()).name.removesuffix(".ko").replace("-", "_")
            for line in text.splitlines() if line.strip()}


def boot_needs(config: str | None, modules: Path | None) -> list[str]:
    """What the VM needs that this kernel lacks, each as a short phrase (empty: it boots).

    ``config`` is the kernel's config text (None when unknown), ``modules`` its modules
    tree (None when there is none). Pure apart from reading the tree, for tests.
    """
    built = _builtin(modules) if modules else set()
    loadable = _module_names(modules) if modules else set()
    options = dict(re.findall(r"^(CONFIG_\w+)=(\S+)", config or "", re.M))
    missing = []
    for module, option in NEEDED_MODULES.items():
        if options.get(option) == "y" or module in built or module in loadable:
            continue
        if config is None and modules is None:
            missing.append(f"{module} (no modules tree and no config to tell it is built in)")
        else:
            value = options.get(option, "unset")
            missing.append(f"{module} ({option}={value}{', no module' if value == 'm' else ''})")
    if config is not None:
        missing += [f"{opt}=y" for opt in REQUIRED_BUILTIN if options.get(opt) != "y"]
    return missing


def tree_digest(tree: Path | None) -> str:
    """The modules tree's identity: every entry's path, size, mtime and link target."""
    digest = hashlib.sha256()
    if tree is None:
        return "none"
    for dirpath, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if (Path(dirpath) / d).is_symlink()]):
            p = Path(dirpath) / name
            st = p.lstat()
            link = os.readlink(p) if p.is_symlink() else ""
            digest.update(f"{p.relative_to(tree)}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n"
                          .encode())
    return digest.hexdigest()


def image_key(vmlinuz_sha: str, modules: Path | None, config: Path | None) -> str:
    parts = [f"vmlinuz {vmlinuz_sha}", f"modules {tree_digest(modules)}",
             f"config {sha256_file(config) if config else 'none'}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def precheck(spec: str, modules: Path | None = None) -> tuple[Path, str, Path | None,
                                                              Path | None]:
    """(vmlinuz, release, modules tree, config) of a kernel given by path, once
    :func:`check` found everything the VM needs. Nothing is built."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"kernel {spec!r}: no such file (expected a version like 6.1, "
                         "a path to a vmlinuz, or host)")
    release = bzimage_release(path) or path.name.removeprefix("vmlinuz-")
    modules = modules if modules is not None and modules.is_dir() else find_modules(path,
                                                                                   release)
    config = find_config(path, release, modules)
    check(spec, path, release, modules, config)
    return path, release, modules, config


def from_path(spec: str, log: Log = print, label: str | None = None,
              modules: Path | None = None) -> Kernel:
    path, release, modules, config = precheck(spec, modules)
    sha = sha256_file(path)
    key = image_key(sha, modules, config)
    final = kernels_dir() / key[:16]
    with cache_lock(f"kernel-{key[:16]}"):
        kernel = load_cached(final)
        if kernel is not None:
            kernel.label, kernel.cached = label or spec, True
            return kernel
        started = time.monotonic()
        kernels_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="path-", dir=kernels_dir()))
        try:
            shutil.copy2(path, staging / "vmlinuz")
            if config is not None:
                shutil.copy2(config, staging / "config")
            if modules is not None:
                log(f"kernel {spec}: modules image from {modules}")
                modules_image(modules.parent, release, staging / "modules.img")
            kernel = Kernel(label or spec, release, str(final / "vmlinuz"),
                            str(final / "modules.img") if modules is not None else None, "path",
                            None, None, key, False, round(time.monotonic() - started, 1))
            write_json(staging / "kernel.json", kernel.to_dict())
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            return kernel
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def check(spec: str, path: Path, release: str, modules: Path | None,
          config: Path | None) -> None:
    """Refuse a kernel the VM cannot boot with, naming what is missing and where we looked."""
    text = config.read_text(errors="replace") if config is not None else None
    missing = boot_needs(text, modules)
    if not missing:
        return
    where = (f"modules from {modules}" if modules is not None else
             f"no modules tree (looked for {path.parent}/lib/modules/{release} and "
             f"{path.parent.parent}/lib/modules/{release})")
    where += f", config {config}" if config is not None else ", no config beside it"
    raise InputError(f"kernel {spec}: the VM needs {', '.join(missing)}; {where}. Put the "
                     f"kernel's modules in {path.parent}/lib/modules/{release} (make "
                     f"modules_install INSTALL_MOD_PATH={path.parent}) or build them in")


def host_kernel() -> Kernel:
    release = platform.release()
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    if not vmlinuz.is_file():
        raise InputError(
            f"kernel 'host': this machine's kernel {release} has no {vmlinuz} to boot in a VM; "
            "in KERNELS, 'host' runs on this machine itself (netns backend)")
    return from_path(str(vmlinuz), print, label="host", modules=Path("/lib/modules") / release)
