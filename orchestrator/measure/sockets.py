"""Socket summaries: one implementation (scenarios/sockdiag.py) for live dumps and ss text.

The summary code must run on lab hosts with nothing but python3, so it lives in the side
code (scenarios/sockdiag.py, run there as ``python3 -c``). The orchestrator loads the same
file as a module to summarise parsed ``ss -tmni`` text (the captures in tests/data), so
the captured-data tests exercise the code the runs use.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any

from .. import resources
from .parsers import SsSocket, SsSummary

SOCKDIAG = resources.sockdiag_script()


def sockdiag_argv(with_mem: bool = True) -> list[str]:
    """Run scenarios/sockdiag.py on a host without copying it there (python3 -c)."""
    argv = ["python3", "-c", SOCKDIAG.read_text()]
    return argv if with_mem else argv + ["--no-mem"]


@cache
def sockdiag() -> ModuleType:
    """scenarios/sockdiag.py as a module of this process."""
    spec = importlib.util.spec_from_file_location("tcplab_sockdiag", SOCKDIAG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_dict(data: dict[str, Any]) -> SsSummary:
    """The summary sockdiag.py printed (``Summary.to_dict()``)."""
    return SsSummary(data["states"], data["sums"], data["medians"],
                     data.get("skmem_sockets", {}), data.get("ofo_inferred", {}))


def summarize_ss(sockets: Iterable[SsSocket],
                 exclude_states: Iterable[str] = ("LISTEN",)) -> SsSummary:
    """Count parsed ``ss -tmni`` sockets by state; sums and medians of queues and skmem.

    Streaming through sockdiag's ``Summary``: memory grows with the number of distinct
    socket situations, not with the number of sockets.
    """
    summary = sockdiag().Summary(with_mem=True)
    for sock in sockets:
        summary.add_socket(sock.state, sock.recv_q, sock.send_q, sock.skmem)
    return from_dict(summary.to_dict(exclude=tuple(exclude_states)))
