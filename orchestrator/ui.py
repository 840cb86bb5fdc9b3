"""What a run prints while it works: numbered phases, a progress bar on a terminal,
plain log lines otherwise (CI logs, pipes).

Everything goes to one stream, stderr by default, so stdout carries only the report (or,
with ``--json``, only the JSON): the rich progress bar is given a console on that same
stream (rich's ``Progress()`` alone would draw on stdout). ``NO_COLOR`` (any value, see
no-color.org) turns colour off; ``quiet`` keeps the stream silent but for errors;
``verbose`` echoes every command run on a lab host, with the host, as it starts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class UI:
    def __init__(self, stream: TextIO | None = None, phases: int = 5, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.phases = phases
        self.phase_no = 0
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.tty = self.stream.isatty()

    @staticmethod
    def color() -> bool:
        """False when ``NO_COLOR`` is set to anything non-empty (no-color.org)."""
        return not os.environ.get("NO_COLOR")

    def console(self) -> Any:
        """A rich console drawing on this UI's stream, colour as ``NO_COLOR`` says."""
        from rich.console import Console

        return Console(file=self.stream, no_color=not self.color(),
                       color_system="auto" if self.color() else None)

    def command(self, host: str, command: str) -> None:
        """``-v``: one line per command run on a lab host, as it starts."""
        if self.verbose:
            self.line(f"      $ [{host}] {command}")

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def phase(self, name: str, text: str) -> None:
        self.phase_no += 1
        self.line(f"[{self.phase_no}/{self.phases}] {name:<8} {text}")

    def note(self, text: str) -> None:
        self.line(f"      {text}")

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Ticker]:
        ticker = Ticker(self, label, total)
        try:
            yield ticker
        finally:
            ticker.finish()


class Ticker:
    """Counts progress; a rich bar on a terminal, a log line every 25% otherwise."""

    def __init__(self, ui: UI, label: str, total: int) -> None:
        self.ui = ui
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.next_log = 0.25
        self.bar = None
        if ui.tty and not ui.quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn(f"      {label}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True,
                                console=ui.console())
            self.bar.start()
            self.task = self.bar.add_task(label, total=self.total)

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.done / self.total >= self.next_log and self.done < self.total:
            self.ui.note(f"{self.label} {self.done:,}/{self.total:,}")
            self.next_log += 0.25

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
