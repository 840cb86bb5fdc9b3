"""Assemble a run's result dict (the schema is documented in docs/results.md)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, resources, sysctls, topology
from ..measure import analysis, counters

if TYPE_CHECKING:  # types only: loading results must not load the backends
    from ..backends import Backend, LabHost
    from ..errors import LabError
    from ..measure.snapshot import Snapshot
    from ..plan import Plan


def build_result(*, plan: Plan, run_id: str, started: float, error: LabError | None,
                 backend: Backend | None, hosts: dict[str, LabHost], snapshots: list[Snapshot],
                 checkpoints: list[dict[str, Any]], events: dict[str, Any],
                 aliases: dict[str, list[str]], kernel_local: bool,
                 timeline: dict[str, Any] | None) -> dict[str, Any]:
    """The result of one run, complete or not (``error``: why it stopped).

    ``aliases``: SLUB merges to record when no snapshot carries the measured kernel's own;
    ``kernel_local``: the lab measured this machine's kernel (its host-wide net.* sysctls
    are then recorded too).
    """
    hosts_meta = {
        h.name: {"role": h.role, "address": h.address,
                 "sysctls_pinned": plan.host_sysctls.get(h.name, {}),
                 "net_sysctls": h.sysctls, **h.info}
        for h in hosts.values()
    }
    from . import SCHEMA

    first = snapshots[0].slab if snapshots else {}
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "status": "complete" if error is None else "incomplete",
        "error": None if error is None else str(error),
        "started": started,
        "finished": time.time(),
        "scenario": plan.scenario.to_dict(),
        "profile": plan.profile.to_dict(),
        "lab": plan.lab.to_dict(),
        "metadata": {
            "tool_version": __version__,
            "git_commit": _git_commit(resources.checkout()) if resources.checkout() else None,
            "kernel": {"release": platform.release(), "version": platform.version(),
                       "machine": platform.machine()},
            "hostname": socket.gethostname(),
            "python": platform.python_version(),
            **(backend.metadata() if backend else {"backend": plan.backend}),
            "backend_choice": plan.notes[0] if plan.notes else plan.backend,
            "hosts": hosts_meta,
            "host_sysctls": plan.global_sysctls,
            # every host-wide net.* value of this machine, when the lab runs on it
            "machine_net_sysctls": sysctls.host_wide_values() if kernel_local else None,
            "shards": plan.shards,
            # which client got how many connections, on which server ports; the drawing
            "clients": topology.split_summary(plan.client_shards),
            "topology": {**topology.describe(plan.lab), "text": topology.render(plan.lab)},
            "workers": events.get("workers"),
            # link conditions (docs/conditions.md): as asked, sized, engine, where applied
            **({"link": events["link"]} if events.get("link") else {}),
            # the measured kernel's machine's (a VM's or remote host's own), else ours
            "page_size": snapshots[0].page_size if snapshots else os.sysconf("SC_PAGE_SIZE"),
            # SLUB merges of the measured kernel(s): this machine's, or the union of
            # the VMs'/remote hosts' own when the lab measured other kernels
            "slab_aliases": (snapshots[0].aliases
                             if snapshots and snapshots[0].aliases is not None else aliases),
            "objsize": {k: v.objsize for k, v in first.items()},
            "idle_pair_estimate": (analysis.idle_pair_estimate(first, plan.options.family)
                                   if first else None),
            "family": plan.options.family,
            "server_model": plan.options.server_model,
            "counters": counters_note(),
            **({"bundle": plan.options.bundle} if plan.options.bundle else {}),
        },
        "ramp": events.get("ramp"),
        "transfers": events.get("transfers") or [],
        "slope": analysis.fit_levels(checkpoints) if plan.options.levels > 1 else None,
        "timeline": timeline,
        "checkpoints": checkpoints,
    }


def counters_note() -> dict[str, Any]:
    """What ``checkpoints[].counters`` holds (recorded once, in the metadata)."""
    return {"files": list(counters.FILES), "sections": list(counters.SECTIONS),
            "names": "nstat (section + counter: TcpExtListenOverflows)",
            "since": "baseline", "omitted": "counters whose delta is zero"}


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
