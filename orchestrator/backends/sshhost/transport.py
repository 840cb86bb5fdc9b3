"""How the ssh backend reaches a lab host: the login target and the runner.

:class:`HostRunner` is an :class:`~orchestrator.ssh.SshRunner` that adds ``sudo -n`` for a
non-root user and leaves the SSH control connection out of the socket counts: on a real
host it is a TCP socket of the very kernel being measured.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...runner import Command
from ...ssh import SshRunner, quote


@dataclass(frozen=True)
class Target:
    """How to log in to a lab host."""

    address: str
    user: str = "root"
    port: int = 22
    key: str = ""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Target:
        return cls(str(data["address"]), str(data.get("user", "root")),
                   int(data.get("port", 22)), str(data.get("key", "")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def filtered_sockdiag_argv(cmd: Command, ctl_port: int, peer: str) -> Command:
    """Add sockdiag's control-connection filter to a sock_diag summary command."""
    from ...measure.probes import SOCKDIAG

    if isinstance(cmd, str) or len(cmd) < 3 or list(cmd[:2]) != ["python3", "-c"]:
        return cmd
    if cmd[2] != SOCKDIAG.read_text():
        return cmd
    return [*cmd, "--skip-port", str(ctl_port), "--keep-peer", peer]


class HostRunner(SshRunner):
    """An SshRunner for a lab host: ``sudo -n`` for a non-root user, and the SSH control
    connection left out of every sock_diag summary.

    ``ctl_port``: the port sshd listens on *inside* the host (the local port of the
    control connection there); ``peer``: the other lab host's address (a socket to it on
    that port is lab traffic, kept).
    """

    def __init__(self, host: str, target: Target, *, ctl_port: int | None = None,
                 peer: str = "", sudo: bool | None = None, **kwargs: Any) -> None:
        super().__init__(host, target.address, target.key, user=target.user, port=target.port,
                         **kwargs)
        self.target = target
        self.ctl_port = target.port if ctl_port is None else ctl_port
        self.peer = peer
        self.sudo = (target.user != "root") if sudo is None else sudo

    def command(self, cmd: Command) -> str:
        if self.peer:
            cmd = filtered_sockdiag_argv(cmd, self.ctl_port, self.peer)
        text = quote(cmd)
        return f"sudo -n -- sh -c {shlex.quote(text)}" if self.sudo else text
