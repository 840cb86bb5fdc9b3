"""The run's logic on fake hosts (tests/unit/fakes.py): checkpoint waits, per-host
expectations, level plans, the time-wait cap, a stalled side, steps addressed to a role,
and the journal's undo order. No root, no namespaces."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.errors import RunError
from orchestrator.journal import Journal
from orchestrator.measure import probes
from orchestrator.run.checkpoint import per_host, tw_capped, unmet, wait_for
from orchestrator.run.sides import STALLED_GRACE_S, Sides
from orchestrator.run.steps import StepState, level_expect, level_plans, run_step
from orchestrator.scenario import Expect, Step

from .fakes import FakeChannel, FakeRunner, lab_host

ROLES = {"server": "server", "client": "client"}


def polled(hosts):
    return {h.name: probes.quick_summary(h) for h in hosts}


def test_checkpoint_wait_polls_until_the_states_are_reached() -> None:
    server = lab_host("server", "server", FakeRunner("server", [
        {"LISTEN": 1}, {"LISTEN": 1, "ESTAB": 400}, {"LISTEN": 1, "ESTAB": 1000}]))
    client = lab_host("client", "client", FakeRunner("client", [{"ESTAB": 1000}]))
    wanted = per_host(Expect({"server": {"ESTAB": 1000}, "client": {"ESTAB": 1000}}, {}), ROLES)
    seen: list[list[str]] = []

    def check() -> list[str]:
        seen.append(unmet(wanted, polled([server, client]), {}, ROLES, ROLES, 1000))
        return seen[-1]

    wait_for("established", check, stall=5, interval=0.01)
    assert seen == [["server: ESTAB 0 of 1,000"], ["server: ESTAB 400 of 1,000"], []]


def test_checkpoint_not_reached_names_what_is_missing() -> None:
    server = lab_host("server", "server", FakeRunner("server", [{"ESTAB": 998, "SYN-RECV": 2}]))
    wanted = per_host(Expect({"server": {"ESTAB": 1000}}, {}), ROLES)
    with pytest.raises(RunError) as err:
        wait_for("established",
                 lambda: unmet(wanted, polled([server]), {}, ROLES, ROLES, 1000),
                 stall=0.3, interval=0.05)
    assert str(err.value) == ("checkpoint established: not reached after 0 s: "
                              "server: ESTAB 998 of 1,000; server: SYN-RECV 2 of 0")


def test_queued_bytes_are_summed_over_the_hosts_of_each_role() -> None:
    quick = polled([lab_host("server", "server"), lab_host("client", "client")])
    quick["server"].sums["ESTAB"] = {"recv_q": 13 * 600}
    quick["client"].sums["ESTAB"] = {"send_q": 13 * 300}
    assert unmet({}, quick, {"client>server": 13}, ROLES, ROLES, 1000) == [
        "client->server: 11,700 bytes queued of 13,000"]
    quick["client"].sums["ESTAB"] = {"send_q": 13 * 400}
    assert unmet({}, quick, {"client>server": 13}, ROLES, ROLES, 1000) == []


def test_a_role_expectation_is_shared_among_its_hosts() -> None:
    roles = {"s": "server", "c1": "client", "c2": "client", "c3": "client", "r": "router"}
    wanted = per_host(Expect({"server": {"ESTAB": 1000}, "client": {"ESTAB": 1000}}, {}), roles)
    assert wanted == {"s": {"ESTAB": 1000}, "c1": {"ESTAB": 333}, "c2": {"ESTAB": 333},
                      "c3": {"ESTAB": 334}}  # the router is held to nothing
    # one host per role: its role's whole count, as before hosts were a list
    assert per_host(Expect({"client": {"TIME-WAIT": 7}}, {}), ROLES) == {
        "client": {"TIME-WAIT": 7}}


def test_level_plans_add_up_to_every_shard() -> None:
    plans = level_plans([[5201, 10], [5202, 7]], 3)
    assert plans == [{"5201": 3, "5202": 2}, {"5201": 4, "5202": 3}, {"5201": 3, "5202": 2}]
    assert level_plans([[5201, 10]], 0) == [{"5201": 10}]  # one level at least
    sides = Sides({"server": FakeChannel("server"), "client": FakeChannel("client")}, ROLES, 1)
    assert level_expect(sides, 6).states == {"server": {"ESTAB": 6}, "client": {"ESTAB": 6}}


def test_time_wait_cap_at_each_hosts_tcp_max_tw_buckets() -> None:
    hosts = {"client": lab_host("client", "client",
                                sysctls={"net.ipv4.tcp_max_tw_buckets": "1000"}),
             "server": lab_host("server", "server",
                                sysctls={"net.ipv4.tcp_max_tw_buckets": "262144"})}
    wanted = {"client": {"TIME-WAIT": 5000}, "server": {"TIME-WAIT": 5000}}
    capped, dropped = tw_capped(wanted, hosts)
    assert capped == {"client": {"TIME-WAIT": (1000, 1010)}, "server": {"TIME-WAIT": 5000}}
    assert dropped == {"client": 4000}
    quick = polled([lab_host("client", "client", FakeRunner("client", [{"TIME-WAIT": 1012}]))])
    assert unmet({"client": capped["client"]}, quick, {}, ROLES, ROLES, 5000) == [
        "client: TIME-WAIT 1,012 of 1,000..1,010"]


def test_a_stalled_side_fails_the_run_naming_its_host() -> None:
    sides = Sides({"server": FakeChannel("server", [{"ok": True}]),
                   "lab-c2": FakeChannel("lab-c2")},
                  {"server": "server", "lab-c2": "client"}, stall=0.6)
    with pytest.raises(RunError) as err:
        sides.do(["server", "lab-c2"], {"op": "connect"})
    assert str(err.value) == "lab-c2 (client): no answer to connect for 1 s; the side stalled"
    # at teardown the stalled side is not given the polite 10 s a live one gets
    sides.close()
    assert sides.channels["lab-c2"].close_timeout == STALLED_GRACE_S
    assert sides.channels["server"].close_timeout == 10.0


class _UI:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_a_step_goes_to_every_host_of_its_role() -> None:
    ok = {"ok": True}
    channels = {"s": FakeChannel("s", [ok]), "c1": FakeChannel("c1", [ok, ok]),
                "c2": FakeChannel("c2", [{"ok": True, "pending": 5}, ok])}
    sides = Sides(channels, {"s": "server", "c1": "client", "c2": "client"}, stall=1)
    plan = SimpleNamespace(scenario=SimpleNamespace(connections=10, bytes=13))
    ui = _UI()
    state = StepState(plan, ui, None, {}, sides, None, {}, {})  # type: ignore[arg-type]
    run_step(state, Step("send", side="client"))
    assert [c.sent for c in channels.values()] == [
        [], [{"op": "send", "bytes": 13, "background": False}],
        [{"op": "send", "bytes": 13, "background": False}]]
    assert state.unread == {"client": 13} and state.app_pending
    assert ui.notes == ["client: 5 bytes wait in the application: the kernel's buffers are full"]
    run_step(state, Step("close", side="client"))
    assert [channels[h].sent[-1]["op"] for h in ("c1", "c2")] == ["close", "close"]
    assert channels["s"].sent == [] and sides.label("c1") == "c1" and sides.label("s") == "server"


def test_journal_undo_runs_newest_first_and_keeps_going(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(tmp_path))
    journal = Journal.create("run-1")
    for name in ("netns-a", "link-a", "process-a", "netns-b"):
        journal.record(name.split("-")[0], name=name)
    undone: list[str] = []

    def undo(entry: dict) -> None:
        undone.append(entry["name"])
        if entry["name"] == "process-a":
            raise OSError("still running")

    logged: list[str] = []
    problems = journal.undo({"netns": undo, "link": undo, "process": undo}, logged.append)
    assert undone == ["netns-b", "process-a", "link-a", "netns-a"]
    assert problems == ["process process-a: still running"]
    assert logged == ["cleanup: process process-a: still running"]
    assert journal.path.exists()  # kept for `tcplab wipe` while something is left
    assert journal.undo({"netns": undone.append, "link": undone.append,
                         "process": undone.append}, logged.append) == []
    assert not journal.dir.exists()


def test_checkpoints_record_the_baseline_and_a_change_while_taken(tmp_path) -> None:
    """Checkpoints.take on fake hosts and a fake kernel (the captured 2,000-connection
    run): the baseline is a reference; a host whose states moved between the wait and the
    snapshot is said in the record, not hidden."""
    from pathlib import Path

    from orchestrator.run.checkpoint import Checkpoints

    from .fakes import FakeKernel

    data = Path(__file__).resolve().parents[1] / "data"
    netstat = "TcpExt: SyncookiesSent TCPTimeWaitOverflow\nTcpExt: 0 7\n"

    def host(name: str, states: list[dict[str, int]]):
        files = {"/proc/net/sockstat":
                 (data / f"sockstat-established-2000-{name}.txt").read_text(),
                 "/proc/net/netstat": netstat}
        return lab_host(name, name, FakeRunner(name, states, files))

    # the first reading: tw sockets an earlier run left (none), before the baseline
    hosts = {"server": host("server", [{}, {}, {}, {"ESTAB": 2000}]),
             "client": host("client", [{}, {}, {}, {"ESTAB": 2000}, {"ESTAB": 1990}])}
    kernel = FakeKernel({"/proc/slabinfo": (data / "slabinfo-baseline.txt").read_text(),
                         "/proc/meminfo": (data / "meminfo-baseline.txt").read_text()},
                        list(hosts))
    sides = Sides({h: FakeChannel(h) for h in hosts}, ROLES, stall=5)
    ui = _UI()
    cps = Checkpoints(ui, SimpleNamespace(), hosts, kernel, sides, tmp_path, 5, None)
    cps.take("baseline", Expect({}, {}), 2000)
    kernel.files = {"/proc/slabinfo": (data / "slabinfo-established-2000.txt").read_text(),
                    "/proc/meminfo": (data / "meminfo-established-2000.txt").read_text()}
    cps.take("established", Expect({"server": {"ESTAB": 2000}, "client": {"ESTAB": 2000}},
                                   {}), 2000)
    base, est = cps.records
    assert base["connections"] == 0 and "per_connection_bytes" not in base
    assert est["states"] == {"server": {"ESTAB": 2000}, "client": {"ESTAB": 1990}}
    assert est["changed_while_taken"] == ["client: ESTAB 1,990 of 2,000"]
    assert est["tw_overflow"] == {"server": 7, "client": 7}
    assert est["per_connection_bytes"]["total"] > 3000  # the captured run: both ends
    assert ui.notes[-2] == ("established: states changed while the snapshot was taken: "
                            "client: ESTAB 1,990 of 2,000")
    assert (tmp_path / "established" / "server-sockstat.txt").exists()
    assert kernel.shrunk >= 4  # before every slab reading: settle and the snapshot


def test_a_checkpoint_not_reached_says_which_step_should_have_brought_it() -> None:
    """The message names the step the model expected the states from and what the
    sockets are in instead, a count per state."""
    from orchestrator.run.checkpoint import found

    server = lab_host("server", "server", FakeRunner("server", [{"LISTEN": 1, "ESTAB": 1000}]))
    client = lab_host("client", "client", FakeRunner("client", [{"ESTAB": 990, "TIME-WAIT": 10}]))
    expect = Expect({"client": {}, "server": {"UNCONN": (0, 1000)}}, {},
                    cause="steps[3] `abort: client` (SO_LINGER 0: a reset)")
    wanted = per_host(expect, ROLES)
    quick = polled([server, client])
    with pytest.raises(RunError) as err:
        wait_for("aborted", lambda: unmet(wanted, quick, {}, ROLES, ROLES, 1000), stall=0.1,
                 interval=0.05,
                 explain=lambda: f"expected from {expect.cause}; the sockets are in "
                                 f"{found(quick, ROLES)}")
    assert str(err.value) == (
        "checkpoint aborted: not reached after 0 s: client: ESTAB 990 of 0; "
        "client: TIME-WAIT 10 of 0; server: ESTAB 1,000 of 0; expected from steps[3] "
        "`abort: client` (SO_LINGER 0: a reset); the sockets are in server: ESTAB 1,000; "
        "client: ESTAB 990, TIME-WAIT 10")
    assert found({"server": quick["server"]}, {"server": "server (ns a)"}) == \
        "server (ns a): ESTAB 1,000"
