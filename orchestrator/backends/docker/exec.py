"""SSH to a container over a Docker exec stream of ``sshd -i`` (inetd mode).

Not TCP to the container's address: a TCP control connection would be a socket in the
very namespace being measured, and every state count (``ESTAB``), queue sum and
``sockstat inuse`` would include it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import RunError
from .client import sdk, short_error


def exec_transport(client: Any, container: Any, host_name: str,
                   why_down: Callable[[], str | None]) -> Callable[[], ExecStreamSocket]:
    """A socket factory for SshRunner: each call opens a new exec of ``sshd -i``.

    ``why_down`` says what became of the container (None while it runs).
    """
    docker = sdk()
    label = f"sshd -i in container {container.name}"

    def factory() -> ExecStreamSocket:
        try:
            return ExecStreamSocket(client, container.id, label)
        except docker.errors.APIError as exc:
            # a dead container refuses the exec (409): say that, not the HTTP error
            dead = why_down()
            raise RunError(f"{host_name}: cannot open an SSH session: "
                           f"{dead or f'starting {label} failed: {short_error(exc)}'}") from None

    factory.label = label  # type: ignore[attr-defined]
    return factory


class ExecStreamSocket:
    """A socket-like object carrying SSH over a Docker exec stream of ``sshd -i``.

    The daemon multiplexes the exec's stdout and stderr on one hijacked connection in
    frames (8-byte header: stream, 3 zero bytes, big-endian length); stdin is written
    raw. ``recv`` returns stdout bytes only and keeps a tail of stderr (sshd's log).
    Raw bytes are buffered across calls, so a timeout in the middle of a frame (paramiko
    polls with a short timeout) loses nothing.
    """

    def __init__(self, client: Any, container_id: str, label: str) -> None:
        self.label = label
        exec_id = client.api.exec_create(container_id, ["/usr/sbin/sshd", "-i", "-e"],
                                         stdin=True, stdout=True, stderr=True)["Id"]
        stream = client.api.exec_start(exec_id, socket=True)
        self._sock = getattr(stream, "_sock", stream)  # SocketIO wraps the real socket
        self._stream = stream
        self._raw = bytearray()
        self._out = bytearray()
        self._eof = False
        self.stderr: list[bytes] = []
        self._closed = False  # paramiko's Transport looks at this

    def _parse(self) -> None:
        raw = self._raw
        while len(raw) >= 8:
            size = int.from_bytes(raw[4:8], "big")
            if len(raw) < 8 + size:
                break
            kind, payload = raw[0], bytes(raw[8:8 + size])
            del raw[:8 + size]
            if kind == 2:
                self.stderr.append(payload)
                del self.stderr[:-20]
            else:
                self._out += payload

    def recv(self, size: int) -> bytes:
        while not self._out and not self._eof:
            chunk = self._sock.recv(65536)  # socket.timeout propagates; state is kept
            if not chunk:
                self._eof = True
                break
            self._raw += chunk
            self._parse()
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for thing in (self._sock, self._stream):
                try:
                    thing.close()
                except OSError:
                    pass

    @property
    def closed(self) -> bool:
        return self._closed

