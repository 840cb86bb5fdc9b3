"""Goodput of the scenario's transfers: bytes moved beside the bytes held.

A transfer is a ``read`` step and the ``send`` before it that gave it its bytes. The
reading side's workers time each connection, from the read's start to its last byte
(scenarios/side_worker.py, ``Goodput``) and reply with mergeable sums (count, sum and sum
of squares, minimum and maximum of the per-connection goodputs; first start, last end);
a background read's come with the next ``join``. This module merges them over the
reading hosts, places their times on this machine's clock (each side's clock offset,
:attr:`Sides.offsets`) and writes one record per transfer into the result's
``transfers``.

The read step is sent after the send step's reply, so a connection's span starts when
both ends are at work: data the sender queued before is delivered at read speed. Also
recorded: the span from the sender's first byte (``from_first_sent_seconds``, this
machine's clock) and the span the orchestrator itself saw, from issuing the send to the
reply that said the read was done (``orchestrator_seconds``: an upper bound, it includes
the messages' latency, and for a background read everything until the ``join``).
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

from .. import resources
from ..scenario import Step

Summary = dict[str, Any]  # a side's goodput summary (see side_worker.Goodput.summary)


@cache
def _side_worker() -> ModuleType:
    """scenarios/side_worker.py as a module of this process: one merge for the side's
    workers and the orchestrator's hosts (as measure/sockets.py does with sockdiag.py)."""
    spec = importlib.util.spec_from_file_location("tcplab_side_worker",
                                                  resources.path("scenarios/side_worker.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def merge(a: Summary, b: Summary) -> Summary:
    """Two goodput summaries (hosts of a role) as one; times on one clock."""
    return _side_worker().merge_transfer(a, b)


def figures(summary: Summary) -> dict[str, Any]:
    """Connections, bytes, seconds and goodput (bytes/s, in total and per connection: mean,
    standard deviation, minimum, maximum) of one merged summary."""
    n = summary["connections"]
    seconds = max(summary["finished"] - summary["started"], 1e-6)
    mean = summary["sum"] / n
    var = max(summary["sumsq"] / n - mean * mean, 0.0)
    return {"connections": n, "bytes": summary["bytes"], "seconds": round(seconds, 6),
            "goodput": round(summary["bytes"] / seconds, 1),
            "per_connection": {"mean": round(mean, 1), "sd": round(math.sqrt(var), 1),
                               "min": round(summary["min"], 1), "max": round(summary["max"], 1)}}


def on_our_clock(summary: Summary, offset: float) -> Summary:
    return dict(summary, started=summary["started"] + offset,
                finished=summary["finished"] + offset)


@dataclass
class Transfers:
    """The run's transfers: a send's start by role, reads waiting for a join, records."""

    offsets: dict[str, float]  # by host: our clock minus the side's (Sides.offsets, live)
    roles: dict[str, str]  # host -> role
    records: list[dict[str, Any]] = field(default_factory=list)
    #: by sending role: {"first_sent": our clock, "issued": our clock}
    sent: dict[str, dict[str, float]] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)  # background reads

    def send(self, role: str, issued: float, replies: dict[str, dict]) -> None:
        """A send step's replies: each host's first byte, placed on our clock."""
        firsts = [r["first_sent"] + self.offsets.get(h, 0.0) for h, r in replies.items()
                  if isinstance(r.get("first_sent"), (int, float))]
        self.sent[role] = {"issued": issued, **({"first_sent": min(firsts)} if firsts else {})}

    def read(self, index: int, step: Step, sender: str, per_connection: int,
             replies: dict[str, dict]) -> None:
        """A read step's replies: its record now (foreground), or at the join."""
        entry = {"step": index, "sender": sender, "receiver": step.side,
                 "background": step.background, "rate": step.rate or None,
                 "bytes_per_connection": per_connection, **self.sent.get(sender, {})}
        if step.background:
            self.waiting.append(entry)
        else:
            self._record(entry, replies, time.time())

    def join(self, replies: dict[str, dict]) -> None:
        """A join's replies carry the background reads' summaries: each reading role's
        hosts answer for that role's read (a role's last read before the join)."""
        now = time.time()
        last = {e["receiver"]: e for e in self.waiting}
        for entry in last.values():
            self._record(entry, replies, now)
        self.waiting = []

    def _record(self, entry: dict[str, Any], replies: dict[str, dict], done: float) -> None:
        hosts = {h: on_our_clock(r["transfer"], self.offsets.get(h, 0.0))
                 for h, r in replies.items()
                 if r.get("transfer") and self.roles.get(h) == entry["receiver"]}
        if not hosts:
            return  # nothing was read (no connection, or no bytes)
        total: Summary = {}
        for summary in hosts.values():
            total = merge(total, summary)
        issued = entry.pop("issued", None)
        first = entry.pop("first_sent", None)
        record = {**entry, **figures(total)}
        if first is not None:
            record["from_first_sent_seconds"] = round(total["finished"] - first, 6)
        if issued is not None:
            record["orchestrator_seconds"] = round(done - issued, 6)
        if len(hosts) > 1:
            record["hosts"] = {h: figures(s) for h, s in hosts.items()}
        self.records.append(record)
