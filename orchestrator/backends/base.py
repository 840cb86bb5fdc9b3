"""The Backend facade: what the run needs from any kind of lab host.

Like Kathara's manager: the runner and the CLI only talk to this interface; netns,
docker (and later ssh/vm) implement it and mirror each other.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import hostctl
from ..config import HostSpec, Lab
from ..errors import RunError
from ..journal import Journal
from ..measure.kernel import LocalKernel, MeasuredKernel
from ..runner import LineChannel, Runner


@dataclass
class LabHost:
    """A lab host as the run sees it: a name, a role, an address, a runner."""

    spec: HostSpec
    runner: Runner
    sysctls: dict[str, str] = field(default_factory=dict)  # every net.* value, read back
    info: dict[str, Any] = field(default_factory=dict)  # backend details (netns, container id…)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def address(self) -> str:
        return self.spec.address


class Backend(ABC):
    """Creates the lab hosts of one run, gives a runner for each, removes them."""

    name: str = ""

    def __init__(self, lab: Lab, run_id: str, journal: Journal, root: Path,
                 log: Callable[[str], None], family: str = "ipv4") -> None:
        self.lab = lab
        self.family = family  # ipv4 | ipv6: the address family the lab's sockets use
        self.run_id = run_id
        self.journal = journal
        self.root = root  # the working directory; tcplab's own files: orchestrator/resources.py
        self.log = log
        self.hosts: dict[str, LabHost] = {}

    # -- checks before anything is created ---------------------------------------
    @abstractmethod
    def preflight(self) -> None:
        """Raise InputError when this backend cannot run here. Creates nothing."""

    # -- lifecycle ------------------------------------------------------------------
    @abstractmethod
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        """Create every host with its per-namespace sysctls pinned; read them back."""

    @abstractmethod
    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        """How to remove each kind of journal entry this backend writes."""

    def down(self) -> list[str]:
        """Remove everything this run created (journal undo). Returns problems."""
        return self.journal.undo(self.undo_handlers(), self.log)

    # -- on the hosts ---------------------------------------------------------------------
    @abstractmethod
    def side_command(self, host: LabHost) -> list[str]:
        """The command that starts the side script on a host."""

    def start_side(self, host: LabHost) -> LineChannel:
        channel = host.runner.spawn(self.side_command(host))
        pid = getattr(channel, "pid", None)
        if pid is not None:
            from ..journal import process_start_time

            self.journal.record("process", pid=pid, start=process_start_time(pid), host=host.name)
        return channel

    def apply_sysctls(self, host: LabHost, wanted: Mapping[str, str]) -> dict[str, str]:
        """Write ``wanted`` on the host, read back every net.* value, fail on a mismatch."""
        out = host.runner.run(hostctl.apply_argv(wanted), timeout=60).stdout
        data = json.loads(out)
        values: dict[str, str] = data["values"]
        bad = {k: v for k, v in wanted.items() if values.get(k) != v}
        if data["errors"] or bad:
            detail = "; ".join(
                f"{k}: wanted {v!r}, got {values.get(k)!r} ({data['errors'].get(k, 'not applied')})"
                for k, v in bad.items()
            )
            raise RunError(f"{host.name}: sysctls did not take: {detail}{_hint(bad, data['errors'], values)}")
        return values

    def netns_pid(self, host: LabHost, side: LineChannel) -> int | None:
        """A pid on this machine inside the host's network namespace (None: not local).

        Lets the timeline sampler read /proc/<pid>/net/sockstat without spawning anything.
        """
        return getattr(side, "pid", None)

    def block_final_acks(self, host: LabHost) -> None:
        """Drop the host's outgoing pure ACKs (scenario block_acks: half-open connections).

        Needs control of the host's packet filter; backends that have it override this.
        """
        raise RunError(f"{host.name}: the {self.name} backend cannot filter packets on a lab "
                       "host; run this scenario with BACKEND=netns")

    def link_runner(self, host: LabHost) -> Runner:
        """Runs commands as root in the host's network namespace, for the link conditions
        (tc, iptables, the delay line): the host's own runner unless a backend keeps its
        hosts unprivileged (docker)."""
        return host.runner

    def measured_kernel(self) -> MeasuredKernel:
        """The kernel(s) whose memory the run measures: this machine's for netns and
        docker; the ssh and vm backends have one per machine or VM (a KernelSet), so each
        side's kernel memory is measured on its own."""
        return LocalKernel(list(self.hosts))

    def metadata(self) -> dict[str, Any]:
        return {"backend": self.name}

    def diagnose(self) -> list[str]:
        """After a failure: what is known of hosts that died (one line each; [] if none)."""
        return []

    def clock_offsets(self) -> dict[str, float]:
        """By host, its clock minus this machine's, where the backend measured it (ssh);
        {} where the hosts share this machine's clock or nothing was measured."""
        return {}

    def per_host_memory(self, host: LabHost) -> dict[str, Any] | None:
        """Backend-specific per-host memory accounting (cgroups), if any."""
        return None


def _hint(bad: Mapping[str, str], errors: Mapping[str, str], values: Mapping[str, str]) -> str:
    """What to do about a value the kernel refused, where the reason is known."""
    key = "net.ipv4.tcp_congestion_control"
    if key in bad and "not permitted" in errors.get(key, "").lower():
        allowed = values.get("net.ipv4.tcp_allowed_congestion_control", "?")
        return (f". Outside the first network namespace the kernel takes only the algorithms "
                f"the machine allows (net.ipv4.tcp_allowed_congestion_control: {allowed}): "
                f"choose one of those, or add {bad[key]} to that list on the machine")
    return ""
