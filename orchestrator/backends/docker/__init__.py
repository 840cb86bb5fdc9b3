"""docker backend: each lab host is a container of the node image (see backend.py).

Modules: backend (the Backend), image (the node image, built or pulled).
"""

from __future__ import annotations

from .backend import LABEL_RUN, DockerBackend, connect, docker_undo_handlers, wipe_labelled

__all__ = ["LABEL_RUN", "DockerBackend", "connect", "docker_undo_handlers", "wipe_labelled"]
