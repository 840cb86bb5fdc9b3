"""The netns backend's up() and down() through recording fake runners (no root, nothing made).

The exact ``ip`` command sequence, each resource journalled before the command that
creates it, sysctls written in each namespace, and down() undoing newest first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator import hostctl
from orchestrator.backends.common import short_id
from orchestrator.backends.netns import LAB_QDISC_ARGV, NetnsBackend
from orchestrator.config import load_lab
from orchestrator.errors import RunError
from orchestrator.journal import Journal

from .fake_host import FakeHost

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "20261130-000000-idle-test"
SID = short_id(RUN_ID)
SERVER_NS, CLIENT_NS = f"tcplab-{SID}-server", f"tcplab-{SID}-client"
SYSCTLS = {"server": {"net.core.somaxconn": "4096"},
           "client": {"net.ipv4.ip_local_port_range": "1024 65535"}}


@pytest.fixture(autouse=True)
def no_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may run a program: every command goes through the fake."""
    def refuse(*args: object, **_kw: object) -> None:
        raise AssertionError(f"a program was started: {args[0] if args else '?'}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def make(tmp_path: Path, answer=None) -> tuple[NetnsBackend, FakeHost, Journal]:
    journal = Journal(RUN_ID, tmp_path / "journal")
    journal.dir.mkdir()
    fake = FakeHost(journal, answer)
    lab = load_lab(ROOT / "lab" / "default.yaml")
    backend = NetnsBackend(lab, RUN_ID, journal, ROOT, lambda _m: None,
                           runner_factory=fake.runner)
    return backend, fake, journal


def test_up_runs_the_exact_ip_sequence(tmp_path: Path) -> None:
    backend, fake, _ = make(tmp_path)
    hosts = backend.up(SYSCTLS)
    ip = [c.line for c in fake.calls if c.host == "local"]
    assert ip == [
        f"ip netns add {SERVER_NS}",
        f"ip netns add {CLIENT_NS}",
        f"ip link add tl{SID}s type veth peer name tl{SID}c",
        f"ip link set tl{SID}s netns {SERVER_NS}",
        f"ip -n {SERVER_NS} link set tl{SID}s name eth0",
        f"ip -n {SERVER_NS} addr add 198.18.0.2/24 dev eth0",
        f"ip -n {SERVER_NS} addr add fd00:198:18::2/64 dev eth0 nodad",
        f"ip -n {SERVER_NS} link set eth0 up",
        f"ip -n {SERVER_NS} link set lo up",
        f"ip link set tl{SID}c netns {CLIENT_NS}",
        f"ip -n {CLIENT_NS} link set tl{SID}c name eth0",
        f"ip -n {CLIENT_NS} addr add 198.18.0.3/24 dev eth0",
        f"ip -n {CLIENT_NS} addr add fd00:198:18::3/64 dev eth0 nodad",
        f"ip -n {CLIENT_NS} link set eth0 up",
        f"ip -n {CLIENT_NS} link set lo up",
    ]
    # each namespace: its queue, then its sysctls, every command inside the namespace
    for name, ns in (("server", SERVER_NS), ("client", CLIENT_NS)):
        mine = [c.argv for c in fake.calls if c.host == name]
        assert mine == [["ip", "netns", "exec", ns, *LAB_QDISC_ARGV],
                        ["ip", "netns", "exec", ns, *hostctl.apply_argv(SYSCTLS[name])]]
        assert hosts[name].info == {"netns": ns, "qdisc": "pfifo limit 65536"}
        assert hosts[name].sysctls == SYSCTLS[name]
    # the hosts' commands come after the whole link setup of their own namespace
    order = [c.host for c in fake.calls]
    assert order.index("server") > fake.calls.index(
        next(c for c in fake.calls if c.line == f"ip -n {SERVER_NS} link set lo up"))


def test_every_resource_is_journalled_before_it_is_made(tmp_path: Path) -> None:
    backend, fake, journal = make(tmp_path)
    backend.up(SYSCTLS)
    made = {f"ip netns add {SERVER_NS}": {"kind": "netns", "name": SERVER_NS},
            f"ip netns add {CLIENT_NS}": {"kind": "netns", "name": CLIENT_NS},
            f"ip link add tl{SID}s type veth peer name tl{SID}c": {"kind": "link",
                                                                   "name": f"tl{SID}s"}}
    for call in fake.calls:
        if call.line in made:
            assert call.journal[-1] == made[call.line], call.line
    assert journal.entries() == list(made.values())


def test_failed_ip_command_says_which_and_leaves_the_journal_for_undo(tmp_path: Path) -> None:
    def refuse_link(argv: list[str]) -> tuple[int, str, str] | None:
        if argv[:3] == ["ip", "link", "add"]:
            return 2, "", "RTNETLINK answers: File exists"
        return None

    backend, fake, journal = make(tmp_path, refuse_link)
    with pytest.raises(RunError) as err:
        backend.up(SYSCTLS)
    assert str(err.value) == (f"`ip link add tl{SID}s type veth peer name tl{SID}c` failed: "
                              "RTNETLINK answers: File exists")
    assert [e["kind"] for e in journal.entries()] == ["netns", "netns", "link"]
    assert fake.lines()[-1].startswith("ip link add")  # nothing ran after the failure


def test_down_undoes_newest_first_and_removes_the_journal(tmp_path: Path) -> None:
    backend, _, journal = make(tmp_path)
    backend.up(SYSCTLS)
    undone: list[tuple[str, str]] = []

    def record(entry: dict) -> None:
        undone.append((entry["kind"], entry["name"]))

    backend.undo_handlers = lambda: {"netns": record, "link": record}  # type: ignore[method-assign]
    assert backend.down() == []
    assert undone == [("link", f"tl{SID}s"), ("netns", CLIENT_NS), ("netns", SERVER_NS)]
    assert not journal.dir.exists()


def test_down_with_the_real_handlers_touches_nothing_that_was_never_made(
        tmp_path: Path) -> None:
    """The backend's own undo handlers check that a namespace or link exists first."""
    backend, _, journal = make(tmp_path)
    backend.up(SYSCTLS)
    assert backend.down() == []
    assert not journal.dir.exists()
