"""The lab node image: find it, or build it from ``images/node``.

The image is tagged ``tcplab/node:<first 12 hex of the recipe hash>``, so a changed
recipe gives a new tag and an unchanged one is never rebuilt.

Two ways to build it:

* ``registry``: ``FROM debian:bookworm-slim``, for machines that reach a container
  registry. The pull must answer within :data:`REGISTRY_ANSWER_TIMEOUT_S`, so a
  machine without a registry falls through in seconds, not minutes.
* ``debootstrap``: no registry at all. A minimal Debian root filesystem is made with
  ``debootstrap`` from the mirror apt is configured with, imported as
  ``tcplab/base:<hash12>`` (kept as a cache) and used as ``BASE``.

Only the Docker SDK talks to the daemon; ``debootstrap``, ``tar`` and ``umount``
are run as programs.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.images
import requests.exceptions

from ...errors import RunError
from ..recipe import (
    DEBIAN_SUITE,
    DEBOOTSTRAP_PARENT,
    Log,
    debian_mirror,
    node_recipe_dir,
    recipe_hash,
    recipe_packages,
    remove_rootfs,
    run_debootstrap,
)
from .client import short_error

NODE_REPOSITORY = "tcplab/node"
BASE_REPOSITORY = "tcplab/base"
REGISTRY_BASE = "debian:bookworm-slim"
RECIPE_LABEL = "tcplab.recipe"
METHOD_LABEL = "tcplab.method"
TAG_HEX = 12

#: Seconds the registry has to give a first answer to the pull of ``REGISTRY_BASE``.
REGISTRY_ANSWER_TIMEOUT_S = 20.0
#: Seconds a pull that did start may take in all.
REGISTRY_PULL_TIMEOUT_S = 600.0
#: Paths left out of the imported base: the daemon provides /proc, /sys and /dev;
#: apt caches, docs, translations and host keys (made per container) are not needed.
BASE_TAR_EXCLUDES = (
    "./proc/*",
    "./sys/*",
    "./dev/*",
    "./run/*",
    "./tmp/*",
    "./var/cache/apt/*",
    "./var/lib/apt/lists/*",
    "./var/log/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/info/*",
    "./usr/share/locale/*",
    "./etc/ssh/ssh_host_*",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Exceptions meaning the daemon refused a request or could not be reached.
_DAEMON_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


@dataclass(frozen=True)
class ImageInfo:
    """The lab node image that was found or built."""

    tag: str  # "tcplab/node:3f9a2c1b4d5e": repository tcplab/node, tag = recipe hash[:12]
    digest: str  # the image id, "sha256:..."
    method: str  # "registry" (FROM debian:bookworm-slim) or "debootstrap" (offline base)
    cached: bool  # True when the image already existed and nothing was built
    recipe_hash: str


class _RegistryUnavailable(Exception):
    """The registry path cannot be used; the message says why."""


# --------------------------------------------------------------------------- docker


def _find_image(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except _DAEMON_ERRORS as exc:
        raise RunError(
            f"cannot inspect image {ref}: {short_error(exc)}; is the Docker daemon running?"
        ) from exc


def ensure_image(client: docker.DockerClient, images_dir: Path, log: Log = print) -> ImageInfo:
    """Return the node image of the recipe in ``images_dir``, building it if needed.

    Tries the registry path first and falls back to the offline debootstrap path
    on any failure of it. Raises RunError when no path works.
    """
    node_dir = node_recipe_dir(images_dir)
    full_hash = recipe_hash(node_dir)
    tag = f"{NODE_REPOSITORY}:{full_hash[:TAG_HEX]}"

    existing = _find_image(client, tag)
    if existing is not None:
        method = (existing.labels or {}).get(METHOD_LABEL, "unknown")
        log(f"image {tag}: found ({existing.id[:19]}, built via {method}); nothing to build")
        return ImageInfo(tag, existing.id, method, True, full_hash)

    try:
        image = _build_from_registry(client, node_dir, tag, full_hash, log)
        method = "registry"
    except _RegistryUnavailable as why:
        mirror = debian_mirror()
        log(
            f"image {tag}: no registry reachable ({why}); "
            f"building offline from debootstrap base (mirror {mirror})"
        )
        base = _ensure_debootstrap_base(client, node_dir, full_hash, mirror, log)
        method = "debootstrap"
        image = _build_node(client, node_dir, tag, base, full_hash, method)
    log(f"image {tag}: built via {method} ({image.id[:19]})")
    return ImageInfo(tag, image.id, method, False, full_hash)


# ------------------------------------------------------------------ registry path


def _build_from_registry(
    client: docker.DockerClient, node_dir: Path, tag: str, full_hash: str, log: Log
) -> docker.models.images.Image:
    """Build on ``REGISTRY_BASE``; any failure becomes _RegistryUnavailable."""
    if _find_image(client, REGISTRY_BASE) is None:
        log(f"image {tag}: pulling {REGISTRY_BASE}")
        _pull_with_deadline(client, REGISTRY_BASE)
    try:
        return _build_node(client, node_dir, tag, REGISTRY_BASE, full_hash, "registry")
    except RunError as exc:
        raise _RegistryUnavailable(f"build on {REGISTRY_BASE} failed: {exc}") from exc


def _pull_with_deadline(
    client: docker.DockerClient,
    ref: str,
    answer_timeout: float = REGISTRY_ANSWER_TIMEOUT_S,
    total_timeout: float = REGISTRY_PULL_TIMEOUT_S,
) -> None:
    """Pull ``ref``, giving up when the registry does not answer in time.

    The daemon answers a pull only once the registry did (or failed), and a
    firewalled registry can keep it waiting for minutes: the pull runs in a
    thread, and this waits ``answer_timeout`` for its first message. An
    abandoned pull may go on inside the daemon; it does no harm.
    """
    repository, _, tag = ref.rpartition(":")
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def worker() -> None:
        try:
            for message in client.api.pull(repository, tag=tag, stream=True, decode=True):
                events.put(("message", message))
            events.put(("done", None))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
            events.put(("error", exc))

    threading.Thread(target=worker, name=f"pull {ref}", daemon=True).start()
    deadline = time.monotonic() + total_timeout
    timeout = answer_timeout
    while True:
        try:
            kind, payload = events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            if timeout == answer_timeout:
                raise _RegistryUnavailable(
                    f"pull of {ref} got no answer within {answer_timeout:.0f} s"
                ) from None
            raise _RegistryUnavailable(
                f"pull of {ref} did not finish within {total_timeout:.0f} s"
            ) from None
        if kind == "error":
            raise _RegistryUnavailable(f"pull of {ref} failed: {short_error(payload)}")
        if kind == "done":
            return
        if isinstance(payload, dict) and payload.get("error"):
            raise _RegistryUnavailable(f"pull of {ref} failed: {short_error(payload['error'])}")
        timeout = deadline - time.monotonic()


# ------------------------------------------------------------------ building


def _build_node(
    client: docker.DockerClient,
    node_dir: Path,
    tag: str,
    base: str,
    full_hash: str,
    method: str,
) -> docker.models.images.Image:
    """``docker build`` of the node recipe on ``base``, without pulling."""
    try:
        image, _logs = client.images.build(
            path=str(node_dir),
            tag=tag,
            buildargs={"BASE": base},
            labels={RECIPE_LABEL: full_hash, METHOD_LABEL: method},
            pull=False,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        raise RunError(
            f"building {tag} on {base} failed: {_build_error_line(exc)}; "
            f"fix {node_dir}/Dockerfile or the base image"
        ) from exc
    except _DAEMON_ERRORS as exc:
        raise RunError(
            f"building {tag} on {base} failed: {short_error(exc)}; is the Docker daemon running?"
        ) from exc
    return image


def _build_error_line(exc: Any) -> str:
    """The build's own error plus the last output line before it."""
    last = ""
    for chunk in getattr(exc, "build_log", []) or []:
        if isinstance(chunk, dict) and chunk.get("stream", "").strip():
            last = chunk["stream"].strip().splitlines()[-1]
    msg = short_error(getattr(exc, "msg", exc))
    return f"{msg} (last output: {last})" if last and last not in msg else msg


