"""docker backend: each lab host is a container of the node image (see backend.py).

Modules: backend (the Backend), client (the SDK, the daemon ping, container state),
exec (SSH over a Docker exec stream), cgroup (per-container memory), cleanup (undo and
wipe of labelled objects), image (the node image, built or pulled).
"""

from __future__ import annotations

from .backend import DockerBackend
from .cleanup import LABEL_RUN, docker_undo_handlers, wipe_labelled
from .client import connect

__all__ = ["LABEL_RUN", "DockerBackend", "connect", "docker_undo_handlers", "wipe_labelled"]
