"""The ledger during one run: started after the baseline snapshot, dumped at each later
checkpoint into the checkpoint's record, stopped at teardown (and by the journal)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..backends import LabHost
from ..errors import LabError, RunError
from ..journal import Journal
from .attribution import ledger_section, socket_caches
from .parse import Symbols, parse_dump
from .tracer import Tracer

OBJECTS_PER_CONNECTION = 40  # map room: live objects a connection pair may hold, generous


def netns_inode(host: LabHost) -> int:
    """The inode number of the host's network namespace, as the kernel's task/device see it."""
    out = host.runner.run(["readlink", "/proc/self/ns/net"], timeout=30).stdout.strip()
    m = re.fullmatch(r"net:\[(\d+)\]", out)
    if not m:
        raise RunError(f"ledger: cannot read the network namespace of {host.name} ({out!r})")
    return int(m.group(1))


class LedgerSession:
    def __init__(self, journal: Journal, raw_dir: Path, hosts: dict[str, LabHost],
                 connections: int) -> None:
        self.hosts = {netns_inode(h): name for name, h in hosts.items()}
        if len(self.hosts) != len(hosts):
            raise RunError("ledger: two lab hosts share a network namespace; the ledger "
                           "tells hosts apart by namespace")
        self.raw_dir = raw_dir
        room = max(200_000, OBJECTS_PER_CONNECTION * connections)
        self.tracer = Tracer(journal, raw_dir, list(self.hosts), room)
        self.start_seconds = 0.0
        self.symbols: Symbols | None = None

    def start(self) -> None:
        self.start_seconds = self.tracer.start()
        self.symbols = Symbols(Path("/proc/kallsyms").read_text())

    def checkpoint(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Dump the live objects now and return the checkpoint's ledger section."""
        assert self.symbols is not None, "start() first"
        text, seconds = self.tracer.dump()
        (self.raw_dir / f"ledger-{name}.txt").write_text(text)
        section = ledger_section(parse_dump(text), self.hosts, self.symbols,
                                 int(record.get("connections") or 0), socket_caches(record))
        section["dump_seconds"] = round(seconds, 3)
        section["missed_events"] = self.tracer.missed()
        section["start_seconds"] = round(self.start_seconds, 3)
        return section

    def close(self) -> None:
        try:
            self.tracer.stop()
        except (OSError, LabError):
            pass  # the journal's undo removes the process anyway
