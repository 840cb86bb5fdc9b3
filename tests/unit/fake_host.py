"""A recording stand-in for the runners a backend makes on this machine (no root needed).

``FakeHost.runner`` has the signature of :class:`~orchestrator.runner.LocalRunner`
(``runner(host, prefix=())``) and is passed to a backend as its ``runner_factory``.
Every command any of its runners runs is kept in ``calls`` in order, with the journal
entries written before it, so a test can check both the command sequence of ``up()``
and that each resource was journalled before the command creating it ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator import hostctl
from orchestrator.journal import Journal
from orchestrator.runner import Command, LineChannel, Result, Runner

#: (exit code, stdout, stderr) for a command line, or None to use the default answer.
Answer = Callable[[list[str]], tuple[int, str, str] | None]


@dataclass(frozen=True)
class Call:
    host: str
    argv: list[str]  # the runner's prefix, then the command
    journal: list[dict]  # the journal's entries when the command ran
    stdin: str | None = None

    @property
    def line(self) -> str:
        return " ".join(self.argv)


class FakeHost:
    """Runners that run nothing: each command is recorded and answered."""

    def __init__(self, journal: Journal, answer: Answer | None = None) -> None:
        self.journal = journal
        self.answer = answer
        self.calls: list[Call] = []

    def runner(self, host: str, prefix: Sequence[str] = ()) -> FakeRunner:
        return FakeRunner(self, host, list(prefix))

    def lines(self, host: str | None = None) -> list[str]:
        return [c.line for c in self.calls if host is None or c.host == host]

    def reply(self, argv: list[str]) -> tuple[int, str, str]:
        if self.answer is not None:
            given = self.answer(argv)
            if given is not None:
                return given
        return default_reply(argv)


def default_reply(argv: list[str]) -> tuple[int, str, str]:
    """Success; for the sysctl writer (hostctl.apply_argv) the values it was asked to set."""
    if "-c" in argv and hostctl.APPLY_AND_DUMP in argv:
        wanted = json.loads(argv[-1])
        return 0, json.dumps({"values": wanted, "errors": {}}), ""
    return 0, "", ""


class FakeRunner(Runner):
    def __init__(self, fake: FakeHost, host: str, prefix: list[str]) -> None:
        self.fake = fake
        self.host = host
        self.prefix = prefix

    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result:
        argv = self.prefix + (["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd))
        self.fake.calls.append(Call(self.host, argv, self.fake.journal.entries(), stdin))
        code, out, err = self.fake.reply(argv)
        result = Result(" ".join(argv), self.host, code, out, err)
        return result.check() if check else result

    def spawn(self, cmd: Command) -> LineChannel:
        raise NotImplementedError("FakeRunner does not start side scripts")
