"""Commands on a lab host over SSH: the same :class:`~orchestrator.runner.Runner` shape
as :class:`~orchestrator.runner.LocalRunner`, on a fabric ``Connection``.

* ``run()`` gives a :class:`~orchestrator.runner.Result` (command, host, exit code,
  stdout, stderr); ``check=True`` raises :class:`~orchestrator.errors.CommandError`
  through :meth:`Result.check`, exactly as locally.
* ``spawn()`` starts a side script and speaks JSON lines to it over one SSH channel.
* ``stream()`` yields stdout lines as they arrive, so ``ss`` over 10,000+ sockets is
  parsed while it is read, never held whole in memory.

The transport is TCP to ``address:port`` unless a ``sock_factory`` is given: a callable
returning a connected socket-like object (send/recv/settimeout/close) that carries the
SSH protocol instead - the docker backend uses one so that no control connection lives
in the network namespace being measured (see orchestrator/backends/docker.py).

Host keys: the lab's hosts are ephemeral (every container makes a fresh host key when
it starts), so there is nothing to pin. Host keys are accepted for the run only: the
connection keeps them in memory, no ``known_hosts`` file is read or written, no SSH
agent and no ``~/.ssh`` key or config is used - only the run's own key file.
"""

from __future__ import annotations

import errno
import io
import json
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from .errors import CommandError, RunError
from .runner import Command, QueueChannel, Result, Runner, timed_out, trace

#: Errors that mean the SSH transport itself failed (not the remote command).
TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError)
STDERR_TAIL_LINES = 50


def quote(cmd: Command) -> str:
    """A command line for the remote shell: argv quoted with shlex.join, strings as given."""
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


