"""Virtual machines for the vm backend: kernels, root filesystem images, qemu.

Everything built here is cached by content hash under :func:`cache_dir`
(``/var/cache/tcplab`` unless ``TCPLAB_CACHE_DIR`` says otherwise): a kernel package
is fetched and unpacked once, the root filesystem image is built once per recipe.
What one run creates (overlay disks, qemu processes, sockets) lives in the run's own
directory and is journalled like every other resource of a run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("TCPLAB_CACHE_DIR", "/var/cache/tcplab"))


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise builds of one cached object across processes (flock, dropped on death)."""
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
