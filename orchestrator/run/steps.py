"""The scenario's steps, one small handler each, looked up in :data:`HANDLERS`.

A step that names a side (``send``, ``read``, ``close``, ``abort``, ``block_acks``) addresses a role
and goes to every host of that role. A handler reads and updates the run's
:class:`StepState` (bytes sent and not yet read, data still in the application).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import faults
from ..backends import Backend, LabHost
from ..plan import Plan
from ..scenario import Expect, Step
from ..ui import UI
from .checkpoint import Checkpoints
from .sides import PEER_ROLE, Sides
from .transfers import Transfers


@dataclass
class StepState:
    """What the steps of a run share."""

    plan: Plan
    ui: UI
    backend: Backend
    hosts: dict[str, LabHost]
    sides: Sides
    checkpoints: Checkpoints
    events: dict[str, Any]
    expectations: dict[str, Expect]
    #: by role: bytes per connection it sent that its peer has not read yet
    unread: dict[str, int] = field(default_factory=dict)
    app_pending: bool = False  # a sender's application still holds data (buffers full)
    transfers: Transfers | None = None  # goodput of the reads (made on first use)
    index: int = -1  # the step being run (its position in the scenario)

    def moved(self) -> Transfers:
        if self.transfers is None:
            self.transfers = Transfers(self.sides.offsets, dict(self.sides.roles))
            self.events["transfers"] = self.transfers.records
        return self.transfers

    @property
    def n(self) -> int:
        return self.plan.scenario.connections


def level_plans(shards: list[list[int]], levels: int) -> list[dict[str, int]]:
    """Per level, the connections to add on each server port ({port: count}).

    Level i brings every port to round(count * i / levels), so after the last level
    each port holds its whole shard and the levels add up exactly.
    """
    levels = max(1, levels)
    out = []
    for i in range(1, levels + 1):
        out.append({str(port): round(count * i / levels) - round(count * (i - 1) / levels)
                    for port, count in shards})
    return out


def host_levels(plan: Plan, hosts: list[str]) -> list[dict[str, dict[str, int]]]:
    """Per level, each side host's connections to add per server port.

    A client takes its own shards in levels; the server accepts, on each port, what the
    clients connect there at that level (their sum), so every accept has its connect.
    """
    levels = plan.options.levels
    clients = [h for h in hosts if h in plan.client_shards]
    per_client = {c: level_plans(plan.client_shards[c], levels) for c in clients}
    out = []
    for i, whole in enumerate(level_plans(plan.shards, levels)):
        step: dict[str, dict[str, int]] = {c: per_client[c][i] for c in clients}
        summed = {port: sum(step[c].get(port, 0) for c in clients) for port in whole}
        for host in hosts:
            if host not in step:
                step[host] = summed if clients else whole
        out.append(step)
    return out


def level_expect(sides: Sides, done: int, per_host: dict[str, int] | None = None) -> Expect:
    """A level checkpoint: every side role holds ``done`` connections ESTABLISHED; with
    ``per_host`` (connections made so far by each host) each host is held to its own."""
    if per_host:
        return Expect({h: {"ESTAB": c} for h, c in per_host.items()}, {})
    roles = sorted({sides.roles[h] for h in sides.everyone()}, reverse=True)
    return Expect({role: {"ESTAB": done} for role in roles}, {})


def connect(s: StepState, step: Step) -> None:
    seconds = 0.0
    everyone = s.sides.everyone()
    levels = host_levels(s.plan, everyone)
    done = 0
    made = dict.fromkeys(everyone, 0)  # connections per host so far
    with s.ui.progress("connect", s.n) as ticker:
        for i, per_host in enumerate(levels, 1):
            done += sum(sum(per_host[h].values()) for h in s.sides.of("client"))
            for h in everyone:
                made[h] += sum(per_host[h].values())
            start = time.monotonic()
            for host in everyone:
                s.sides.send(host, {"op": "connect", "ports": per_host[host],
                                    "accept": step.accept})
            faults.pause("ramp")
            s.sides.wait(everyone, "connect", ticker, "client")
            seconds += time.monotonic() - start
            if i < len(levels):  # a level checkpoint: N*i/L connections
                s.checkpoints.take(f"level{i}", level_expect(s.sides, done, made), done)
    s.events["ramp"] = {"seconds": round(seconds, 3), "rate": round(s.n / seconds, 1)}
    s.ui.note(f"{s.n:,}/{s.n:,} connected in {seconds:.2f} s · {s.n / seconds:,.0f} conn/s")
    s.ui.phase("measure", "checkpoints")


def accept(s: StepState, step: Step) -> None:
    with s.ui.progress("accept", s.n) as ticker:
        s.sides.do_role("server", {"op": "accept"}, ticker=ticker, progress_role="server")


def join(s: StepState, step: Step) -> None:
    replies = s.sides.do(s.sides.everyone(), {"op": "join"})
    s.moved().join(replies)
    s.app_pending = False


def block_acks(s: StepState, step: Step) -> None:
    for host in s.hosts.values():
        if host.role == step.side:
            s.backend.block_final_acks(host)


def send(s: StepState, step: Step) -> None:
    assert step.side is not None
    nbytes = step.bytes if step.bytes is not None else s.plan.scenario.bytes
    issued = time.time()
    replies = s.sides.do_role(step.side, {"op": "send", "bytes": nbytes,
                                          "background": step.background})
    s.moved().send(step.side, issued, replies)
    s.unread[step.side] = s.unread.get(step.side, 0) + nbytes
    pending = sum(r.get("pending", 0) for r in replies.values())
    s.app_pending = pending > 0 and not step.background
    if s.app_pending:
        s.ui.note(f"{step.side}: {pending:,} bytes wait in the application: "
                  "the kernel's buffers are full")


def read(s: StepState, step: Step) -> None:
    assert step.side is not None
    peer = PEER_ROLE[step.side]
    replies = s.sides.do_role(step.side, {"op": "read", "bytes": s.unread.get(peer, 0),
                                          "rate": step.rate, "background": step.background})
    s.moved().read(s.index, step, peer, s.unread.get(peer, 0), replies)
    s.unread[peer] = 0
    s.app_pending = False


def close(s: StepState, step: Step) -> None:
    """``close`` (a FIN, or a reset with unread data) and ``abort`` (SO_LINGER 0: a reset)."""
    assert step.side is not None
    s.sides.do_role(step.side, {"op": step.action})


def wait(s: StepState, step: Step) -> None:
    time.sleep(step.seconds)


def checkpoint(s: StepState, step: Step) -> None:
    s.checkpoints.take(step.name, s.expectations[step.name], s.n, s.app_pending)


HANDLERS: dict[str, Callable[[StepState, Step], None]] = {
    "connect": connect, "accept": accept, "join": join, "block_acks": block_acks,
    "send": send, "read": read, "close": close, "abort": close, "wait": wait,
    "checkpoint": checkpoint,
}


def run_step(s: StepState, step: Step) -> None:
    s.index += 1
    HANDLERS[step.action](s, step)