class SshRunner(Runner):
    """Runs commands as ``user`` on ``address`` with one key file, over one SSH connection.

    ``host`` is the lab host's name (used in every message); ``address`` is where
    sshd listens. Host keys are accepted for the run only (see the module docstring).
    """

    def __init__(self, host: str, address: str, key_file: str, *, user: str = "root",
                 port: int = 22, connect_timeout: int = 10, keepalive: int = 15,
                 sock_factory: Callable[[], Any] | None = None) -> None:
        self.host = host
        self.connect_timeout = connect_timeout
        self.address = address
        self.key_file = str(key_file)
        self.user = user
        self.port = port
        self.keepalive = keepalive
        self.sock_factory = sock_factory
        # lazy: no /etc/fabric.yaml, ~/.fabric.yaml; no ssh_config files: nothing from
        # this machine's user setup changes how the lab is reached.
        config = Config(lazy=True, overrides={"load_ssh_configs": False})
        self.connection = Connection(
            address, user=user, port=port, config=config, connect_timeout=connect_timeout,
            forward_agent=False,
            connect_kwargs={"key_filename": [self.key_file], "allow_agent": False,
                            "look_for_keys": False, "banner_timeout": connect_timeout,
                            "auth_timeout": connect_timeout,
                            # Every run() opens a session: on a host that stopped answering
                            # (a frozen container) paramiko would wait an hour for it.
                            "channel_timeout": connect_timeout},
        )
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    @property
    def where(self) -> str:
        if self.sock_factory is not None:
            via = getattr(self.sock_factory, "label", "a custom transport")
            return f"{self.user}@{self.address} (via {via})"
        return f"{self.user}@{self.address}:{self.port}"

    def connect(self) -> None:
        """Open the connection (idempotent). Raises RunError naming the host."""
        with self._lock:
            if self.connection.is_connected:
                return
            sock = None
            try:
                if self.sock_factory is not None:
                    sock = self.connection.connect_kwargs["sock"] = self.sock_factory()
                self.connection.open()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.connection.close()
                if sock is not None:
                    sock.close()
                raise RunError(f"{self.host}: cannot log in over SSH to {self.where}: "
                               f"{_describe(exc, self)}") from exc
            if self.keepalive and self.connection.transport is not None:
                self.connection.transport.set_keepalive(self.keepalive)

    def wait_ready(self, timeout: float = 15.0, interval: float = 0.2) -> float:
        """Retry :meth:`connect` until sshd answers; returns the seconds waited."""
        start = time.monotonic()
        while True:
            try:
                self.connect()
                return time.monotonic() - start
            except RunError:
                if time.monotonic() - start > timeout:
                    raise
                time.sleep(interval)

    def transport(self) -> paramiko.Transport:
        self.connect()
        transport = self.connection.transport
        if transport is None or not transport.is_active():
            raise RunError(f"{self.host}: the SSH connection to {self.where} is closed")
        return transport

    def close(self) -> None:
        with self._lock:
            self.connection.close()

    def command(self, cmd: Command) -> str:
        """The remote command line: argv quoted with shlex.join, a string as given."""
        return quote(cmd)

    def _traced(self, cmd: Command) -> str:
        """The remote command line (``command``, which subclasses adapt), reported to
        ``tcplab -v`` as it starts: every run, spawn and stream passes here."""
        command = self.command(cmd)
        trace(self.host, command)
        return command

    # -- Runner ------------------------------------------------------------------------------
    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result:
        command = self._traced(cmd)
        self.connect()
        in_stream: Any = io.StringIO(stdin) if stdin is not None else False
        seconds = int(timeout) if timeout else None
        started = time.monotonic()
        try:
            out: Any = self.connection.run(command, warn=True, hide=True, pty=False,
                                           in_stream=in_stream, timeout=seconds)
        except (CommandTimedOut, *TRANSPORT_ERRORS) as exc:
            out = exc
        result = self.outcome(command, out, started, timeout)
        return result.check() if check else result

    def outcome(self, command: str, out: Any, started: float,
                timeout: float | None) -> Result:
        """The Result of ``command`` from what fabric gave: its result, or the exception
        it raised (also what a Fabric group maps this host's connection to)."""
        seconds = int(timeout) if timeout else None
        if isinstance(out, CommandTimedOut):
            return timed_out(command, self.host, out.result.stdout, out.result.stderr, timeout)
        if isinstance(out, TRANSPORT_ERRORS):
            raise RunError(f"{self.host}: SSH to {self.where} failed while running "
                           f"`{command[:80]}`: {_describe(out)}") from out
        if isinstance(out, BaseException):
            raise out
        result = Result(command, self.host, out.exited, out.stdout, out.stderr)
        if out.exited == -1 and not self.connection.is_connected:  # no exit status came
            raise RunError(f"{self.host}: the SSH connection to {self.where} dropped while "
                           f"running `{command[:80]}`")
        if out.exited == -1 and seconds and time.monotonic() - started >= seconds:
            # invoke's timer closed the channel, but its thread was still returning
            # when invoke asked whether it had fired (a race seen under load): no
            # CommandTimedOut, an exit status of -1. Same outcome as a timeout.
            result = timed_out(command, self.host, out.stdout, out.stderr, timeout)
        return result

    def _session(self, command: str) -> paramiko.Channel:
        try:
            channel = self.transport().open_session()
            channel.exec_command(command)
        except TRANSPORT_ERRORS as exc:
            raise RunError(f"{self.host}: SSH to {self.where} failed to start "
                           f"`{command[:80]}`: {_describe(exc)}") from exc
        return channel

    def spawn(self, cmd: Command) -> SshChannel:
        command = self._traced(cmd)
        return SshChannel(self, command, self._session(command))

    def stream(self, cmd: Command) -> Iterator[str]:
        command = self._traced(cmd)
        channel = self._session(command)
        stderr: list[bytes] = []
        drain = threading.Thread(target=_drain, args=(channel.makefile_stderr("rb"), stderr),
                                 daemon=True)
        drain.start()
        finished = False
        try:
            yield from _lines(channel)
            finished = True
        finally:
            if not finished:  # the caller stopped early (or failed): do not wait for the rest
                channel.close()
        drain.join(timeout=10)
        channel.status_event.wait(timeout=30)  # set on exit-status, and when the channel closes
        transport = channel.get_transport()
        if not channel.exit_status_ready() or transport is None or not transport.is_active():
            channel.close()
            raise RunError(f"{self.host}: the SSH connection to {self.where} dropped while "
                           f"reading `{command[:80]}`")
        code = channel.exit_status
        channel.close()
        if code != 0:
            err = b"".join(stderr).decode(errors="replace")
            raise CommandError(Result(command, self.host, code, "", err))


def _lines(channel: paramiko.Channel, chunk: int = 1 << 16) -> Iterator[str]:
    """stdout lines of a channel as they arrive, read in large chunks (paramiko's
    line-by-line file reads manage a few MB/s; this is many times that)."""
    rest = b""
    while True:
        data = channel.recv(chunk)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield line.decode(errors="replace") + "\n"
    if rest:
        yield rest.decode(errors="replace")


