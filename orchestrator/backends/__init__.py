"""Backends: one :class:`~orchestrator.backends.base.Backend` interface, several implementations."""

from __future__ import annotations

from .base import Backend, LabHost


def backend_class(name: str) -> type[Backend]:
    """The implementation for a backend name (imported lazily: docker is optional)."""
    if name == "netns":
        from .netns import NetnsBackend

        return NetnsBackend
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend
    if name == "ssh":
        from .sshhost import SshBackend

        return SshBackend
    if name == "vm":
        from .vm import VmBackend

        return VmBackend
    raise KeyError(name)


__all__ = ["Backend", "LabHost", "backend_class"]
