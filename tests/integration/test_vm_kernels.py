"""Debian's kernel index through tcplab's private apt configuration, for real.

`apt-get update` of the eight suites (about 30 MB of lists, 30-60 s) and `apt-get download`
of one small package into a temporary cache, then: the machine's apt (/etc/apt,
/var/lib/apt, /var/cache/apt, dpkg's status) is byte for byte what it was. Needs root and
deb.debian.org; runs under CI or with TCPLAB_VM_TESTS=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from orchestrator.backends.vm import archive
from orchestrator.backends.vm.debindex import IndexKernel

MACHINE_APT = (Path("/etc/apt"), Path("/var/lib/apt"), Path("/var/cache/apt"),
               Path("/var/lib/dpkg/status"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("TCPLAB_VM_TESTS") == "1"),
                       reason="runs under CI or with TCPLAB_VM_TESTS=1 (deb.debian.org, ~1 min)"),
]


def tree_hash(path: Path) -> dict[str, str]:
    """Every file's content hash, every link's target, every directory, under ``path``."""
    out: dict[str, str] = {}
    paths = [path] if not path.is_dir() else [path, *sorted(path.rglob("*"))]
    for p in paths:
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p)] = f"dir {p.stat().st_mode:o}"
    return out


def test_private_index_and_download_leave_the_machines_apt_alone(tmp_path: Path) -> None:
    before = {str(p): tree_hash(p) for p in MACHINE_APT if p.exists()}
    root = tmp_path / "apt"
    archive.refresh(print, force=True, root=root)
    assert (root / "updated").is_file()
    assert set(archive.list_files(root)) == {suite for _, suite in archive.SUITES}
    index = archive.load_index(print, root)
    assert {"5.10", "6.1", "6.12"} <= set(index.series())
    newest = index.resolve(index.series()[-1])
    # the smallest .deb of the newest kernel (from 6.19: the image meta package, ~2 KB)
    deb = min(newest.debs, key=lambda d: d.size)
    one = IndexKernel(deb.package, newest.abi, deb.version, newest.upstream, newest.series,
                      deb.suite, [deb])
    [path] = archive.download(one, print, root)
    assert path.parent == root / "debs"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == deb.sha256
    after = {str(p): tree_hash(p) for p in MACHINE_APT if p.exists()}
    assert after == before
