"""ssh backend: each lab host is a real machine reached over SSH (see backend.py).

Modules: backend (the Backend and its preflight probe), transport (login target, HostRunner),
cleanup (host sysctls journalled on the hosts: undo and wipe), doctor (``tcplab doctor
--lab FILE``: the hosts' checks, one line each).
"""

from __future__ import annotations

from .backend import SshBackend, probe
from .cleanup import REMOTE_DIR, remote_undo_handlers, wipe_remote
from .transport import HostRunner, Target, filtered_sockdiag_argv

__all__ = ["REMOTE_DIR", "HostRunner", "SshBackend", "Target", "filtered_sockdiag_argv",
           "probe", "remote_undo_handlers", "wipe_remote"]
