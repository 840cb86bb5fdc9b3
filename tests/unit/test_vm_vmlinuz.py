"""A kernel given by path: what the VM needs is checked before booting, and the cache key
covers the modules tree and the config (a tree added later is used). Real files in
tmp_path; no VM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.backends.vm import vmlinuz
from orchestrator.backends.vm.cache import sha256_file
from orchestrator.backends.vm.kernels import REQUIRED_BUILTIN
from orchestrator.errors import InputError

ALL_Y = "".join(f"{o}=y\n" for o in (*REQUIRED_BUILTIN, *vmlinuz.NEEDED_MODULES.values()))
REL = "6.99.0-test"


def modules_tree(root: Path, names: tuple[str, ...] = ("virtio_pci", "virtio_net",
                                                      "inet_diag", "tcp_diag"),
                 builtin: tuple[str, ...] = ()) -> Path:
    tree = root / "lib" / "modules" / REL
    (tree / "kernel" / "drivers").mkdir(parents=True)
    for name in names:
        (tree / "kernel" / "drivers" / f"{name}.ko.xz").write_bytes(b"\0" * 16)
    (tree / "modules.builtin").write_text("".join(f"kernel/x/{b}.ko\n" for b in builtin))
    return tree


def bare_kernel(tmp_path: Path) -> Path:
    path = tmp_path / "k" / f"vmlinuz-{REL}"
    path.parent.mkdir()
    path.write_bytes(b"not a real kernel" * 10)
    return path


def test_boot_needs_from_config_alone() -> None:
    assert vmlinuz.boot_needs(ALL_Y, None) == []
    config = ALL_Y.replace("CONFIG_VIRTIO_NET=y", "CONFIG_VIRTIO_NET=m").replace(
        "CONFIG_BLK_DEV_NVME=y\n", "")
    assert vmlinuz.boot_needs(config, None) == [
        "virtio_net (CONFIG_VIRTIO_NET=m, no module)", "CONFIG_BLK_DEV_NVME=y"]


def test_boot_needs_from_modules_tree(tmp_path: Path) -> None:
    tree = modules_tree(tmp_path, names=("virtio_net", "tcp_diag"),
                        builtin=("virtio_pci", "inet-diag"))
    assert vmlinuz.boot_needs(None, tree) == []  # no config: options are not checked
    tree2 = modules_tree(tmp_path / "2", names=("virtio_pci",))
    assert vmlinuz.boot_needs(None, tree2) == [
        "virtio_net (CONFIG_VIRTIO_NET=unset)", "inet_diag (CONFIG_INET_DIAG=unset)",
        "tcp_diag (CONFIG_INET_TCP_DIAG=unset)"]


def test_boot_needs_nothing_known() -> None:
    assert vmlinuz.boot_needs(None, None) == [
        f"{m} (no modules tree and no config to tell it is built in)"
        for m in vmlinuz.NEEDED_MODULES]


def test_bare_vmlinuz_is_refused_before_booting(tmp_path: Path) -> None:
    path = bare_kernel(tmp_path)
    with pytest.raises(InputError) as err:
        vmlinuz.precheck(str(path))
    k = path.parent
    assert str(err.value) == (
        f"kernel {path}: the VM needs virtio_pci (no modules tree and no config to tell it is "
        "built in), virtio_net (no modules tree and no config to tell it is built in), "
        "inet_diag (no modules tree and no config to tell it is built in), tcp_diag (no "
        "modules tree and no config to tell it is built in); no modules tree (looked for "
        f"{k}/lib/modules/{REL} and {tmp_path}/lib/modules/{REL}), no config beside it. Put "
        f"the kernel's modules in {k}/lib/modules/{REL} (make modules_install "
        f"INSTALL_MOD_PATH={k}) or build them in")


def test_config_with_modules_as_m_and_no_tree_is_refused(tmp_path: Path) -> None:
    path = bare_kernel(tmp_path)
    (path.parent / f"config-{REL}").write_text(
        ALL_Y.replace("CONFIG_VIRTIO_PCI=y", "CONFIG_VIRTIO_PCI=m"))
    with pytest.raises(InputError, match=r"the VM needs virtio_pci \(CONFIG_VIRTIO_PCI=m, no "
                                         r"module\); no modules tree .*, config .*config-"):
        vmlinuz.precheck(str(path))


def test_modules_beside_it_pass(tmp_path: Path) -> None:
    path = bare_kernel(tmp_path)
    tree = modules_tree(path.parent)
    found, release, modules, config = vmlinuz.precheck(str(path))
    assert (found, release, modules, config) == (path, REL, tree, None)


def test_cache_key_covers_modules_and_config(tmp_path: Path) -> None:
    path = bare_kernel(tmp_path)
    (path.parent / "config").write_text(ALL_Y)
    sha = sha256_file(path)
    config = path.parent / "config"
    alone = vmlinuz.image_key(sha, None, config)
    tree = modules_tree(path.parent)
    with_tree = vmlinuz.image_key(sha, tree, config)
    assert with_tree != alone  # a modules tree added later makes a new image
    (tree / "kernel" / "drivers" / "extra.ko").write_bytes(b"x")
    changed = vmlinuz.image_key(sha, tree, config)
    assert changed != with_tree
    assert vmlinuz.image_key(sha, tree, config) == changed  # stable
    os.utime(tree / "kernel" / "drivers" / "extra.ko", ns=(1, 1))
    assert vmlinuz.image_key(sha, tree, config) != changed  # touched: rebuilt
    config.write_text(ALL_Y + "CONFIG_X=y\n")
    assert vmlinuz.image_key(sha, tree, config) != vmlinuz.image_key(sha, tree, None)


def test_found_beside_it_or_in_lib_modules_for_boot(tmp_path: Path) -> None:
    path = bare_kernel(tmp_path)
    assert vmlinuz.find_modules(path, REL) is None
    tree = modules_tree(tmp_path)  # DIR/../lib/modules/REL
    assert vmlinuz.find_modules(path, REL) == tree
    (path.parent / ".config").write_text(ALL_Y)
    assert vmlinuz.find_config(path, REL, tree) == path.parent / ".config"
    (path.parent / f"config-{REL}").write_text(ALL_Y)
    assert vmlinuz.find_config(path, REL, tree) == path.parent / f"config-{REL}"