# ------------------------------------------------------------------ offline path


def _ensure_debootstrap_base(
    client: docker.DockerClient, node_dir: Path, full_hash: str, mirror: str, log: Log
) -> str:
    """The imported debootstrap base for this recipe, made if missing."""
    ref = f"{BASE_REPOSITORY}:{full_hash[:TAG_HEX]}"
    if _find_image(client, ref) is not None:
        log(f"base {ref}: found; reusing it")
        return ref
    if shutil.which("debootstrap") is None:
        raise RunError("debootstrap is not installed: apt-get install debootstrap")
    packages = recipe_packages(node_dir)
    DEBOOTSTRAP_PARENT.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="tcplab-debootstrap-", dir=DEBOOTSTRAP_PARENT))
    try:
        started = time.monotonic()
        log(f"base {ref}: debootstrap {DEBIAN_SUITE} from {mirror} into {rootfs} (30-90 s)")
        run_debootstrap(rootfs, mirror, packages)
        log(f"base {ref}: debootstrap done in {time.monotonic() - started:.0f} s; importing")
        _import_rootfs(client, rootfs, ref, full_hash)
    finally:
        remove_rootfs(rootfs, log)
    return ref


def _tar_chunks(proc: subprocess.Popen[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    assert proc.stdout is not None
    while chunk := proc.stdout.read(size):
        yield chunk


def _import_rootfs(client: docker.DockerClient, rootfs: Path, ref: str, full_hash: str) -> None:
    """Stream ``tar -C rootfs -c .`` into the daemon's image import as ``ref``."""
    repository, _, tag = ref.rpartition(":")
    cmd = ["tar", "-C", str(rootfs), "--numeric-owner"]
    cmd += [f"--exclude={pattern}" for pattern in BASE_TAR_EXCLUDES]
    cmd += ["-c", "."]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        result = client.api.import_image_from_data(
            _tar_chunks(proc),
            repository=repository,
            tag=tag,
            changes=[f"LABEL {RECIPE_LABEL}={full_hash}", f"ENV PATH={DEFAULT_PATH}"],
        )
    except _DAEMON_ERRORS as exc:
        proc.kill()
        raise RunError(
            f"importing {ref} failed: {short_error(exc)}; is the Docker daemon running?"
        ) from exc
    finally:
        _, err = proc.communicate()
    if proc.returncode != 0:
        _remove_image_quietly(client, ref)
        raise RunError(
            f"tar of {rootfs} failed (exit {proc.returncode}): "
            f"{short_error(err.decode(errors='replace'))}; is there enough space in /var/tmp?"
        )
    error = _import_error(result)
    if error:
        raise RunError(f"importing {ref} failed: {error}; see the Docker daemon log")


def _import_error(result: Any) -> str | None:
    """The daemon answers an import with JSON lines; an ``error`` line means failure."""
    for line in str(result).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            return short_error(message["error"])
    return None


def _remove_image_quietly(client: docker.DockerClient, ref: str) -> None:
    try:
        client.images.remove(ref, force=True)
    except docker.errors.APIError:
        pass


