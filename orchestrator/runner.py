"""One shape for commands run on lab hosts, local (netns) or remote (SSH).

Like invoke/fabric: every command gives a :class:`Result`; a failure raises
:class:`CommandError` carrying the command, host, exit code and the tail of stderr.
Long-running side scripts are driven through a :class:`LineChannel` (JSON lines on
stdin/stdout), whatever the transport.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import CommandError, RunError

Command = Sequence[str] | str


def render(cmd: Command) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


#: ``tcplab -v``: called with (host, command line) as each command on a lab host starts,
#: whatever the transport (LocalRunner here, SshRunner in ssh.py). None: silent.
TRACE: Callable[[str, str], None] | None = None


def trace(host: str, cmd: Command) -> None:
    """Report one command about to run on ``host`` to the ``-v`` hook, if any."""
    if TRACE is not None:
        TRACE(host, render(cmd))


@dataclass(frozen=True)
class Result:
    command: str
    host: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> Result:
        if not self.ok:
            raise CommandError(self)
        return self

    def __str__(self) -> str:
        tail = " | ".join(self.stderr.strip().splitlines()[-3:]) or "(no stderr)"
        return f"`{self.command}` on {self.host} exited {self.exit_code}: {tail}"


class LineChannel(ABC):
    """A running process spoken to in JSON lines."""

    host: str

    @abstractmethod
    def send(self, obj: dict) -> None: ...

    @abstractmethod
    def receive(self, timeout: float) -> dict | None:
        """The next JSON line, or None on timeout. Raises RunError when the process ended."""

    @abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Stop the process (politely for up to ``timeout`` s, then by force) and release
        the channel."""

    def ended_error(self) -> str | None:
        """Why the process is gone (a message naming the host), or None while it runs.

        Checked without reading a line: a side that died between two operations (its
        host or its SSH session went away) takes its connections with it, so a snapshot
        taken meanwhile is not of the lab the scenario built.
        """
        return None


class Runner(ABC):
    """Runs commands on one lab host."""

    host: str

    @abstractmethod
    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result: ...

    @abstractmethod
    def spawn(self, cmd: Command) -> LineChannel: ...

    def stream(self, cmd: Command) -> Iterator[str]:
        """Lines of a command's stdout as they come (default: run then split)."""
        yield from self.run(cmd).stdout.splitlines()


class _ReaderThread(threading.Thread):
    """Feeds a queue with the lines of a file object; None marks the end."""

    def __init__(self, fileobj: Any, sink: queue.Queue[str | None]) -> None:
        super().__init__(daemon=True)
        self.fileobj = fileobj
        self.sink = sink

    def run(self) -> None:
        try:
            for line in iter(self.fileobj.readline, ""):
                self.sink.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.sink.put(None)


class QueueChannel(LineChannel):
    """Shared JSON-lines logic over a queue of stdout lines."""

    def __init__(self, host: str, command: str) -> None:
        self.host = host
        self.command = command
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ended = False

    def stderr_tail(self) -> str:
        return ""

    def receive(self, timeout: float) -> dict | None:
        if self.ended:
            raise RunError(self._ended_message())
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self.ended = True
            raise RunError(self._ended_message())
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise RunError(f"{self.host}: side script printed something that is not JSON: "
                           f"{line.strip()[:200]}") from None

    def _gone(self) -> bool:
        """True once the process (or the link to it) has ended; subclasses know how."""
        return False

    def ended_error(self) -> str | None:
        return self._ended_message() if self.ended or self._gone() else None

    def _ended_message(self) -> str:
        tail = self.stderr_tail().strip().splitlines()[-3:]
        return (f"{self.host}: side process ended unexpectedly ({self.command[:80]}): "
                f"{' | '.join(tail) or 'no stderr'}")


class LocalChannel(QueueChannel):
    def __init__(self, host: str, argv: list[str]) -> None:
        super().__init__(host, shlex.join(argv))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
        )
        self.pid = self.proc.pid
        self._stderr: list[str] = []
        _ReaderThread(self.proc.stdout, self.lines).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, ""):
            self._stderr.append(line)
            del self._stderr[:-50]

    def stderr_tail(self) -> str:
        time.sleep(0.05)
        return "".join(self._stderr)

    def _gone(self) -> bool:
        return self.proc.poll() is not None

    def send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RunError(self._ended_message()) from None

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


@cache
def local_python3() -> str:
    """The interpreter ``python3`` names on this machine, resolved once.

    A version manager's shim (pyenv's ``python3`` is a shell script that runs a chain of
    others) costs ~0.3 s and a dozen processes per call on an idle machine, seconds on a
    loaded one; the lab starts python3 at every poll and checkpoint (sock_diag summaries),
    which delayed a checkpoint 3 s into a transfer over a rate-limited link by 4 to 14 s.
    The interpreter the shim picks is the one it reports as ``sys.executable``."""
    found = shutil.which("python3")
    if found is None:
        return "python3"  # the command fails as it would have, naming python3
    try:
        proc = subprocess.run([found, "-c", "import sys; print(sys.executable)"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return found
    exe = proc.stdout.strip()
    return exe if proc.returncode == 0 and os.path.isabs(exe) and os.access(exe, os.X_OK) \
        else found


class LocalRunner(Runner):
    """Runs commands on this machine, optionally behind a prefix (``ip netns exec NS``)."""

    def __init__(self, host: str, prefix: Sequence[str] = ()) -> None:
        self.host = host
        self.prefix = list(prefix)

    def _argv(self, cmd: Command) -> list[str]:
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if argv and argv[0] == "python3":  # the interpreter itself, not a shim: see above
            argv[0] = local_python3()
        return self.prefix + argv

    def run(self, cmd: Command, *, check: bool = True, timeout: float | None = 60,
            stdin: str | None = None) -> Result:
        argv = self._argv(cmd)
        trace(self.host, cmd)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=timeout)
            result = Result(render(cmd), self.host, proc.returncode, proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            result = timed_out(render(cmd), self.host, _text(exc.stdout), _text(exc.stderr),
                               timeout)
        except FileNotFoundError as exc:
            result = Result(render(cmd), self.host, 127, "", f"{exc.filename}: not found")
        return result.check() if check else result

    def spawn(self, cmd: Command) -> LocalChannel:
        trace(self.host, cmd)
        return LocalChannel(self.host, self._argv(cmd))

    def stream(self, cmd: Command) -> Iterator[str]:
        argv = self._argv(cmd)
        trace(self.host, cmd)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield from proc.stdout
        finally:
            proc.stdout.close()
            err = proc.stderr.read()
            code = proc.wait()
            if code != 0:
                raise CommandError(Result(render(cmd), self.host, code, "", err))


def timed_out(command: str, host: str, stdout: str, stderr: str,
              timeout: float | None) -> Result:
    """The Result of a command stopped by its timeout: exit 124, like timeout(1)."""
    return Result(command, host, 124, stdout, stderr + f"\ntimed out after {timeout} s")


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
