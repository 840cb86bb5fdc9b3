"""Stand-ins for lab hosts, for unit tests of the run's logic without root.

A :class:`FakeRunner` answers the commands the run sends to a host (the sock_diag summary,
``cat`` of a /proc file) from what the test set; a :class:`FakeChannel` is a side process
that answers operations from a script of replies, or never (a stalled side).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator

from orchestrator.backends.base import LabHost
from orchestrator.config import HostSpec
from orchestrator.errors import RunError
from orchestrator.runner import Command, LineChannel, Result, Runner


class FakeRunner(Runner):
    """A host whose sockets are ``states`` ({state: count}) and whose files are ``files``.

    Each sock_diag summary (``python3 -c <sockdiag.py>``) reports the next entry of
    ``states_seq`` (the last one repeats): the sockets as they change while the run polls.
    """

    def __init__(self, host: str, states_seq: list[dict[str, int]] | None = None,
                 files: dict[str, str] | None = None) -> None:
        self.host = host
        self.states_seq = deque(states_seq or [{}])
        self.files = dict(files or {})
        self.commands: list[list[str]] = []

    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result:
        argv = [str(c) for c in cmd]
        self.commands.append(argv[:2])
        if argv[:2] == ["python3", "-c"]:
            states = self.states_seq[0]
            if len(self.states_seq) > 1:
                self.states_seq.popleft()
            summary = {"states": states,
                       "sums": {s: {"recv_q": 0, "send_q": 0} for s in states},
                       "medians": {s: {"recv_q": 0.0, "send_q": 0.0} for s in states}}
            return Result(" ".join(argv[:2]), self.host, 0, json.dumps(summary), "")
        if argv[0] == "cat" and argv[1] in self.files:
            return Result(" ".join(argv), self.host, 0, self.files[argv[1]], "")
        raise RunError(f"{self.host}: the fake runner has no answer to {argv[:2]}")

    def spawn(self, cmd: Command) -> LineChannel:
        raise NotImplementedError

    def stream(self, cmd: Command) -> Iterator[str]:
        return iter(())


class FakeChannel(LineChannel):
    """A side process: each ``receive`` gives the next scripted reply, then nothing.

    With no replies left it behaves as a stalled side: ``receive`` times out (returns
    None) forever.
    """

    def __init__(self, host: str, replies: list[dict] | None = None) -> None:
        self.host = host
        self.replies = deque(replies or [])
        self.sent: list[dict] = []
        self.closed = False
        self.close_timeout: float | None = None

    def send(self, obj: dict) -> None:
        self.sent.append(obj)

    def receive(self, timeout: float) -> dict | None:
        return self.replies.popleft() if self.replies else None

    def close(self, timeout: float = 10.0) -> None:
        self.closed, self.close_timeout = True, timeout


def lab_host(name: str, role: str, runner: Runner | None = None,
             sysctls: dict[str, str] | None = None) -> LabHost:
    """A LabHost on a fake runner."""
    return LabHost(HostSpec(name, role, "198.18.0.2"), runner or FakeRunner(name),
                   dict(sysctls or {}))


class FakeKernel:
    """A measured kernel whose /proc files are given texts (a MeasuredKernel)."""

    local = False
    release = "6.18"
    page_size = 4096

    def __init__(self, files: dict[str, str], hosts: list[str], label: str = "fake") -> None:
        self.files = files
        self.hosts = hosts
        self.label = label
        self.shrunk = 0

    def read(self, path: str) -> str:
        return self.files[path]

    def shrink_caches(self) -> None:
        self.shrunk += 1

    def slab_aliases(self) -> dict[str, list[str]]:
        return {}

    def parts(self) -> list[FakeKernel]:
        return [self]
