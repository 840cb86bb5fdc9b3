"""Scenarios: a list of steps built from a few blocks, and what each checkpoint expects.

Blocks: ``connect``, ``send``, ``read``, ``close``, ``abort``, ``wait`` and ``checkpoint``.
The TCP states and queued bytes a checkpoint must reach are derived from the steps before
it (a small model of the connection), so a user writing a new scenario rarely states
them; ``expect:`` on a checkpoint overrides the derived states.

A close normally sends a FIN. A close by a side with data it never read, and an
``abort`` (SO_LINGER 0, then close), send a reset instead: the closer's sockets go away
at once and the peer's end in CLOSE (ss: UNCONN) or is gone, nothing queued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .yamlfile import Doc, show

SIDES = ("server", "client")
ACTIONS = ("connect", "accept", "send", "read", "join", "close", "abort", "wait",
           "block_acks", "checkpoint")
CLOSING = ("close", "abort")
ALL = -1  # "all" in an expect: the scenario's connection count


@dataclass(frozen=True)
class Step:
    action: str
    side: str | None = None  # send/read/close
    bytes: int | None = None  # send: per connection, None = the scenario's bytes
    seconds: float = 0.0  # wait
    name: str = ""  # checkpoint
    expect: dict[str, dict[str, int]] | None = None  # checkpoint: explicit state counts
    accept: bool = True  # connect: False leaves the connections in the accept queue
    background: bool = False  # send/read: return at once; a later `join` waits
    rate: int = 0  # read: bytes per second per connection (0: as fast as possible)


@dataclass(frozen=True)
class Expect:
    """What must hold before a checkpoint is snapshotted."""

    #: role -> {ss state: count or (low, high)}, non-LISTEN sockets only
    states: dict[str, dict[str, int | tuple[int, int]]]
    queued: dict[str, int]  # "sender>receiver" -> bytes per connection sent and not yet read
    moving: bool = False  # background transfers run: snapshot as is, do not wait to settle
    #: the step the model expects these states from (said when they do not come)
    cause: str = field(default="", compare=False)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    connections: int
    bytes: int
    steps: tuple[Step, ...]

    @property
    def checkpoints(self) -> list[str]:
        return [s.name for s in self.steps if s.action == "checkpoint"]

    def with_overrides(self, connections: int | None, nbytes: int | None) -> Scenario:
        return Scenario(
            self.name, self.path, self.description,
            connections if connections is not None else self.connections,
            nbytes if nbytes is not None else self.bytes,
            self.steps,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "connections": self.connections,
            "bytes": self.bytes,
            "steps": [_step_dict(s) for s in self.steps],
        }

    def expectations(self) -> dict[str, Expect]:
        """The derived expectation of every checkpoint, by checkpoint name."""
        model = _Model(self.connections, self.bytes)
        out: dict[str, Expect] = {}
        for i, step in enumerate(self.steps):
            if step.action == "checkpoint":
                if step.expect is None:
                    states, cause = model.states(), model.cause
                else:
                    states = {side: {st: (self.connections if c == ALL else c)
                                     for st, c in counts.items()}
                              for side, counts in step.expect.items()}
                    cause = f"the expect: of steps[{i}] (checkpoint {step.name})"
                out[step.name] = Expect(states, model.queued(), model.background, cause)
            else:
                model.apply(step, i)
        return out


def _step_dict(step: Step) -> dict[str, Any]:
    if step.action == "checkpoint":
        return {"checkpoint": step.name, **({"expect": step.expect} if step.expect else {})}
    if step.action == "wait":
        return {"wait": step.seconds}
    if step.action == "connect":
        return {"connect": {} if step.accept else {"accept": False}}
    if step.action == "abort":
        return {"abort": {"side": step.side}}
    body: dict[str, Any] = {"side": step.side}
    if step.bytes is not None:
        body["bytes"] = step.bytes
    if step.background:  # only when set: results of other scenarios keep their shape
        body["background"] = True
    if step.rate:
        body["rate"] = step.rate
    return {step.action: body}


@dataclass
class _Model:
    n: int
    nbytes: int
    connected: bool = False
    closed: list[str] = field(default_factory=list)  # sides in the order they closed
    sent: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SIDES})
    read: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SIDES})
    background: bool = False  # a background send/read runs: queues are moving
    acks_blocked: bool = False  # the client's final ACKs are dropped: server in SYN-RECV
    resets: list[str] = field(default_factory=list)  # sides whose close sent a reset
    cause: str = "no step yet: no connection"  # the last step that changed the states

    def apply(self, step: Step, index: int = 0) -> None:
        where = f"steps[{index}] `{step.action}{': ' + step.side if step.side else ''}`"
        if step.action in ("connect", "block_acks"):
            self.cause = where
        if step.background:
            self.background = True
        if step.action == "join":
            self.background = False
        if step.action == "block_acks":
            self.acks_blocked = True
        if step.action == "connect":
            self.connected = True
        elif step.action == "send":
            self.sent[step.side] += step.bytes if step.bytes is not None else self.nbytes
        elif step.action == "read":
            self.read[step.side] = self.sent[_peer(step.side)]
        elif step.action in CLOSING:
            assert step.side is not None
            unread = self.sent[_peer(step.side)] - self.read[step.side]
            self.closed.append(step.side)
            if step.action == "abort":
                self.resets.append(step.side)
                self.cause = f"{where} (SO_LINGER 0: a reset)"
            elif unread > 0:  # the kernel answers a close with unread data by a reset
                self.resets.append(step.side)
                self.cause = (f"{where} with {unread:,} unread bytes per connection "
                              "(a close with unread data sends a reset, not a FIN)")
            else:
                self.cause = f"{where} (a FIN)"

    def states(self) -> dict[str, dict[str, int | tuple[int, int]]]:
        if not self.connected:
            return {s: {} for s in SIDES}
        if self.acks_blocked:
            return {"client": {"ESTAB": self.n}, "server": {"SYN-RECV": self.n}}
        if not self.closed:
            return {s: {"ESTAB": self.n} for s in SIDES}
        first = self.closed[0]
        other = _peer(first)
        if len(self.closed) == 2 and self.resets:
            return {s: {} for s in SIDES}  # a reset either way: nothing is left
        if first in self.resets:  # the peer's sockets are CLOSE until it closes them
            return {first: {}, other: {"UNCONN": (0, self.n)}}
        if len(self.closed) == 1:
            return {first: {"FIN-WAIT-2": self.n}, other: {"CLOSE-WAIT": self.n}}
        return {first: {"TIME-WAIT": self.n}, other: {}}

    def queued(self) -> dict[str, int]:
        """Bytes per connection written by each side and not yet read by its peer.

        Only while every connection is open: after a close, queues drain on their own.
        """
        if not self.connected or self.closed or self.background or self.acks_blocked:
            return {}
        return {f"{side}>{_peer(side)}": self.sent[side] - self.read[_peer(side)] for side in SIDES}


def _peer(side: str) -> str:
    return "client" if side == "server" else "server"


def load_scenario(name_or_path: str, scenarios_dir: Path) -> Scenario:
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
    else:
        path = scenarios_dir / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(n for n, _ in list_scenarios(scenarios_dir)) or "none"
            raise InputError(f"unknown scenario {name_or_path!r}: no {path}; known scenarios: {known}")
    doc = Doc.load(path, empty_ok=False)
    doc.only(["description", "connections", "bytes", "steps"])
    steps_raw = doc.list("steps", required=True)
    steps = tuple(_parse_step(doc, i, raw) for i, raw in enumerate(steps_raw))
    names = [s.name for s in steps if s.action == "checkpoint"]
    if not names or names[0] != "baseline" or steps[0].action != "checkpoint":
        raise doc.fail("steps", "a first step `checkpoint: baseline`")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise doc.fail("steps", "unique checkpoint names", ", ".join(sorted(dupes)))
    scenario = Scenario(
        name=path.stem,
        path=path,
        description=doc.str("description", ""),
        connections=doc.int("connections", 10_000, minimum=1),
        bytes=doc.int("bytes", 0, minimum=0),
        steps=steps,
    )
    _check_order(doc, steps)
    return scenario


def _check_order(doc: Doc, steps: tuple[Step, ...]) -> None:
    connected = False
    closed: set[str] = set()
    for i, step in enumerate(steps):
        key = f"steps[{i}]"
        if step.action == "connect":
            if connected:
                raise doc.fail(key, "a single connect step")
            connected = True
        elif step.action == "block_acks" and connected:
            raise doc.fail(key, "block_acks before the connect step")
        elif step.action in ("send", "read", "close", "abort", "accept", "join"):
            if not connected:
                raise doc.fail(key, f"{step.action} after a connect step")
            if step.side in closed:
                raise doc.fail(key, f"no {step.action} by the {step.side} after it closed")
            if step.action in CLOSING:
                closed.add(step.side)


def _parse_step(doc: Doc, i: int, raw: Any) -> Step:
    key = f"steps[{i}]"
    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise doc.fail(key, "a mapping with one of " + ", ".join(ACTIONS), raw)
    action, body = next(iter(raw.items()))
    if action not in ACTIONS:
        raise doc.fail(key, "one of " + ", ".join(ACTIONS), action)
    sub = Doc(doc.file, {}, doc.prefix + (key, str(action)))
    if action == "checkpoint":
        if isinstance(body, str):
            body = {"name": body}
        if not isinstance(body, dict):
            raise sub.fail(None, "a checkpoint name", body)
        sub = Doc(doc.file, body, sub.prefix)
        sub.only(["name", "expect"])
        name = sub.str("name", required=True)
        if not name.replace("_", "").isalnum():
            raise sub.fail("name", "letters, digits and _", name)
        expect = _parse_expect(sub.map("expect")) if "expect" in body else None
        return Step("checkpoint", name=name, expect=expect)
    if action == "wait":
        if (isinstance(body, bool) or not isinstance(body, (int, float)) or body < 0
                or not math.isfinite(body)):
            raise sub.fail(None, "a number of seconds >= 0", body)
        return Step("wait", seconds=float(body))
    if action in ("connect", "accept", "join"):
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise sub.fail(None, "a mapping", body)
        sub = Doc(doc.file, body, sub.prefix)
        sub.only(["accept"] if action == "connect" else [])
        accept = body.get("accept", True)
        if not isinstance(accept, bool):
            raise sub.fail("accept", "true or false", accept)
        return Step(action, side="server" if action == "accept" else None, accept=accept)
    if isinstance(body, str):
        body = {"side": body}
    if not isinstance(body, dict):
        raise sub.fail(None, "a side (server or client) or a mapping with side", body)
    sub = Doc(doc.file, body, sub.prefix)
    allowed = {"send": ["side", "bytes", "background"], "read": ["side", "rate", "background"]}
    sub.only(allowed.get(action, ["side"]))
    side = sub.str("side", required=True)
    if side not in SIDES:
        raise sub.fail("side", "server or client", side)
    nbytes = sub.int("bytes", None, minimum=1) if action == "send" else None
    background = body.get("background", False)
    if not isinstance(background, bool):
        raise sub.fail("background", "true or false", background)
    rate = sub.int("rate", 0, minimum=0) if action == "read" else 0
    return Step(action, side=side, bytes=nbytes, background=background, rate=rate)


def _parse_expect(doc: Doc) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    doc.only(SIDES)
    for side in SIDES:
        states = doc.map(side)
        counts = {}
        for state, count in states.data.items():
            if count == "all":
                count = ALL
            elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise states.fail(str(state), 'a count >= 0 or "all"', count)
            counts[str(state)] = count
        out[side] = counts
    return out


def list_scenarios(scenarios_dir: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(scenarios_dir.glob("*.yaml")):
        try:
            desc = Doc.load(path).data.get("description", "")
        except InputError as exc:
            desc = f"(invalid: {exc})"
        out.append((path.stem, str(desc)))
    return out


__all__ = ["Scenario", "Step", "Expect", "load_scenario", "list_scenarios", "show"]
