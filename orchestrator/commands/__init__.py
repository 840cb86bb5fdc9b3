"""The subcommands behind ``tcplab``: run (commands/run.py), saved results (saved.py),
this machine (machine.py). orchestrator/cli.py parses the command line and dispatches."""

from __future__ import annotations

from pathlib import Path


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
