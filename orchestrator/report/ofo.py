"""The report's out-of-order section: at each checkpoint, the sockets holding data only
the out-of-order queue can hold (``buffers.<host>.ofo_inferred``), from the result alone.

No socket counter says how many bytes sit in a receiver's out-of-order queue. The
inference (scenarios/sockdiag.py): rmem_alloc (skmem ``r``) is the truesize of the skbs
in the receive queue and the out-of-order queue; Recv-Q (rcv_nxt - copied_seq) is the
in-order bytes not yet read. A socket with Recv-Q 0 and rmem_alloc > 0 holds out-of-order
data. Shown only when some checkpoint has such a socket.
"""

from __future__ import annotations

from tabulate import tabulate

from ..results.model import Result

TITLE = ("Receiver sockets holding out-of-order data (inferred: Recv-Q 0 while rmem_alloc "
         "> 0), at each checkpoint")
NOTE = ("rmem_alloc counts the receive queue and the out-of-order queue (skb truesize); "
        "Recv-Q the in-order bytes not yet read: a socket with nothing in order left to read "
        "that still holds memory holds it out of order. A lower bound: a socket that also "
        "has in-order data unread is not counted.")
HEAD = ["checkpoint", "host", "sockets", "of", "bytes held (rmem_alloc)"]


def rows(result: Result) -> list[list[str]]:
    """Per checkpoint and host with such sockets: the count, of how many, the bytes.
    Empty when no checkpoint has one (or the result predates the figure)."""
    out = []
    for cp in result.measured():
        for host, buf in cp.buffers.items():
            held = buf.ofo_inferred
            if held is not None and held.sockets:
                out.append([cp.name, host, f"{held.sockets:,}", f"{buf.sockets:,}",
                            f"{held.rmem_alloc:,}"])
    return out


def text(result: Result, fmt: str = "simple") -> list[str]:
    """The section's lines for the text report ([] when every checkpoint had none)."""
    found = rows(result)
    if not found:
        return []
    return [TITLE, tabulate(found, HEAD, tablefmt=fmt, disable_numparse=True,
                            colalign=("left", "left", "right", "right", "right")),
            NOTE, ""]
