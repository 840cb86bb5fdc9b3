"""Where a link's conditions go in a lab, so that they do not distort the measured sender.

Never on a sender's own egress: packets an emulator holds there still count against the
socket's TCP Small Queues budget (4 MB from 6.16, less before), which changes what the
socket holds and differs between kernels. Instead:

* with a router: on the router's forwarding path, both directions (what leaves it
  towards the server on its server-side interface, what leaves towards the clients on the
  clients' side); the packets were orphaned from their socket when they left the sender;
* without one: on each end's ingress, so each direction gets the one-way delay at its
  receiver (the server's ingress carries client -> server, each client's the way back).
  With several clients and no router each client has its own server -> client link; a
  shared bottleneck for them needs a router (``--router plain``).

Pure: nothing here touches a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Lab


@dataclass(frozen=True)
class Attachment:
    """One direction of the link, on one host's interface."""

    host: str
    address: str  # the host's address on that interface (finds the device on any backend)
    hook: str  # "ingress" (what the host receives) or "forward" (what a router sends out)
    direction: str  # "client -> server" or "server -> client"
    queue_num: int  # the NFQUEUE number of the fallback (per namespace)

    @property
    def label(self) -> str:
        """``server ingress``; a router's two directions: ``router forward client -> server``."""
        if self.hook == "forward":
            return f"{self.host} {self.hook} {self.direction}"
        return f"{self.host} {self.hook}"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "address": self.address, "hook": self.hook,
                "direction": self.direction}


def attachments(lab: Lab) -> list[Attachment]:
    router = lab.router
    server = lab.host("server")
    if router is not None:
        return [Attachment(router.name, router.server_address, "forward", "client -> server", 1),
                Attachment(router.name, router.address, "forward", "server -> client", 2)]
    return [Attachment(server.name, server.address, "ingress", "client -> server", 1),
            *(Attachment(c.name, c.address, "ingress", "server -> client", 1)
              for c in lab.of("client"))]


def where_text(lab: Lab) -> str:
    """One line for reports: where the conditions were applied, and why there."""
    if lab.router is not None:
        return (f"on router {lab.router.name}'s forwarding path, both directions (never on a "
                "sender's own egress)")
    return ("on each end's ingress: each direction delayed at its receiver (never on a "
            "sender's own egress)")
