"""SshRunner against a real sshd started here, on 127.0.0.1 (no container needed).

The sshd runs in a private mount namespace with a tmpfs on /run (its privilege
separation directory /run/sshd need not exist on this machine, and nothing is left
behind). Needs root, /usr/sbin/sshd and unshare; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import CommandError, RunError
from orchestrator.ssh import SshRunner

SSHD = "/usr/sbin/sshd"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("unshare") is None
    or shutil.which("ssh-keygen") is None or shutil.which("setpriv") is None,
    reason="needs root, openssh-server (/usr/sbin/sshd), ssh-keygen, unshare and setpriv")

ECHO_JSON = ("import json, sys\n"
             "for line in sys.stdin:\n"
             "    msg = json.loads(line)\n"
             "    print(json.dumps({'echo': msg}), flush=True)\n"
             "print(json.dumps({'bye': True}), flush=True)\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = _free_port()
        self.client_key = _keygen(directory / "client")
        host_key = _keygen(directory / "host")
        (directory / "authorized_keys").write_text((directory / "client.pub").read_text())
        (directory / "authorized_keys").chmod(0o600)
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\nPidFile none\n"
            "MaxSessions 64\n")
        script = ("mount -t tmpfs tcplab-test /run && mkdir -m 0755 /run/sshd && "
                  f"exec {SSHD} -D -e -f {config}")
        # setpriv --pdeathsig: the test sshd gets SIGTERM if this test process dies before
        # its teardown ran (it then leaves nothing behind either).
        self.proc = subprocess.Popen(["setpriv", "--pdeathsig", "TERM", "unshare", "--mount",
                                      "--propagation", "private", "--", "sh", "-c", script],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    pytest.skip(f"could not start a test sshd: {err.strip()[-300:]}")
                time.sleep(0.05)

    def runner(self, **kw: object) -> SshRunner:
        return SshRunner("testhost", "127.0.0.1", str(self.client_key), port=self.port, **kw)

    def sessions(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listener)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def runner(sshd: Sshd) -> Iterator[SshRunner]:
    r = sshd.runner()
    r.wait_ready(timeout=10)
    yield r
    r.close()


def test_run_gives_the_local_result_shape(runner: SshRunner) -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.host, result.exit_code) == ("testhost", 3)
    assert result.stdout == "out\n" and result.stderr == "err\n"
    assert result.command == "sh -c 'echo out; echo err >&2; exit 3'"
    with pytest.raises(CommandError) as failed:
        runner.run(["sh", "-c", "echo boom >&2; exit 4"])
    assert "on testhost exited 4" in str(failed.value) and "boom" in str(failed.value)
    assert runner.run(["true"]).ok


def test_argv_is_quoted_and_stdin_passed(runner: SshRunner) -> None:
    out = runner.run(["printf", "%s|", "a b", "c'd", "$HOME", "*"]).stdout
    assert out == "a b|c'd|$HOME|*|"
    assert runner.run(["cat"], stdin="line 1\nline 2\n").stdout == "line 1\nline 2\n"
    assert runner.run("echo $((6 * 7))").stdout == "42\n"  # a string goes to the shell


def test_timeout_gives_exit_124(runner: SshRunner) -> None:
    result = runner.run(["sleep", "5"], timeout=1, check=False)
    assert result.exit_code == 124 and "timed out" in result.stderr


def test_stream_yields_lines_as_they_come(runner: SshRunner) -> None:
    lines = runner.stream(["sh", "-c", "echo first; sleep 2; echo second"])
    start = time.monotonic()
    assert next(lines) == "first\n"
    assert time.monotonic() - start < 1.5  # not buffered until the command ended
    assert list(lines) == ["second\n"]
    many = sum(1 for _ in runner.stream(["seq", "1", "50000"]))
    assert many == 50000
    with pytest.raises(CommandError) as failed:
        list(runner.stream(["sh", "-c", "echo x; echo bad >&2; exit 2"]))
    assert "exited 2" in str(failed.value) and "bad" in str(failed.value)


def test_stream_stopped_early_releases_the_channel(runner: SshRunner) -> None:
    lines = runner.stream(["seq", "1", "1000000"])
    assert next(lines) == "1\n"
    lines.close()
    assert runner.run(["echo", "still fine"]).stdout == "still fine\n"


def test_spawn_speaks_json_lines_and_close_sends_eof(runner: SshRunner) -> None:
    channel = runner.spawn(["python3", "-c", ECHO_JSON])
    channel.send({"op": "ping", "n": 1})
    assert channel.receive(timeout=10) == {"echo": {"op": "ping", "n": 1}}
    assert channel.receive(timeout=0.1) is None  # nothing more yet
    channel.close()
    assert channel.exit_code == 0  # it saw EOF on stdin and ended by itself


def test_side_that_dies_names_the_host(runner: SshRunner) -> None:
    code = "import sys; print('oops', file=sys.stderr); sys.exit(5)"
    channel = runner.spawn(["python3", "-c", code])
    with pytest.raises(RunError) as ended:
        receive_until_error(channel)
    assert "testhost" in str(ended.value) and "code 5" in str(ended.value)
    assert "oops" in str(ended.value)
    channel.close()


def receive_until_error(channel: object, timeout: float = 15.0) -> None:
    """Receive until RunError (raised through); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        channel.receive(timeout=0.5)
    pytest.fail(f"no RunError within {timeout} s")


def test_dropped_connection_raises_run_error(sshd: Sshd) -> None:
    before = set(sshd.sessions())
    r = sshd.runner()
    r.wait_ready(timeout=10)
    try:
        channel = r.spawn(["python3", "-c", ECHO_JSON])
        channel.send({"op": "ping"})
        assert channel.receive(timeout=10) == {"echo": {"op": "ping"}}
        mine = [pid for pid in sshd.sessions() if pid not in before]
        assert len(mine) == 1, (before, mine)  # the sshd process of this runner's connection
        os.kill(mine[0], signal.SIGKILL)
        with pytest.raises(RunError) as dropped:
            receive_until_error(channel)
        assert "testhost" in str(dropped.value) and "dropped" in str(dropped.value)
        with pytest.raises(RunError):
            channel.send({"op": "ping"})
        channel.close()
        # the runner connects again for the next command
        assert r.run(["echo", "back"]).stdout == "back\n"
    finally:
        r.close()


def test_no_login_no_host_key_file(sshd: Sshd, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "other")
    r = SshRunner("testhost", "127.0.0.1", str(other), port=sshd.port, connect_timeout=5)
    with pytest.raises(RunError) as refused:
        r.connect()
    assert "testhost" in str(refused.value) and "cannot log in" in str(refused.value)
    good = sshd.runner()
    good.connect()
    try:
        client = good.connection.client
        assert client._host_keys_filename is None  # nothing read from or saved to known_hosts
        assert len(client.get_host_keys()) == 1  # accepted for this run, in memory only
    finally:
        good.close()


def test_custom_transport(sshd: Sshd) -> None:
    opened = []

    def factory() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", sshd.port), timeout=5)
        opened.append(sock)
        return sock

    r = sshd.runner(sock_factory=factory)
    try:
        assert r.run(["echo", "via factory"]).stdout == "via factory\n"
        assert len(opened) == 1
    finally:
        r.close()


def test_unreachable_host_is_a_run_error(tmp_path: Path) -> None:
    key = _keygen(tmp_path / "k")
    r = SshRunner("nohost", "127.0.0.1", str(key), port=_free_port(), connect_timeout=2)
    with pytest.raises(RunError) as failed:
        r.run(["true"])
    assert "nohost" in str(failed.value)
