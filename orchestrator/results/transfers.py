"""Bytes moved: the result's ``transfers`` as typed, read-only objects (see
orchestrator/run/transfers.py for how they are measured)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Goodput:
    """Bytes moved by one transfer on some hosts: bytes/s in total and per connection."""

    connections: int = 0
    bytes: int = 0
    seconds: float = 0.0
    goodput: float = 0.0  # bytes / seconds, all connections together
    mean: float = 0.0  # per connection: mean, standard deviation, minimum, maximum
    sd: float = 0.0
    min: float = 0.0
    max: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Goodput:
        per = d.get("per_connection") or {}
        return cls(d.get("connections") or 0, d.get("bytes") or 0, d.get("seconds") or 0.0,
                   d.get("goodput") or 0.0, *(per.get(k) or 0.0 for k in ("mean", "sd", "min",
                                                                          "max")))


@dataclass(frozen=True)
class Transfer:
    """One ``read`` step and the send it drained (``transfers[]``): goodput in total and
    per connection, and per reading host when a role has several."""

    step: int
    sender: str | None
    receiver: str | None
    total: Goodput
    background: bool = False
    rate: int | None = None  # the read's pace, bytes/s per connection (None: unpaced)
    bytes_per_connection: int = 0
    from_first_sent_seconds: float | None = None
    orchestrator_seconds: float | None = None
    hosts: dict[str, Goodput] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transfer:
        return cls(d.get("step", -1), d.get("sender"), d.get("receiver"), Goodput.from_dict(d),
                   bool(d.get("background")), d.get("rate"), d.get("bytes_per_connection") or 0,
                   d.get("from_first_sent_seconds"), d.get("orchestrator_seconds"),
                   {h: Goodput.from_dict(g) for h, g in (d.get("hosts") or {}).items()})

    @property
    def label(self) -> str:
        """How reports name it: ``server→client``, and the step."""
        return f"{self.sender}→{self.receiver} (step {self.step})"
