"""ssh backend: each lab host is a real machine reached over SSH (see backend.py)."""

from __future__ import annotations

from .backend import (
    REMOTE_DIR,
    HostRunner,
    SshBackend,
    Target,
    filtered_sockdiag_argv,
    probe,
    remote_undo_handlers,
    wipe_remote,
)

__all__ = ["REMOTE_DIR", "HostRunner", "SshBackend", "Target", "filtered_sockdiag_argv",
           "probe", "remote_undo_handlers", "wipe_remote"]
