"""An Ethernet switch for one lab network of more than two VMs (standard library only).

Two VMs are joined by qemu itself: one listens on a Unix socket, the other connects
(``-netdev stream``). A network of more members (several clients and the router) needs
something in the middle that qemu does not have (no VDE here): this process. It listens
on a Unix socket in the run's directory; each member's qemu connects to it with
``-netdev stream,server=off`` and speaks qemu's stream framing (a 4-byte big-endian
length, then the Ethernet frame). Frames go to the member that last sent from their
destination MAC, or to every other member when it is unknown, broadcast or multicast:
a learning switch. A member whose outgoing queue is full loses the frame, as on a real
switch; the sender never waits for a slow member.

Nothing of it touches a network of this machine. Run as a script by the vm backend
(``python3 hub.py SOCKET RUN``: the run id names the process), journalled as a
``process``; it exits when its socket file is removed with the run's directory, or on
SIGTERM.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import sys

HEADER = struct.Struct(">I")
MAX_FRAME = 65536 + 14
#: Bytes queued towards one member before its frames are dropped.
QUEUE_LIMIT = 4 << 20


class Member:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = bytearray()


class Hub:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ)
        self.members: dict[int, Member] = {}
        self.macs: dict[bytes, Member] = {}
        self.dropped = 0

    def accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        member = Member(sock)
        self.members[sock.fileno()] = member
        self.sel.register(sock, selectors.EVENT_READ, member)

    def drop(self, member: Member) -> None:
        self.sel.unregister(member.sock)
        self.members.pop(member.sock.fileno(), None)
        self.macs = {m: v for m, v in self.macs.items() if v is not member}
        member.sock.close()

    def read(self, member: Member) -> None:
        try:
            data = member.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(member)
            return
        buf = member.inbuf + data
        at = 0
        while len(buf) - at >= 4:
            (size,) = HEADER.unpack_from(buf, at)
            if size > MAX_FRAME:
                self.drop(member)  # not qemu's framing: a stray client
                return
            if len(buf) - at - 4 < size:
                break
            self.forward(member, buf[at:at + 4 + size])
            at += 4 + size
        member.inbuf = buf[at:]

    def forward(self, sender: Member, packet: bytes) -> None:
        if len(packet) < 4 + 14:
            return
        dst, src = packet[4:10], packet[10:16]
        if not src[0] & 1:
            self.macs[src] = sender
        target = None if dst[0] & 1 else self.macs.get(dst)
        for member in ([target] if target is not None else list(self.members.values())):
            if member is not sender:
                self.send(member, packet)

    def send(self, member: Member, packet: bytes) -> None:
        if len(member.outbuf) + len(packet) > QUEUE_LIMIT:
            self.dropped += 1
            return
        was_empty = not member.outbuf
        member.outbuf += packet
        if was_empty:
            self.flush(member)

    def flush(self, member: Member) -> None:
        try:
            sent = member.sock.send(member.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.drop(member)
            return
        del member.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if member.outbuf else 0)
        self.sel.modify(member.sock, events, member)

    def serve(self, path: str) -> None:
        while os.path.exists(path):
            for key, mask in self.sel.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self.accept()
                    continue
                member = key.data
                if member.sock.fileno() not in self.members:
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(member)
                if mask & selectors.EVENT_READ and member.sock.fileno() in self.members:
                    self.read(member)


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: hub.py SOCKET [RUN]", file=sys.stderr)
        return 2
    path = argv[0]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the socket appears only once it accepts
    Hub(listener).serve(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