def _drain(fileobj: Any, sink: list[bytes]) -> None:
    try:
        for line in fileobj:
            sink.append(line)
            del sink[:-STDERR_TAIL_LINES]
    except TRANSPORT_ERRORS:
        pass


def _describe(exc: BaseException, runner: SshRunner | None = None) -> str:
    """One line on why a login failed and what to do (paramiko's own texts say neither)."""
    key = runner.key_file if runner else "the key"
    user = runner.user if runner else "the user"
    port = runner.port if runner else 22
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes & {errno.EHOSTUNREACH, errno.ENETUNREACH}:
            return ("no route to the host (nothing answers at that address): is the host up "
                    "and ssh.address right?")
        return f"connection refused on port {port}: is sshd running there, on that port?"
    if isinstance(exc, socket.timeout):
        return (f"no answer within {runner.connect_timeout if runner else 10} s: is the host "
                f"up, or does a firewall drop port {port}?")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return (f"the key {key} is encrypted: give a key without a passphrase "
                f"(ssh-keygen -p -N '' -f {key})")
    if isinstance(exc, paramiko.AuthenticationException):
        return (f"the key {key} was not accepted for user {user}: add {key}.pub to "
                f"~{user}/.ssh/authorized_keys on the host, or fix ssh.user / ssh.key")
    if isinstance(exc, paramiko.SSHException) and "private key" in str(exc):
        return (f"{key} is not a private key (a .pub file?): ssh.key needs the private half "
                "of the key pair")
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) == key:
        return f"cannot read the key {key} ({exc.strerror}): fix ssh.key"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class SshChannel(QueueChannel):
    """A side script on a lab host, spoken to in JSON lines over one SSH channel.

    A reader thread feeds the queue with stdout lines; stderr keeps a tail for the
    error message. When the SSH connection drops, the reader ends and ``receive()``
    raises RunError naming the host.
    """

    def __init__(self, runner: SshRunner, command: str, channel: paramiko.Channel) -> None:
        super().__init__(runner.host, command)
        self.runner = runner
        self.channel = channel
        self._stderr: list[bytes] = []
        self._stdout_done = threading.Event()
        threading.Thread(target=self._read_stdout, name=f"ssh {runner.host} stdout",
                         daemon=True).start()
        self._stderr_thread = threading.Thread(
            target=_drain, args=(channel.makefile_stderr("rb"), self._stderr),
            name=f"ssh {runner.host} stderr", daemon=True)
        self._stderr_thread.start()

    def _read_stdout(self) -> None:
        try:
            for line in _lines(self.channel):
                self.lines.put(line)
        except TRANSPORT_ERRORS:
            pass
        finally:
            self._stdout_done.set()
            self.lines.put(None)

    def _gone(self) -> bool:
        # stdout ends when the side exits or the SSH connection (or the host) goes away
        return self._stdout_done.is_set()

    def stderr_tail(self) -> str:
        self._stderr_thread.join(timeout=0.2)
        return b"".join(self._stderr).decode(errors="replace")

    def _ended_message(self) -> str:
        # stdout's EOF can come a moment before the exit status (or the close of a dead link)
        self.channel.status_event.wait(timeout=2.0)
        transport = self.channel.get_transport()
        if transport is None or not transport.is_active():
            return (f"{self.host}: the SSH connection to {self.runner.where} dropped while "
                    f"the side ran ({self.command[:80]})")
        if self.channel.exit_status_ready():
            code = self.channel.recv_exit_status()
            tail = self.stderr_tail().strip().splitlines()[-3:]
            return (f"{self.host}: side process exited with code {code} "
                    f"({self.command[:80]}): {' | '.join(tail) or 'no stderr'}")
        return super()._ended_message()

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        try:
            if self.channel.closed or self._stdout_done.is_set():
                raise OSError("channel closed")
            self.channel.sendall(data)
        except TRANSPORT_ERRORS:
            raise RunError(self._ended_message()) from None

    def close(self, timeout: float = 10.0) -> None:
        """EOF on the side's stdin (it exits when stdin closes), then close the channel."""
        try:
            if not self.channel.closed:
                self.channel.shutdown_write()
                deadline = time.monotonic() + timeout
                while not self.channel.exit_status_ready() and time.monotonic() < deadline:
                    if not self.channel.get_transport().is_active():
                        break
                    time.sleep(0.05)
        except TRANSPORT_ERRORS:
            pass
        finally:
            self.channel.close()

    @property
    def exit_code(self) -> int | None:
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else None
