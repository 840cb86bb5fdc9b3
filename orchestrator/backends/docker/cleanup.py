"""Cleanup of the docker backend: journal undo and ``tcplab wipe`` of labelled objects.

Every network and container carries the label ``tcplab.run=<run id>`` and is journalled
before it is created. Cleanup removes an object only when it carries the label of the
run being cleaned: unlabelled objects are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ...journal import alive, state_root
from .client import connect, sdk, short_error

LABEL_RUN = "tcplab.run"
LABEL_LAB = "tcplab.lab"
LABEL_ROLE = "tcplab.role"
LABEL_OWNER = "tcplab.owner"  # "<pid>:<start time>" of the orchestrator that made it
LABEL_STATE = "tcplab.state"  # the state directory holding the run's journal

#: How long removing a container may keep failing. Docker gives up on a kill after ~10 s
#: ("did not receive an exit event") while the kernel is still closing the container's
#: sockets: a million of them take about half a minute. Retried, not given up.
REMOVE_WAIT_S = 180.0


def _remove_container(container: Any, wait: float = REMOVE_WAIT_S) -> None:
    docker = sdk()
    deadline = time.monotonic() + wait
    while True:
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)

def cleanup_handlers(client: Any) -> dict[str, Callable[[dict], None]]:
    docker = sdk()

    def undo_container(entry: dict) -> None:
        try:
            container = client.containers.get(entry["name"])
        except docker.errors.NotFound:
            return  # never created, or already gone
        if (container.labels or {}).get(LABEL_RUN) != entry.get("run"):
            return  # not ours (same name, other owner): never touched
        _remove_container(container)

    def undo_network(entry: dict) -> None:
        try:
            network = client.networks.get(entry["name"])
        except docker.errors.NotFound:
            return
        if (network.attrs.get("Labels") or {}).get(LABEL_RUN) != entry.get("run"):
            return
        try:
            network.remove()
        except docker.errors.NotFound:
            pass

    return {"container": undo_container, "network": undo_network}


def docker_undo_handlers() -> dict[str, Callable[[dict], None]]:
    """Undo handlers for container and network journal entries. Raises if no daemon answers."""
    return cleanup_handlers(connect())


def _owner_alive(labels: Mapping[str, str]) -> bool:
    owner = labels.get(LABEL_OWNER, "")
    pid, _, start = owner.partition(":")
    if not pid.isdigit():
        return False
    return alive(int(pid), int(start) if start.isdigit() else None)


def wipe_labelled(keep_runs: set[str]) -> list[str]:
    """Remove every container and network labelled ``tcplab.run`` of a run not in keep_runs.

    Objects of a run journalled in another state directory (``TCPLAB_STATE_DIR``) whose
    orchestrator still lives are left alone too: that run is working, not left behind.
    """
    docker = sdk()
    client = connect()
    here = str(state_root().resolve())
    messages: list[str] = []

    def keep(labels: Mapping[str, str], what: str) -> bool:
        run = labels.get(LABEL_RUN, "")
        if run in keep_runs:
            return True
        if labels.get(LABEL_STATE, here) != here and _owner_alive(labels):
            messages.append(f"docker: {what} of run {run} left alone: its orchestrator "
                            f"(pid {labels[LABEL_OWNER].split(':')[0]}) still runs")
            return True
        return False

    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        labels = container.labels or {}
        if keep(labels, f"container {container.name}"):
            continue
        try:
            _remove_container(container)
            messages.append(f"docker: removed container {container.name} "
                            f"(run {labels.get(LABEL_RUN)})")
        except docker.errors.APIError as exc:
            messages.append(f"docker: could not remove container {container.name}: {short_error(exc)}")
    for network in client.networks.list(filters={"label": LABEL_RUN}):
        labels = network.attrs.get("Labels") or {}
        if keep(labels, f"network {network.name}"):
            continue
        try:
            network.remove()
            messages.append(f"docker: removed network {network.name} (run {labels.get(LABEL_RUN)})")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            messages.append(f"docker: could not remove network {network.name}: {short_error(exc)}")
    return messages

