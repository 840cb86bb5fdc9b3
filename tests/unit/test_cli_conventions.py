"""The command's conventions: --help documents every option with its default, examples and
exit codes; -v echoes lab-host commands with their host; -q silences progress; the
progress bar draws on stderr; NO_COLOR; the machine-wide lock's message and --wait."""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import time
from pathlib import Path

import pytest

from orchestrator import cli, runner
from orchestrator.errors import InputError
from orchestrator.journal import HostLock
from orchestrator.ui import UI


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"tcplab": parser, **action.choices}


@pytest.mark.parametrize("name", list(subparsers()))
def test_every_option_has_a_help_line(name: str) -> None:
    parser = subparsers()[name]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    text = parser.format_help()
    assert "exit codes:" in text and "130  interrupted by Ctrl-C" in text
    assert "143  stopped by SIGTERM" in text


def test_run_help_shows_defaults_and_examples() -> None:
    text = " ".join(subparsers()["run"].format_help().split())
    assert "--stall SECONDS seconds without progress before a side is declared stalled " \
           "(default: 30.0)" in text
    assert "--repeat K run the whole scenario this many times, fresh hosts each time " \
           "(default: 1)" in text
    assert "examples: tcplab run -s idle" in text
    assert "--wait [SECONDS]" in text and "--json" in text


def test_verbose_and_quiet_go_before_or_after_the_command() -> None:
    parse = cli.build_parser().parse_args
    assert parse(["-v", "scenarios"]).verbose and parse(["scenarios", "-v"]).verbose
    assert parse(["run", "-s", "idle", "-q"]).quiet and not parse(["scenarios"]).quiet
    assert parse(["run", "-s", "idle", "--wait"]).wait == float("inf")
    assert parse(["run", "-s", "idle", "--wait", "90"]).wait == 90.0
    assert parse(["run", "-s", "idle"]).wait is None


def test_bad_wait_is_bad_input() -> None:
    with pytest.raises(InputError, match=r"argument --wait: expected seconds >= 0, got '-1'"):
        cli.build_parser().parse_args(["run", "-s", "idle", "--wait=-1"])


def test_verbose_echoes_each_command_with_its_host() -> None:
    stream = io.StringIO()
    ui = UI(stream=stream, verbose=True)
    runner.TRACE = ui.command
    try:
        runner.LocalRunner("server").run(["echo", "hello world"])
        list(runner.LocalRunner("client").stream("echo one"))
    finally:
        runner.TRACE = None
    assert stream.getvalue().splitlines() == ["      $ [server] echo 'hello world'",
                                              "      $ [client] echo one"]


def test_quiet_prints_nothing_and_beats_verbose() -> None:
    stream = io.StringIO()
    ui = UI(stream=stream, quiet=True, verbose=True)
    ui.phase("hosts", "creating")
    ui.command("server", "ip link")
    assert stream.getvalue() == "" and not ui.verbose


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_the_ui_stream_not_stdout(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    stream = Tty()
    ui = UI(stream=stream)
    with ui.progress("connecting", 10) as ticker:
        assert ticker.bar is not None and ticker.bar.console.file is stream
        assert ticker.bar.console.no_color
        ticker.advance(10)
    assert capsys.readouterr().out == ""


def test_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert not UI.color() and UI(stream=Tty()).console().no_color
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert UI.color()


@pytest.fixture
def held_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "tcplab.lock"
    monkeypatch.setenv("TCPLAB_LOCK", str(path))
    monkeypatch.delenv("TCPLAB_LOCK_WAIT", raising=False)
    holder = HostLock("idle/default")
    holder.acquire()
    yield holder
    holder.release()


def test_lock_held_exits_2_at_once_and_names_wait(held_lock: HostLock) -> None:
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        HostLock("c2s/default").acquire()
    assert time.monotonic() - started < 0.5 and info.value.exit_code == 2
    assert str(info.value) == (
        f"another tcplab run is measuring on this machine (idle/default, pid {os.getpid()}); "
        "slab counters are machine-wide: wait for it to finish, or pass --wait [SECONDS] to "
        "queue behind it")


def test_wait_gives_up_after_its_seconds(held_lock: HostLock) -> None:
    notes: list[str] = []
    started = time.monotonic()
    with pytest.raises(InputError, match=r"\(waited 1 s\)"):
        HostLock("c2s/default", wait=1, note=notes.append).acquire()
    assert 1 <= time.monotonic() - started < 3
    assert notes == [f"waiting for the machine-wide lock (idle/default, pid {os.getpid()})"]


def test_wait_takes_the_lock_when_it_is_released(held_lock: HostLock) -> None:
    import threading

    threading.Timer(0.6, held_lock.release).start()
    waiter = HostLock("c2s/default", wait=float("inf"))
    waiter.acquire()
    try:
        fd = os.open(HostLock.path(), os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        waiter.release()


def test_verbose_traces_ssh_commands_before_connecting(tmp_path: Path) -> None:
    """ssh, vm and docker hosts run commands through SshRunner (or HostRunner, which
    adapts the command line): traced with the line actually sent, as it starts."""
    from orchestrator.backends.sshhost.transport import HostRunner, Target
    from orchestrator.errors import LabError
    from orchestrator.ssh import SshRunner

    key = tmp_path / "key"
    key.write_text("not a key")
    seen: list[tuple[str, str]] = []
    runner.TRACE = lambda host, command: seen.append((host, command))
    try:
        for r in (SshRunner("server", "127.0.0.1", str(key), port=1),
                  HostRunner("client", Target("127.0.0.1", "tcplab", 1, str(key)))):
            with pytest.raises(LabError):
                r.run(["cat", "/proc/net/sockstat"], timeout=2)
    finally:
        runner.TRACE = None
    assert seen == [("server", "cat /proc/net/sockstat"),
                    ("client", "sudo -n -- sh -c 'cat /proc/net/sockstat'")]
