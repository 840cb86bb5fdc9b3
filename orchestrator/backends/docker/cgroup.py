"""Per-container memory from the container's memory cgroup (v1 or v2), read on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import RunError


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount, from mountinfo."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rest[0], set(rest[2].split(","))))
    return out


def cgroup_of(pid: int, container_id: str) -> tuple[str, Path]:
    """The memory cgroup directory of a process: ("v1" | "v2", path on this machine).

    The path in /proc/<pid>/cgroup is relative to the reader's cgroup namespace root;
    when it does not exist under the mount, the container id is looked up instead.
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as exc:
        raise RunError(f"cannot read /proc/{pid}/cgroup: {exc}") from None
    mounts = _mounts()
    v1 = next((m for m, fs, opts in mounts if fs == "cgroup" and "memory" in opts), None)
    v2 = next((m for m, fs, _ in mounts if fs == "cgroup2"), None)
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(",") and v1:
            return "v1", _locate(Path(v1), rel, container_id)
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if hid == "0" and not controllers and v2 and Path(v2, "cgroup.controllers").exists():
            return "v2", _locate(Path(v2), rel, container_id)
    raise RunError(f"no memory cgroup found for pid {pid} in /proc/{pid}/cgroup")


def _locate(mount: Path, rel: str, container_id: str) -> Path:
    direct = mount / rel.lstrip("/")
    if (direct / "memory.stat").is_file():
        return direct
    for pattern in (f"*/{container_id}", f"*/*/{container_id}", f"*{container_id}*",
                    f"*/*{container_id}*"):
        for found in mount.glob(pattern):
            if found.is_dir():
                return found
    raise RunError(f"memory cgroup of container {container_id[:12]} not found under {mount} "
                   f"(/proc says {rel})")


def read_cgroup_memory(kind: str, path: Path) -> dict[str, Any]:
    """Flat ints from a memory cgroup, plus {"cgroup": kind, "path": path}.

    ``kmem`` and ``sock`` are the same idea on both versions: v1 ``memory.kmem.usage_in_bytes``
    and ``memory.kmem.tcp.usage_in_bytes``; v2 ``memory.stat`` ``kernel`` (or the sum of
    its parts on older kernels) and ``sock``.
    """
    out: dict[str, Any] = {"cgroup": kind, "path": str(path)}
    try:
        stat = _read_stat(path / "memory.stat")
    except OSError:
        return {**out, "error": "memory cgroup gone"}
    for key, value in stat.items():
        out[f"stat.{key}"] = value
    if kind == "v1":
        for name in ("memory.kmem.usage_in_bytes", "memory.kmem.tcp.usage_in_bytes",
                     "memory.usage_in_bytes", "memory.kmem.max_usage_in_bytes"):
            value = _read_int(path / name)
            if value is not None:
                out[name.removeprefix("memory.")] = value
        out["kmem"] = out.get("kmem.usage_in_bytes", 0)
        out["sock"] = out.get("kmem.tcp.usage_in_bytes", 0)
        out["usage"] = out.get("usage_in_bytes", 0)
    else:
        current = _read_int(path / "memory.current")
        if current is not None:
            out["current"] = current
        kernel = stat.get("kernel")
        if kernel is None:
            kernel = sum(stat.get(k, 0) for k in ("slab_reclaimable", "slab_unreclaimable",
                                                  "kernel_stack", "pagetables", "percpu",
                                                  "sock"))
        out["kmem"] = kernel
        out["sock"] = stat.get("sock", 0)
        out["usage"] = out.get("current", 0)
    return out


def _read_stat(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None

