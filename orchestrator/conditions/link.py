"""The `Link` value: the conditions of the path between the clients and the server.

Immutable and pure: parsed from ``--link``/``LINK=`` or a lab file's ``network.link``
(parse.py), recorded in the result as asked (``to_dict``), and sized here: the
bottleneck's queue defaults to one bandwidth-delay product, and the number of packets
an emulator must be able to hold (``hold_limit``) adds what is on the wire during the
one-way delay. netem's own default (1,000 packets) silently drops once rate x delay
exceeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

#: The packet size the queue and hold limits are counted in (an Ethernet MTU).
PACKET = 1500
#: Without a rate nothing throttles the sender but its windows: the delay line may have
#: to hold every byte the connections have in flight. Bounded, so memory is too.
UNTHROTTLED_LIMIT = 100_000
#: A queue is never sized below this many packets (a tiny BDP still sees bursts).
MIN_QUEUE = 16
#: Headroom on top of queue + wire packets (ACKs of the other direction, bursts).
HOLD_HEADROOM = 16


@dataclass(frozen=True)
class Link:
    """One direction's conditions, the same in both directions (delay is one-way).

    ``rate_bps`` 0: no rate limit. ``queue`` 0: not given (``sized()`` fills it in from
    the bandwidth-delay product when there is a rate).
    """

    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0
    rate_bps: int = 0
    queue: int = 0
    queue_sized: bool = False  # True: the queue was not given, it is one BDP

    @property
    def empty(self) -> bool:
        """No condition at all: a perfect link, nothing to apply."""
        return not (self.delay_us or self.jitter_us or self.loss_pct or self.rate_bps
                    or self.queue)

    @property
    def rtt_us(self) -> int:
        return 2 * self.delay_us

    def bdp_bytes(self) -> int:
        """Rate x round-trip time in bytes (0 without a rate or a delay)."""
        return self.rate_bps * self.rtt_us // 8_000_000

    def sized(self) -> Link:
        """The link with its queue filled in: one bandwidth-delay product in packets (at
        least MIN_QUEUE) when there is a rate and no queue was given."""
        if self.queue or not self.rate_bps:
            return self
        packets = max(MIN_QUEUE, math.ceil(self.bdp_bytes() / PACKET))
        return replace(self, queue=packets, queue_sized=True)

    def hold_limit(self) -> int:
        """Packets an emulator must hold in one direction: the bottleneck's queue plus what
        is on the wire during the one-way delay (rate x delay in full-size packets), plus a
        little headroom: the bottleneck then holds the queue asked for plus HOLD_HEADROOM
        packets. Without a rate:
        ``queue`` if given, else UNTHROTTLED_LIMIT."""
        if not self.rate_bps:
            return self.queue or UNTHROTTLED_LIMIT
        wire = math.ceil(self.rate_bps * self.delay_us / 8_000_000 / PACKET)
        return self.sized().queue + wire + HOLD_HEADROOM

    def describe(self) -> str:
        """``delay 25 ms each way (RTT 50 ms), rate 200 Mbit/s, loss 0.5%, queue 2,000
        packets``; ``no conditions (a perfect link)`` when empty."""
        if self.empty:
            return "no conditions (a perfect link)"
        parts = []
        if self.delay_us or self.jitter_us:
            parts.append(f"delay {show_time(self.delay_us)} each way (RTT "
                         f"{show_time(self.rtt_us)})")
        if self.jitter_us:
            parts.append(f"jitter {show_time(self.jitter_us)}")
        if self.rate_bps:
            parts.append(f"rate {show_rate(self.rate_bps)}")
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if self.queue:
            how = " (one bandwidth-delay product)" if self.queue_sized else ""
            parts.append(f"queue {self.queue:,} packets{how}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"delay_us": self.delay_us, "jitter_us": self.jitter_us,
                "loss_pct": self.loss_pct, "rate_bps": self.rate_bps, "queue": self.queue,
                "queue_sized": self.queue_sized, "description": self.describe()}

    def to_lab(self) -> dict[str, Any]:
        """The keys of a lab file's ``network.link`` (what was asked: a sized queue is
        left out, so reading it back sizes it again)."""
        out: dict[str, Any] = {}
        if self.delay_us:
            out["delay"] = f"{self.delay_us}us"
        if self.jitter_us:
            out["jitter"] = f"{self.jitter_us}us"
        if self.loss_pct:
            out["loss"] = f"{self.loss_pct:g}%"
        if self.rate_bps:
            out["rate"] = f"{self.rate_bps}bit"
        if self.queue and not self.queue_sized:
            out["queue"] = self.queue
        return out

    def to_text(self) -> str:
        """The ``--link`` form of what was asked (``none`` for the perfect link)."""
        return " ".join(f"{k}={v}" for k, v in self.to_lab().items()) or "none"

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Link:
        d = d or {}
        return cls(int(d.get("delay_us", 0)), int(d.get("jitter_us", 0)),
                   float(d.get("loss_pct", 0.0)), int(d.get("rate_bps", 0)),
                   int(d.get("queue", 0)), bool(d.get("queue_sized", False)))


def show_time(us: int) -> str:
    """Microseconds as people write them: 25 ms, 1.5 ms, 250 us, 2 s."""
    if us >= 1_000_000 and us % 100_000 == 0:
        return f"{us / 1_000_000:g} s"
    if us >= 1000:
        return f"{us / 1000:g} ms"
    return f"{us} us"


def show_rate(bps: int) -> str:
    """Bits per second as tc writes them, in the largest exact-looking unit: 200 Mbit/s."""
    for unit, size in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= size:
            return f"{bps / size:g} {unit}"
    return f"{bps} bit/s"
