"""vm backend: each lab host is a qemu VM booting a kernel of your choice (see backend.py).

Modules: backend (the Backend), qemu (starting and stopping VMs), kernels (fetching
kernels), rootfs (the root filesystem image), cache (the cache they share), network (which
VM is on which lab link), hub (the switch of a network of more than two VMs).
"""

from __future__ import annotations

from .backend import VmBackend, vm_undo_handlers

__all__ = ["VmBackend", "vm_undo_handlers"]
